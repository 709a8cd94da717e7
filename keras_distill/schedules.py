"""Schedules: small, pure, composable functions of the epoch or step.

A schedule maps an epoch (or step) number to a value, e.g. the distillation
temperature or the weight `alpha` of the hard-label loss. Schedules are pure
(no hidden state, so resuming at epoch `k` gives the value of epoch `k`),
compose with `join`, and serialize with `get_config` so that callbacks
holding them can be saved.

A schedule called with a Python or NumPy number returns a Python float
(computed in float64); called with a tensor (also inside `tf.function`) it
returns a float32 tensor of the same shape. Both go through the same
`keras.ops` code.

Example:

```python
import keras_distill as kd

temperature = kd.schedules.linear(8.0, 2.0, 9)  # 8 at epoch 0 -> 2 at epoch 9
temperature(0), temperature(5), temperature(20)  # (8.0, 5.0, 2.0)
alpha = kd.schedules.join(
    [kd.schedules.constant(0.1), kd.schedules.cosine(0.1, 0.9, 5)],
    boundaries=[3],
)
```
"""

import math

import keras
import numpy as np
from keras import ops

from keras_distill import params as kd_params


def number(value, name: str) -> float:
    """Returns `value` as a finite float, else raises ValueError."""
    return kd_params.check_finite(value, name)


def whole_number(value, name: str) -> int:
    """Returns `value` as an int >= 0, else raises ValueError."""
    if isinstance(value, bool) or not float(number(value, name)).is_integer():
        raise ValueError(
            f"`{name}` must be a whole number >= 0. Received: {name}={value!r}"
        )
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value!r}")
    return int(value)


def _boundaries(values, name: str = "boundaries") -> list:
    """Returns `values` as a non-decreasing list of ints >= 0."""
    boundaries = [whole_number(b, f"{name}[{i}]") for i, b in enumerate(values)]
    for i in range(1, len(boundaries)):
        if boundaries[i] < boundaries[i - 1]:
            raise ValueError(
                f"`{name}` must be non-decreasing. Received: {name}={list(values)!r}"
            )
    return boundaries


def _pieces(count: int, boundaries, what: str) -> list:
    """Checks that `count` pieces fit `boundaries`; returns the boundaries."""
    checked = _boundaries(boundaries)
    if count != len(checked) + 1:
        raise ValueError(
            f"{what} needs one more entry than `boundaries`. Received: "
            f"{count} entries and boundaries={list(boundaries)!r} "
            f"({len(checked)} entries)"
        )
    return checked


def _is_tensor(value) -> bool:
    return ops.is_tensor(value) or isinstance(value, keras.Variable)


class Schedule:
    """Base class of schedules: a pure function of the step or epoch.

    Subclasses implement `value(t)` with `keras.ops` on a float tensor
    and keep every `__init__` argument for `get_config`.
    """

    def __call__(self, t):
        """The value at epoch or step `t` (a float for numbers, else a tensor)."""
        if _is_tensor(t):
            return self.value(ops.cast(t, "float32"))
        value = self.value(ops.convert_to_tensor(np.asarray(t, "float64")))
        value = np.asarray(ops.convert_to_numpy(value), dtype="float64")
        return float(value) if value.ndim == 0 else value

    def value(self, t):
        """The schedule at a float tensor `t` (elementwise, same dtype)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None


def as_schedule(value, name: str = "schedule") -> Schedule:
    """Returns `value` as a `Schedule`: numbers become `constant(value)`."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return constant(value)
    raise TypeError(
        f"`{name}` must be a number or a `keras_distill.schedules.Schedule`. "
        f"Received: {name}={value!r} of type {type(value).__name__}"
    )


def interpolation(t, transition_steps: int, transition_begin: int):
    """Fraction of a transition done at `t`, in [0, 1].

    A zero-length transition is a jump at `transition_begin`.
    """
    elapsed = t - float(transition_begin)
    if transition_steps == 0:
        return ops.cast(elapsed >= 0.0, t.dtype)
    return ops.clip(elapsed / float(transition_steps), 0.0, 1.0)


