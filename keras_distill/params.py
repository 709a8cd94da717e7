"""The rules of the Distiller's schedulable parameters, in one place.

Every value of `alpha`, `temperature` and `hint_weight` (and any parameter
declared here later) is checked by `check()`: in the `Distiller`'s
constructor and property setters, by `ParameterScheduler`, the progressive
recipe's stages, the tuner's search ranges, the YAML config and the loss
classes. Values are checked as they will be stored: a float32
`keras.Variable`, so a number that would become `0`, a subnormal or `inf`
in float32 is refused as well. Adding a parameter is one line in `SPECS`.
A parameter may also declare a `usual` range (the temperature's is
[0.01, 1000], where softmax(z / T) stays sound in float32): a legal value
outside it is warned about, and the step's NaN-loss message names it.

The variables that hold these parameters are `ParameterVariable`s
(`variable()`), which apply the same rule to every assignment: a user's
direct `distiller.temperature.assign(0.0)`, `set_weights()` and loading
weights fail at once with the parameter's name and value, not at some later
step, and the training step itself spends no op on them.

Example:

```python
from keras_distill import params

params.check("alpha", 0.3)          # 0.3
params.check("temperature", -1.0)   # ValueError: `temperature` must be > 0 ...
temperature = params.variable("temperature", 4.0)
temperature.assign(0.0)             # ValueError: `temperature` must be > 0 ...
```
"""

import dataclasses
import math
import warnings

import numpy as np

_F32 = np.finfo(np.float32)
_F32_MAX, _F32_TINY = float(_F32.max), float(_F32.tiny)


def to_float(value, name: str, where: str | None = None) -> float:
    """`value` as a Python float, or a `ValueError` naming `name` and `value`.

    Accepts Python and NumPy numbers and 0-d arrays or tensors; refuses
    strings, booleans, `None` and arrays with more than one element.

    Args:
        name: The parameter's name, quoted in the error.
        where: Optional context quoted in the error (e.g. `"epoch 3"`).
    """
    context = f" at {where}" if where else ""
    if isinstance(value, bool | str | bytes) or value is None:
        number = None
    else:
        try:
            array = np.asarray(value)
            number = float(array) if array.size == 1 else None
        except (TypeError, ValueError):
            number = None
    if number is None:
        raise ValueError(
            f"`{name}` must be a number. Received: {name}={value!r} "
            f"of type {type(value).__name__}{context}"
        )
    return number


def check_finite(value, name: str, where: str | None = None) -> float:
    """`value` as a float if it is finite in float32, else a `ValueError`."""
    number = to_float(value, name, where)
    context = f" at {where}" if where else ""
    if not math.isfinite(number):
        raise ValueError(
            f"`{name}` must be a finite number. Received: {name}={value!r}{context}"
        )
    if abs(number) > _F32_MAX:
        raise ValueError(
            f"`{name}` must fit in float32 (|value| <= {_F32_MAX:.4g}); it would "
            f"be stored as inf. Received: {name}={value!r}{context}"
        )
    return number


