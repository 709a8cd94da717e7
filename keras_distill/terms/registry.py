"""The registry of distillation terms: one name, one term, everywhere.

`register("name")` is the class decorator that makes a term a plug-in: the
name is accepted by `Distiller(distillation_loss=...)`, `Hint(loss=...)`,
the YAML config (`distill.loss`), the tuner's `terms=` and the docs' term
table, and the class is registered for saving. `get_term` is the one
resolver of a term specification (a name, a term, a saved config, or one of
the older `keras.losses.Loss` forms).
"""

import difflib

import keras

from keras_distill.terms.base import SOURCES, DistillationTerm

# name -> (class, default constructor arguments), in registration order.
_ENTRIES = {}
# name -> class: the registered terms (read-only view for callers).
TERMS = {}


class TermLoss(keras.losses.Loss):
    """A term as a `keras.losses.Loss` (the older `losses.KnowledgeDistillation`,
    `LogitMSE`, `DecoupledKD`, `HintLoss`): one code path with the term.

    Subclasses set `term_name` (a registered name) and implement
    `term_options()` (the term's constructor arguments) and `inputs(y_true)`
    (`(teacher, labels)` from `y_true`); `call` is the term's per-example
    value at `self.temperature`, and `to_term()` the term itself, which is
    what `Distiller(distillation_loss=loss)` uses.
    """

    term_name = None
    temperature = 1.0

    def term_options(self):
        return {}

    def to_term(self):
        return make(self.term_name, **self.term_options())

    def inputs(self, y_true):
        return y_true, None

    def call(self, y_true, y_pred):
        if getattr(self, "_term", None) is None:
            self._term = self.to_term()
        teacher, labels = self.inputs(y_true)
        return self._term.compute(teacher, y_pred, labels, self.temperature)