@keras.saving.register_keras_serializable(package="keras_distill")
class Constant(Schedule):
    """The same value at every step. See `constant`."""

    def __init__(self, value):
        self.value_ = number(value, "value")

    def value(self, t):
        return ops.full_like(t, self.value_)

    def get_config(self):
        return {"value": self.value_}


@keras.saving.register_keras_serializable(package="keras_distill")
class Linear(Schedule):
    """Linear interpolation between two values. See `linear`."""

    def __init__(self, init_value, end_value, transition_steps, transition_begin=0):
        self.init_value = number(init_value, "init_value")
        self.end_value = number(end_value, "end_value")
        self.transition_steps = whole_number(transition_steps, "transition_steps")
        self.transition_begin = whole_number(transition_begin, "transition_begin")

    def value(self, t):
        done = interpolation(t, self.transition_steps, self.transition_begin)
        return self.init_value + (self.end_value - self.init_value) * done

    def get_config(self):
        return {
            "init_value": self.init_value,
            "end_value": self.end_value,
            "transition_steps": self.transition_steps,
            "transition_begin": self.transition_begin,
        }


@keras.saving.register_keras_serializable(package="keras_distill")
class Cosine(Linear):
    """Half-cosine interpolation between two values. See `cosine`."""

    def value(self, t):
        done = interpolation(t, self.transition_steps, self.transition_begin)
        remaining = 0.5 * (1.0 + ops.cos(math.pi * done))
        return self.end_value + (self.init_value - self.end_value) * remaining


@keras.saving.register_keras_serializable(package="keras_distill")
class Exponential(Linear):
    """Geometric interpolation between two values. See `exponential`."""

    def __init__(self, init_value, end_value, transition_steps, transition_begin=0):
        super().__init__(init_value, end_value, transition_steps, transition_begin)
        if self.init_value * self.end_value <= 0:
            raise ValueError(
                "`exponential` needs `init_value` and `end_value` non-zero and of "
                f"the same sign. Received: init_value={init_value!r}, "
                f"end_value={end_value!r}"
            )

    def value(self, t):
        done = interpolation(t, self.transition_steps, self.transition_begin)
        ratio = self.end_value / self.init_value
        value = self.init_value * ops.power(ratio, done)
        # Return the end points exactly (pow may be off by one ulp).
        value = ops.where(done >= 1.0, self.end_value, value)
        return ops.where(done <= 0.0, self.init_value, value)


@keras.saving.register_keras_serializable(package="keras_distill")
class PiecewiseConstant(Schedule):
    """Constant pieces changing at boundaries. See `step`."""

    def __init__(self, boundaries, values):
        self.values = [number(v, f"values[{i}]") for i, v in enumerate(values)]
        self.boundaries = _pieces(len(self.values), boundaries, "`values`")

    def value(self, t):
        values = ops.convert_to_tensor(np.asarray(self.values), dtype=t.dtype)
        index = ops.zeros_like(t, dtype="int32")
        for boundary in self.boundaries:
            index = index + ops.cast(t >= float(boundary), "int32")
        return ops.take(values, index)

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


@keras.saving.register_keras_serializable(package="keras_distill")
class Join(Schedule):
    """Schedules run one after another. See `join`."""

    def __init__(self, schedules, boundaries):
        schedules = list(schedules)
        self.schedules = [
            as_schedule(s, f"schedules[{i}]") for i, s in enumerate(schedules)
        ]
        self.boundaries = _pieces(len(self.schedules), boundaries, "`schedules`")

    def value(self, t):
        result = self.schedules[0].value(t)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:], strict=True):
            later = schedule.value(t - float(boundary))
            result = ops.where(t >= float(boundary), later, result)
        return result

    def get_config(self):
        return {
            "schedules": [
                keras.saving.serialize_keras_object(s) for s in self.schedules
            ],
            "boundaries": list(self.boundaries),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedules"] = [
            keras.saving.deserialize_keras_object(s) for s in config["schedules"]
        ]
        return cls(**config)