def check_positive(value, name: str) -> float:
    """`value` as a float if it is finite and > 0 (e.g. a learning rate)."""
    number = check_finite(value, name)
    if not number > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Param:
    """The rule of one scalar parameter.

    Attributes:
        name: The attribute name on the `Distiller` (and the log key).
        default: The constructor's default.
        low: Lower bound, or `None`.
        high: Upper bound, or `None`.
        low_open: Whether `low` itself is excluded (`> low` rather than
            `>= low`).
        meaning: What the parameter does, quoted in errors.
    """

    name: str
    default: float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    meaning: str = ""
    # How a user sets it, quoted when a direct `assign` broke the rule.
    setter: str = ""
    # `(low, high)`: the range where the parameter's arithmetic stays sound
    # in float32; a value outside it is legal but warned about (see
    # `USUAL_RANGE_WHY`), and named when the step's loss becomes NaN.
    usual: tuple | None = None

    @property
    def rule(self) -> str:
        """The rule in words, e.g. `"in [0, 1]"` or `"> 0"`."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            return f"in {left}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"<= {self.high:g}"
        return "finite"

    def contains(self, number: float) -> bool:
        if self.low is not None:
            if number < self.low or (self.low_open and number == self.low):
                return False
        return self.high is None or number <= self.high

    def check(self, value, where: str | None = None, warn: bool = True) -> float:
        """`value` as a float if it satisfies the rule, else a `ValueError`.

        With `warn`, a value outside the usual range gives a `UserWarning`.
        """
        number = check_finite(value, self.name, where)
        context = f" at {where}" if where else ""
        meaning = f" ({self.meaning})" if self.meaning else ""
        if not self.contains(number):
            raise ValueError(
                f"`{self.name}` must be {self.rule}{meaning}. "
                f"Received: {self.name}={value!r}{context}"
            )
        if number != 0.0 and abs(number) < _F32_TINY:
            raise ValueError(
                f"`{self.name}` must be {self.rule} and representable in float32 "
                f"(|value| >= {_F32_TINY:.4g}); it would be stored as "
                f"{float(np.float32(number))!r}. Received: {self.name}={value!r}"
                f"{context}"
            )
        usual = self.usual
        if warn and usual is not None and not usual[0] <= number <= usual[1]:
            warnings.warn(
                f"`{self.name}`={value!r}{context} is outside "
                f"[{usual[0]:g}, {usual[1]:g}], {USUAL_RANGE_WHY[self.name]}",
                UserWarning,
                stacklevel=3,
            )
        return number


# Why a value outside a parameter's `usual` range is suspect.
USUAL_RANGE_WHY = {
    "temperature": (
        "where the KD term is sound in float32: far above it the softened "
        "distributions are uniform and the term is 0; far below it the term "
        "shrinks with T (T^2 times a KL divergence that grows like 1 / T) and "
        "is 0 in float32 below about 1e-19. Either way the student learns "
        "nothing from the teacher. Typical values are 1 to 20."
    ),
}


# name -> rule. Adding a schedulable parameter is one line here.
SPECS = {
    spec.name: spec
    for spec in (
        Param("alpha", 0.1, 0.0, 1.0, meaning="the weight of the hard-label loss"),
        Param(
            "temperature",
            4.0,
            0.0,
            low_open=True,
            meaning="the KD temperature",
            usual=(0.01, 1000.0),
        ),
        Param("hint_weight", 1.0, 0.0, meaning="the multiplier of the hint terms"),
    )
}

# Families of parameters that the distillation terms create, by the suffix of
# their name: a distiller with terms "kd" and "dkd" and
# `distillation_loss_weights` holds `kd_weight` and `dkd_weight`; a CTKD term
# named "ctkd" holds `ctkd_reversal`.
FAMILIES = {
    "_weight": Param(
        "<term>_weight",
        1.0,
        0.0,
        meaning="the weight of a distillation term",
        setter="`distiller.distillation_loss_weights = [...]` or a "
        "`ParameterScheduler`",
    ),
    "_reversal": Param(
        "<term>_reversal",
        0.0,
        0.0,
        meaning="the strength of CTKD's gradient reversal",
        setter="a `ParameterScheduler`",
    ),
}


def term_weight_name(term_name: str) -> str:
    """The name of the weight variable of the distillation term `term_name`."""
    return f"{term_name}_weight"


def spec(name: str) -> Param | None:
    """The rule of parameter `name`: declared in `SPECS`, or of a family."""
    if name in SPECS:
        return SPECS[name]
    for suffix, family in FAMILIES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return dataclasses.replace(family, name=name)
    return None


def check(name: str, value, where: str | None = None, warn: bool = True) -> float:
    """Checks `value` for parameter `name` (declared in `SPECS` or `FAMILIES`).

    A name that is not declared only has to be a finite float32 number.
    `warn=False` leaves the warning about an unusual value to a later check
    of the same value (the variable that stores it), so it is given once.

    Returns:
        `value` as a Python float.

    Raises:
        ValueError: naming the parameter, the value, the rule and `where`.
    """
    rule = spec(name)
    if rule is None:
        return check_finite(value, name, where)
    return rule.check(value, where, warn)


def check_range(name: str, low, high, where: str) -> tuple:
    """Checks both ends of a search range (`low <= high`) for parameter `name`."""
    low, high = check(name, low, where), check(name, high, where)
    if low > high:
        raise ValueError(
            f"The range of `{name}` in {where} must have low <= high. "
            f"Received: ({low!r}, {high!r})"
        )
    return low, high


def _float32_bounds(spec: Param) -> tuple:
    """`(low, high)` such that a float32 value obeys `spec` iff low <= v <= high.

    An open lower bound becomes the next float32 above it (the smallest
    normal number above 0, as `check()` also refuses subnormals); a missing
    bound becomes the float32 limit, so `inf` is refused. NaN fails both
    comparisons.
    """
    low = -_F32_MAX if spec.low is None else spec.low
    if spec.low_open:
        low = _F32_TINY if low == 0.0 else float(np.nextafter(np.float32(low), 1))
    high = _F32_MAX if spec.high is None else spec.high
    return low, high


def variable(name: str, value, where: str | None = None):
    """A float32 non-trainable `ParameterVariable` holding parameter `name`.

    `value` is checked first (as `check()` does). Every later assignment is
    checked the same way.

    Example:

    ```python
    alpha = params.variable("alpha", 0.1)
    alpha.assign(0.5)     # fine
    alpha.assign(5.0)     # ValueError: `alpha` must be in [0, 1] ...
    ```
    """
    import keras

    _spec_of_variable(name).check(value, where)
    return _variable_class(keras)(value, name=name)


_CLASS = []


def _variable_class(keras):
    """The `ParameterVariable` class, made once (it subclasses the backend's)."""
    if _CLASS:
        return _CLASS[0]

    class ParameterVariable(keras.Variable):
        """A scalar `keras.Variable` whose every assignment obeys its rule.

        Values from Python, NumPy or eager tensors are checked before they
        are stored, with the `ValueError` of `check()` (naming the parameter,
        the value and the rule). A value computed inside a traced function
        (a user's own `tf.function`) is checked in the graph, by an assertion
        that runs before the assignment.
        """

        def __init__(self, value, name):
            super().__init__(value, dtype="float32", trainable=False, name=name)
            self.parameter = name

        def assign(self, value):
            return super().assign(self._checked(value, "an assignment"))

        def assign_add(self, delta):
            return self.assign(self._sum(delta, 1.0))

        def assign_sub(self, delta):
            return self.assign(self._sum(delta, -1.0))

        def _restore_from_tensors(self, restored_tensors):
            # `tf.train.Checkpoint` restores through here, not `assign`.
            key = next(iter(restored_tensors))
            checked = dict(restored_tensors)
            checked[key] = self._checked(restored_tensors[key], "a checkpoint restore")
            return super()._restore_from_tensors(checked)

        def _sum(self, delta, sign):
            if _is_symbolic(delta):
                import tensorflow as tf

                return tf.cast(self.value, "float32") + sign * tf.cast(delta, "float32")
            number = to_float(delta, self.parameter)
            return float(np.asarray(self.numpy())) + sign * number

        def _checked(self, value, where):
            if _is_symbolic(value):
                return _graph_checked(self.parameter, value)
            number = to_float(value, self.parameter, f"{where} to it")
            check(self.parameter, number, f"{where} to `{self.parameter}`")
            return value

    _CLASS.append(ParameterVariable)
    return ParameterVariable


def _is_symbolic(value) -> bool:
    """Whether `value` has no concrete value yet (inside a traced function).

    A graph tensor, but also a variable read inside a traced function (a
    `tf.Variable` or `keras.Variable`, which have a `numpy` method that only
    works eagerly).
    """
    try:
        import tensorflow as tf
    except ImportError:  # other backends: values are concrete
        return False
    if not tf.is_tensor(value) and not isinstance(value, tf.Variable):
        return False
    return not hasattr(value, "numpy") or not tf.executing_eagerly()


def _graph_checked(name: str, value):
    """`value` (a graph tensor) behind an assertion of parameter `name`'s rule."""
    import tensorflow as tf

    from keras_distill import checks

    rule = _spec_of_variable(name)
    low, high = _float32_bounds(rule)
    number = tf.cast(value, "float32")
    ok = tf.logical_and(number >= low, number <= high)
    setter = rule.setter or f"`distiller.{name} = value` or a `ParameterScheduler`"
    text = (
        f"`{name}` must be {rule.rule} ({rule.meaning}); a traced function "
        f"assigned {{}} to it. Set it with {setter}."
    )
    passed = checks.graph_assert(ok, lambda: checks.format_message(text, number))
    with tf.control_dependencies([passed]):
        return tf.identity(value)


def unusual_note(variables: dict) -> str:
    """A note naming the parameters outside their `usual` range, or "".

    For the message of a failed step: a NaN loss at `temperature=1e-30` is
    the parameter's doing, not the inputs'.

    Example:

    ```pycon
    >>> unusual_note({"temperature": 1e-30}).startswith("`temperature` holds")
    True

    ```
    """
    parts = []
    for name, variable in variables.items():
        rule = spec(name)
        if rule is None or rule.usual is None:
            continue
        value = float(np.asarray(variable))
        low, high = rule.usual
        if not low <= value <= high:
            parts.append(
                f"`{name}` holds {value:g}, outside [{low:g}, {high:g}], "
                f"{USUAL_RANGE_WHY[name]} It is the likely cause: set `{name}` "
                "within that range."
            )
    return " ".join(parts)


def _spec_of_variable(name):
    rule = spec(name)
    if rule is None:
        raise ValueError(f"No rule is declared for the parameter {name!r}.")
    return rule