def register(name, package="keras_distill", **defaults):
    """Class decorator: registers a `DistillationTerm` under `name`.

    The class becomes serializable (`keras.saving.register_keras_serializable
    (package=package)`) and `name` builds `cls(**defaults)` wherever a term
    is accepted. Stack it to register one class under several names with
    other defaults (`"mae"` and `"cosine"` are `FeatureDistanceTerm`s).

    Args:
        name: The term's name, a Python identifier not registered yet.
        package: The serialization package. Defaults to `"keras_distill"`;
            use your own for your terms.
        **defaults: Constructor arguments that this name implies.

    Example:

    ```python
    @kd.terms.register("l1", package="my_project")
    class L1Logits(kd.terms.DistillationTerm):
        default_name = "l1"

        def call(self, teacher, student, labels=None, temperature=None):
            return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)
    ```
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"A term's registered name must be a Python identifier. Received: "
            f"name={name!r}"
        )

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, DistillationTerm)):
            raise TypeError(
                f"`register({name!r})` decorates a `DistillationTerm` subclass. "
                f"Received: {cls!r}"
            )
        taken = _ENTRIES.get(name)
        if taken is not None and taken[0].__qualname__ != cls.__qualname__:
            raise ValueError(
                f"The term name {name!r} is already registered for "
                f"{taken[0].__module__}.{taken[0].__qualname__}. Choose another "
                "name."
            )
        bad = sorted(set(cls.reads) - set(SOURCES))
        if bad:
            raise ValueError(
                f"{cls.__name__}.reads must be a subset of {SOURCES}. Received: "
                f"{cls.reads!r}"
            )
        registered = keras.saving.get_registered_name(cls)
        if registered == cls.__name__:  # not registered for saving yet
            cls = keras.saving.register_keras_serializable(package=package)(cls)
        _ENTRIES[name] = (cls, dict(defaults))
        TERMS[name] = cls
        return cls

    return decorate


def names(source=None):
    """The registered names, in order; with `source`, those that can read it."""
    return [
        name
        for name, (cls, _) in _ENTRIES.items()
        if source is None or source in cls.reads
    ]


def entry(name):
    """`(class, defaults)` of a registered name."""
    return _ENTRIES[name]


def make(registered, /, **options):
    """A new term from a registered name: `cls(**defaults, **options)`.

    The term is named after the registered name unless `options` has a
    `name` (so `make("mae")` is a `FeatureDistanceTerm` named `"mae"`).
    """
    cls, defaults = _ENTRIES[registered]
    return cls(**{**defaults, "name": registered, **options})


def _keras_equivalent(loss) -> str:
    """The keras_distill call equivalent to a keras.distillation loss object."""
    name = type(loss).__name__
    if name == "LogitsDistillation":
        temperature = getattr(loss, "temperature", 3.0)
        kl = isinstance(getattr(loss, "loss", None), keras.losses.KLDivergence)
        note = (
            ""
            if kl
            else " (keras.distillation's default `loss='kl_divergence'` applies "
            "KL to the logits / T without softmax or T^2; 'kd' is Hinton's T^2 * "
            "KL of the softened distributions)"
        )
        return (
            f"for `LogitsDistillation(temperature={temperature!r})` pass "
            f"`distillation_loss='kd', temperature={temperature!r}` to "
            f"`kd.Distiller`{note}."
        )
    if name == "FeatureDistillation":
        t = getattr(loss, "teacher_layer_name", None)
        s = getattr(loss, "student_layer_name", None)
        if t is None or s is None:
            return (
                "for `FeatureDistillation` on the final outputs pass "
                "`distillation_loss='mse'`."
            )
        return (
            f"for `FeatureDistillation(teacher_layer_name={t!r}, "
            f"student_layer_name={s!r})` pass `hints=[kd.hints.Hint({t!r}, "
            f"{s!r}, loss='mse')]` (or loss='mae' / 'cosine') to `kd.Distiller`."
        )
    return "subclass `kd.losses.DistillationTerm` (one value per example)."


def get_term(spec, argument: str = "distillation_loss", source="logits"):
    """A `DistillationTerm` from a name, a term, a saved config or a loss.

    Accepts a `DistillationTerm` (returned as it is), a registered name
    (`"kd"`, `"mse"`, `"dkd"`, ... see `names()`), the config dict of a saved
    term, or one of the older `keras.losses.Loss` forms
    (`KnowledgeDistillation`, `LogitMSE`, `DecoupledKD`, `HintLoss`).

    Args:
        spec: The specification.
        argument: The argument's name, for the error message.
        source: What the term will compare: `"logits"` or `"features"`; a
            term that does not declare it in `reads` is refused.

    Raises:
        ValueError: naming `argument` and the value; for an unknown name,
            the closest known names.
    """
    term = _resolve(spec, argument, source)
    if source not in term.reads:
        raise ValueError(
            f"The distillation term {term.name!r} ({type(term).__name__}) reads "
            f"{' and '.join(term.reads)}, not {source}. Received: {argument}="
            f"{spec!r}. Terms that read {source}: {names(source)}."
        )
    return term


def _resolve(spec, argument, source):
    if isinstance(spec, DistillationTerm):
        return spec
    if isinstance(spec, str):
        if spec in _ENTRIES:
            return make(spec)
        known = names(source)
        close = difflib.get_close_matches(spec, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown distillation term {argument}={spec!r}.{hint} Known names: "
            f"{sorted(known)}; or pass a `kd.terms.DistillationTerm` instance."
        )
    if isinstance(spec, dict):
        term = keras.saving.deserialize_keras_object(spec)
        if isinstance(term, DistillationTerm):
            return term
    if isinstance(spec, TermLoss):
        return spec.to_term()
    if isinstance(spec, type) and issubclass(spec, DistillationTerm):
        raise ValueError(
            f"`{argument}` must be a term instance, not the class. Received: "
            f"{argument}={spec.__name__}; pass {spec.__name__}()."
        )
    if isinstance(spec, keras.losses.KLDivergence):
        raise ValueError(
            f"`{argument}` received keras.losses.KLDivergence(). Hinton's term "
            "(KL of the softened distributions, times T^2) is `'kd'`: pass "
            f"{argument}='kd'."
        )
    module = type(spec).__module__ or ""
    if module.startswith("keras.src.distillation"):
        raise ValueError(
            f"`{argument}` received a keras.distillation loss, {spec!r}. "
            f"keras_distill takes its own terms: {_keras_equivalent(spec)} "
            "See docs/migration.md."
        )
    raise ValueError(
        f"`{argument}` must be a term name ({sorted(names(source))}), a "
        "`kd.terms.DistillationTerm`, or a KnowledgeDistillation, LogitMSE or "
        f"DecoupledKD loss. Received: {argument}={spec!r}"
    )