def constant(value: float) -> Constant:
    """A schedule with the same value at every step.

    Args:
        value: The value.

    Example:

    ```pycon
    >>> constant(4.0)(7)
    4.0

    ```
    """
    return Constant(value)


def linear(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Linear:
    """Linear interpolation from `init_value` to `end_value`.

    The value is `init_value` up to `transition_begin`, moves linearly to
    `end_value` over `transition_steps` steps, then stays at `end_value`. With
    `transition_steps=0` it jumps to `end_value` at `transition_begin`.

    Args:
        init_value: Value at the start.
        end_value: Value at the end and after.
        transition_steps: Length of the transition, an int >= 0.
        transition_begin: Step at which the transition starts. Defaults to `0`.

    Example:

    ```pycon
    >>> schedule = linear(8.0, 2.0, 10)  # 8 at step 0 -> 2 at step 10
    >>> schedule(0), schedule(5), schedule(10), schedule(99)
    (8.0, 5.0, 2.0, 2.0)

    ```
    """
    return Linear(init_value, end_value, transition_steps, transition_begin)


def cosine(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Cosine:
    """Half-cosine interpolation from `init_value` to `end_value`.

    `end + (init - end) * (1 + cos(pi * t)) / 2` with `t` the fraction of the
    transition done: flat at both ends, steepest in the middle (the shape of
    Loshchilov and Hutter's SGDR, https://arxiv.org/abs/1608.03983). Works in
    both directions; a zero-length transition is a jump.

    Args:
        init_value: Value at the start.
        end_value: Value at the end and after.
        transition_steps: Length of the transition, an int >= 0.
        transition_begin: Step at which the transition starts. Defaults to `0`.

    Example:

    ```pycon
    >>> schedule = cosine(0.1, 0.9, 10)
    >>> round(schedule(5), 6), schedule(10)
    (0.5, 0.9)

    ```
    """
    return Cosine(init_value, end_value, transition_steps, transition_begin)


def exponential(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Exponential:
    """Geometric interpolation from `init_value` to `end_value`.

    `init * (end / init) ** t` with `t` the fraction of the transition done:
    each step multiplies the value by the same factor. Both values must be
    non-zero and of the same sign. A zero-length transition is a jump.

    Args:
        init_value: Value at the start.
        end_value: Value at the end and after.
        transition_steps: Length of the transition, an int >= 0.
        transition_begin: Step at which the transition starts. Defaults to `0`.

    Example:

    ```pycon
    >>> schedule = exponential(8.0, 1.0, 3)  # 8, 4, 2, 1
    >>> schedule(1), schedule(2)
    (4.0, 2.0)

    ```
    """
    return Exponential(init_value, end_value, transition_steps, transition_begin)


def step(boundaries, values) -> PiecewiseConstant:
    """A piecewise-constant schedule.

    The value is `values[i]` where `i` is the number of boundaries `<= step`.
    Repeated boundaries make zero-length pieces (skipped).

    Args:
        boundaries: Non-decreasing ints >= 0 where the value changes.
        values: One more value than boundaries.

    Example:

    ```pycon
    >>> schedule = step([2, 5], [1.0, 0.5, 0.1])
    >>> schedule(1), schedule(2), schedule(5)
    (1.0, 0.5, 0.1)

    ```
    """
    return PiecewiseConstant(boundaries, values)


def join(schedules, boundaries) -> Join:
    """Runs schedules one after another (like `optax.join_schedules`).

    Schedule `i` runs from `boundaries[i - 1]` (or 0) to `boundaries[i]`,
    and sees the step counted from its own start. Numbers are taken as
    constants.

    Args:
        schedules: A list of `Schedule`s or numbers.
        boundaries: Non-decreasing ints >= 0, one fewer than `schedules`.

    Example:

    ```pycon
    >>> schedule = join([linear(8.0, 4.0, 4), 4.0, linear(4.0, 1.0, 3)], [4, 6])
    >>> schedule(2), schedule(5), schedule(7)
    (6.0, 4.0, 3.0)

    ```
    """
    return Join(schedules, boundaries)


# How many leading steps `check_points` lists for a schedule whose shape it
# does not know (a callable, a user's `Schedule` subclass).
CHECKED_AHEAD = 10_000


def check_points(schedule, count: int) -> list:
    """The steps in `[0, count)` where `schedule` takes its extreme values.

    What a check before training needs instead of every step (a run of
    `10**12` epochs, stopped by `EarlyStopping`, is a usual pattern): the
    built-in schedules are monotone between their breakpoints, so their
    values over the run lie between those at the breakpoints and the ends.
    For any other callable, the first `CHECKED_AHEAD` steps and the last
    (the rest is checked as it is used).

    Args:
        schedule: A `Schedule` or a callable of the step.
        count: The number of steps (or epochs) of the run.

    Returns:
        Sorted, distinct ints in `[0, count)` (empty when `count` is 0).
    """
    count = int(count or 0)
    if count <= 0:
        return []
    points = {0, count - 1} | _breakpoints(schedule, count)
    return sorted(p for p in points if 0 <= p < count)


def check_over(schedule, count: int, check) -> None:
    """Runs `check(step)` where `schedule` can first go wrong in `[0, count)`.

    `check` raises `ValueError` for a bad value (it computes the value
    itself). It runs at `check_points`; when one fails, the steps between it
    and the last good point (where the schedule is monotone, so the good
    ones form a prefix) are searched by bisection, and the error is the one
    of the first bad step: `linear(2.0, -2.0, 4)` as a temperature fails at
    step 2 (value 0.0), not at the end (-2.0).

    Args:
        schedule: A `Schedule` or a callable of the step.
        count: The number of steps (or epochs) of the run.
        check: A function of the step that raises `ValueError` when the
            schedule's value there is not allowed.
    """
    good = -1
    for point in check_points(schedule, count):
        try:
            check(point)
        except ValueError:
            bad = point
            while bad - good > 1:  # invariant: good passes (or is -1), bad fails
                middle = (good + bad) // 2
                try:
                    check(middle)
                    good = middle
                except ValueError:
                    bad = middle
            check(bad)  # raises the first bad step's error
            raise
        good = point


def _breakpoints(schedule, count: int) -> set:
    if isinstance(schedule, Constant):
        return {0}
    if isinstance(schedule, Linear):  # Cosine, Exponential and subclasses too
        begin = schedule.transition_begin
        end = begin + schedule.transition_steps
        return {begin - 1, begin, end - 1, end}
    if isinstance(schedule, PiecewiseConstant):
        boundaries = set(schedule.boundaries)
        return {0} | boundaries | {b - 1 for b in boundaries}
    if isinstance(schedule, Join):
        starts = [0, *schedule.boundaries]
        ends = [*schedule.boundaries, count]
        points = set()
        for piece, start, end in zip(schedule.schedules, starts, ends, strict=True):
            if start >= min(end, count):
                continue
            inner = _breakpoints(piece, end - start) | {0, end - start - 1}
            points |= {start + p for p in inner if 0 <= p < end - start}
        return points
    return set(range(min(count, CHECKED_AHEAD)))


# The public names: one per schedule (the lowercase constructors). The
# classes behind them are the saved form (registered for `.keras` files and
# callback configs) and are not part of the API.
__all__ = [
    "Schedule",
    "as_schedule",
    "constant",
    "linear",
    "cosine",
    "exponential",
    "step",
    "join",
    "interpolation",
    "number",
    "whole_number",
    "check_points",
    "check_over",
]
