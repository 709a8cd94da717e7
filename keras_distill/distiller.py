"""The `Distiller` model: train a student from a frozen teacher with `fit()`."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_distill import _compat
from keras_distill import checks as kd_checks
from keras_distill import hints as kd_hints
from keras_distill import losses as kd_losses
from keras_distill import params as kd_params
from keras_distill import targets as kd_targets
from keras_distill import terms as kd_terms
from keras_distill.targets import (  # noqa: F401  (re-exported)
    TEACHER_LOGITS_KEY,
    TOPK_INDICES_KEY,
    TOPK_LOGITS_KEY,
    TOPK_REST_KEY,
)


def check_alpha(value, warn=True):
    """Returns `value` as a float if it is a valid `alpha`, else raises."""
    return kd_params.check("alpha", value, warn=warn)


def check_temperature(value, warn=True):
    """Returns `value` as a float if it is a valid `temperature`, else raises.

    `warn=False`: no warning for an unusual value (its variable gives it).
    """
    return kd_params.check("temperature", value, warn=warn)


# Names a term may not take: its log key `<name>_loss` or weight `<name>_weight`
# would clash with the distiller's own.
_RESERVED_TERM_NAMES = ("student", "distillation", "hint", "total")


def _output_count(model):
    """How many outputs a functional or Sequential model has (else 1)."""
    if not _compat.is_functional(model):
        return 1
    try:
        return len(model.outputs)
    except (AttributeError, ValueError):
        return 1


def _resolve_terms(distillation_loss):
    """The list of `DistillationTerm`s from `distillation_loss` (one or a list)."""
    specs = (
        list(distillation_loss)
        if isinstance(distillation_loss, list | tuple)
        else [distillation_loss]
    )
    if not specs:
        raise ValueError(
            "`distillation_loss` must name at least one term. Received: "
            f"distillation_loss={distillation_loss!r}"
        )
    terms = []
    for i, spec in enumerate(specs):
        argument = "distillation_loss" if len(specs) == 1 else f"distillation_loss[{i}]"
        terms.append(kd_losses.get_term(spec, argument))
    _check_term_names(terms)
    return terms


def _resolve_output_terms(distillation_loss, count):
    """Terms per output of a model with `count` outputs.

    `distillation_loss` is one spec (applied to every output) or a list with
    one entry per output: a spec, a list of specs, or `None` (no term on
    that output). Terms made from a name get the output's index in their
    name (`"kd_0"`, `"kd_1"`).

    Returns:
        `(terms, outputs, layout, given)`: the flat list of terms, the output
        index of each, the layout to save (per output: `None`, a term index
        or a list of them) and the name each term was given as (or `""`).
    """
    entries = (
        list(distillation_loss)
        if isinstance(distillation_loss, list | tuple)
        else [distillation_loss] * count
    )
    if len(entries) != count:
        raise ValueError(
            f"The student and teacher have {count} outputs, so `distillation_loss` "
            f"needs one entry per output (a term, a list of terms, or None to skip "
            f"the output). Received {len(entries)} entries: "
            f"distillation_loss={distillation_loss!r}"
        )
    terms, outputs, layout, given = [], [], [], []
    for output, entry in enumerate(entries):
        if entry is None:
            layout.append(None)
            continue
        many = isinstance(entry, list | tuple)
        indices = []
        for j, spec in enumerate(entry if many else [entry]):
            argument = f"distillation_loss[{output}]" + (f"[{j}]" if many else "")
            term = kd_losses.get_term(spec, argument)
            if isinstance(spec, str):
                term = kd_terms.make(spec, name=f"{term.name}_{output}")
            indices.append(len(terms))
            terms.append(term)
            outputs.append(output)
            given.append(spec if isinstance(spec, str) else "")
        layout.append(indices if many else indices[0])
    if not terms:
        raise ValueError(
            "`distillation_loss` must put a term on at least one output. Received: "
            f"distillation_loss={distillation_loss!r}"
        )
    _check_term_names(terms)
    return terms, outputs, layout, given


def _check_term_names(terms):
    names = [term.name for term in terms]
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                "A distillation term's name must be a Python identifier (it "
                f"names the `{name}_loss` log and `{name}_weight`). Received a "
                f"term named {name!r}; pass `name=` to the term."
            )
        if name in _RESERVED_TERM_NAMES:
            raise ValueError(
                f"A distillation term cannot be named {name!r}: its log key "
                f"`{name}_loss` would clash with the Distiller's own. Pass another "
                "`name=` to the term."
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Each distillation term needs its own name (it names the "
            f"`<name>_loss` log and the `<name>_weight` variable). Received the "
            f"names {names}: {duplicates} appear more than once. Pass `name=` to "
            "the terms, e.g. `kd.losses.KDTerm(standardize=True, name='ls_kd')`."
        )
    if len(set(map(id, terms))) != len(terms):
        raise ValueError("The same term instance appears twice in `distillation_loss`.")


def _keras_distillation_arguments(kwargs, distillation_loss, alpha):
    """Maps `keras.distillation.Distiller`'s argument names onto ours.

    `distillation_losses` is `distillation_loss` (our terms; keras's own loss
    objects are refused by `losses.get_term` with the equivalent call) and
    `student_loss_weight` is `alpha` (the same formula,
    `w * student + (1 - w) * distillation`). Removes them from `kwargs`.
    """
    if "distillation_losses" in kwargs:
        losses = kwargs.pop("distillation_losses")
        if distillation_loss != "kd":
            raise ValueError(
                "Pass the terms once: `distillation_loss=` or keras.distillation's "
                f"`distillation_losses=`. Received: distillation_loss="
                f"{distillation_loss!r}, distillation_losses={losses!r}"
            )
        distillation_loss = list(losses) if isinstance(losses, list | tuple) else losses
    if "student_loss_weight" in kwargs:
        weight = kwargs.pop("student_loss_weight")
        if alpha != kd_params.SPECS["alpha"].default:
            raise ValueError(
                "`student_loss_weight` (keras.distillation) is this Distiller's "
                f"`alpha`; pass one of them. Received: alpha={alpha!r}, "
                f"student_loss_weight={weight!r}"
            )
        alpha = weight
    return distillation_loss, alpha


def _check_term_weights(weights, terms):
    """One checked weight per term (a list of floats), or None."""
    if weights is None:
        return None
    names = [term.name for term in terms]
    if not isinstance(weights, list | tuple) and len(terms) == 1:
        weights = [weights]
    if not isinstance(weights, list | tuple) or len(weights) != len(terms):
        count = (
            f"{len(weights)} weight{'' if len(weights) == 1 else 's'}"
            if isinstance(weights, list | tuple)
            else f"a {type(weights).__name__}"
        )
        raise ValueError(
            f"`distillation_loss_weights` must be a list with one weight per "
            f"distillation term ({len(terms)}: {names}). Received {count}: "
            f"distillation_loss_weights={weights!r}"
        )
    return [
        kd_params.check(
            kd_params.term_weight_name(name), weight, f"distillation_loss_weights[{i}]"
        )
        for i, (name, weight) in enumerate(zip(names, weights))
    ]


def _check_teacher_weights(weights, count):
    """Normalised non-negative finite weights, one per teacher."""
    if weights is None:
        return [1.0 / count] * count
    message = (
        f"`teacher_weights` must be {count} finite non-negative numbers (one per "
        f"teacher) with a positive sum. Received: teacher_weights={weights!r}"
    )
    try:
        numbers = [kd_params.check_finite(w, "teacher_weights") for w in weights]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(numbers) != count or any(w < 0 for w in numbers) or sum(numbers) <= 0:
        raise ValueError(message)
    total = sum(numbers)
    return [w / total for w in numbers]


def _check_teacher_temperatures(temperatures, count):
    if temperatures is None:
        return [None] * count
    if len(temperatures) != count:
        raise ValueError(
            f"`teacher_temperatures` must have one entry per teacher ({count}). "
            f"Received: teacher_temperatures={temperatures!r}"
        )
    return [None if t is None else check_temperature(t) for t in temperatures]


def check_hint_weight(value):
    """Returns `value` as a float if it is a valid `hint_weight`, else raises."""
    return kd_params.check("hint_weight", value)


def _num_classes(model):
    """The size of the model's last output axis, or None when unknown."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], tuple):
        return None  # Several outputs: checked at the first batch instead.
    return shape[-1] if shape else None


def _sparse_loss_of(loss):
    """`(True, ignore_class)` if `loss` is sparse categorical CE, else None."""
    if loss is None:
        return True, None  # the default hard-label loss
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError):
            return None
    if loss is keras.losses.sparse_categorical_crossentropy:
        return True, None
    wrapped = _compat.loss_function(loss)
    if (
        wrapped is not None
        and wrapped[0] is keras.losses.sparse_categorical_crossentropy
    ):
        return True, wrapped[1].get("ignore_class")
    return None


def _inference_view(teacher):
    """An uncompiled functional view of `teacher` that shares its layers.

    A compiled teacher carries its own optimizer, which Keras would otherwise
    save inside the distiller's file. Functional and Sequential teachers are
    re-wrapped without it; subclassed teachers are returned as they are.
    """
    if getattr(teacher, "optimizer", None) is None:
        return teacher
    is_graph = _compat.is_functional(teacher)
    try:
        inputs, outputs = teacher.inputs, teacher.outputs
    except (AttributeError, ValueError):
        return teacher
    if not (is_graph and inputs and outputs):
        return teacher
    inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = outputs[0] if len(outputs) == 1 else outputs
    return keras.Model(inputs, outputs, name=teacher.name)


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(keras.Model):
    """Trains a student model to match a frozen teacher, with `fit()`.

    The loss on a labelled batch is

    `alpha * hard_loss(y, student) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)`

    where `p^T = softmax(logits / T)`, computed in log space and in float32.
    `hard_loss` is the loss given to `compile()` (sparse categorical
    cross-entropy by default). A batch without labels trains on the KD term
    alone (Hinton's "transfer set"). Sample weights apply to both terms.

    The teacher is frozen (`trainable = False`) and always runs with
    `training=False`. `alpha` and `temperature` are non-trainable
    `keras.Variable`s: assigning `distiller.temperature = 2.0` during `fit()`,
    e.g. from a callback, takes effect at the next step without retracing.
    `call()`, `predict()` and `evaluate()` metrics use the student.

    Reference: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
    Network", 2015 (https://arxiv.org/abs/1503.02531).

    Args:
        student: The `keras.Model` to train.
        teacher: A trained `keras.Model` with the same number of classes, or
            a list of them (an ensemble: their softened distributions are
            averaged in probability space, Hinton et al. 2015, section 4).
        alpha: Weight of the hard-label loss, in [0, 1]; the KD term gets
            `1 - alpha`. Defaults to `0.1`.
        temperature: Softmax temperature `T > 0` of the KD term. Defaults to
            `4.0`.
        teacher_outputs: `"logits"` or `"probabilities"`: what the teacher's
            last layer returns. Defaults to `"logits"`.
        student_outputs: `"logits"` or `"probabilities"`: what the student's
            last layer returns. Defaults to `"logits"`.
        distillation_loss: The distillation term, or a list of them: a
            name (`"kd"`: Hinton's `T^2 * KL`; `"mse"`: squared error between
            logits; `"dkd"`: Decoupled KD, needs labels; `"ctkd"`, `"rkd_distance"`,
            ... see `keras_distill.losses.TERMS`), a
            `keras_distill.losses.DistillationTerm` (e.g.
            `KDTerm(standardize=True)`, `DKDTerm(beta=2.0)`, `CTKDTerm()`, or
            your own subclass), or one of the older `KnowledgeDistillation`,
            `LogitMSE`, `DecoupledKD` losses. Terms receive the distiller's
            current temperature. For a student and teacher with several
            outputs: one entry per output (a term, a list of terms, or `None`
            to skip the output). See `docs/terms.md`. Defaults to `"kd"`.
        distillation_loss_weights: One weight (>= 0) per term: the
            distillation part of the loss is `sum(w_i * term_i)`, each term
            is logged as `<name>_loss`, and each weight is a non-trainable
            variable `<name>_weight` (schedule it with `ParameterScheduler`).
            Defaults to `None`: weight 1 for each term (a single term then
            has no weight variable and the loss is exactly that term).
        teacher_weights: For several teachers, their weights in the average
            (normalised). Defaults to `None`: equal weights.
        teacher_temperatures: For several teachers, a fixed temperature per
            teacher (`None` entries use the distiller's `temperature`).
            Defaults to `None`.
        hints: A list of `keras_distill.hints.Hint`s for feature (hint)
            distillation (FitNets, Romero et al. 2015,
            https://arxiv.org/abs/1412.6550): each adds
            `weight * mean((adaptor(student_layer) - teacher_layer)^2)` to
            the loss, logged as `hint_loss`. The adaptors (in
            `hint_adaptors`) train with the student. Layers are found by
            name in functional and Sequential models; a subclassed model's
            `call()` must accept `return_features=True` and then return
            `(outputs, {name: tensor})`. Needs a single teacher and batches
            without precomputed teacher outputs. Defaults to `None`.
        hint_weight: Multiplier of the hint terms in the total loss, a
            non-trainable `keras.Variable` (schedule it, e.g. to 0 after a
            first stage, like FitNets' stage-wise training; the hard-label
            and KD terms stay on throughout). Defaults to `1.0`.
        **kwargs: Passed to `keras.Model` (e.g. `name`). keras.distillation's
            `distillation_losses` (our terms; its own loss objects are refused
            with the equivalent call) and `student_loss_weight` (our `alpha`)
            are accepted too (see `docs/migration.md`).

    Example:

    ```python
    distiller = kd.Distiller(student=student, teacher=teacher,
                             alpha=0.1, temperature=4.0)
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(train_ds, validation_data=val_ds, epochs=10)
    distiller.save("distiller.keras")
    ```

    With a hint (FitNets), the student's `"conv1"` regressed onto the
    teacher's `"conv2"` through a 1x1 convolution:

    ```python
    distiller = kd.Distiller(student=kd.models.student_cnn(), teacher=teacher,
                             hints=[kd.hints.Hint("conv2", "conv1")])
    ```
    """

    def __init__(
        self,
        student,
        teacher,
        alpha=0.1,
        temperature=4.0,
        teacher_outputs="logits",
        student_outputs="logits",
        distillation_loss="kd",
        teacher_weights=None,
        teacher_temperatures=None,
        hints=None,
        hint_weight=1.0,
        distillation_loss_weights=None,
        **kwargs,
    ):
        distillation_loss, alpha = _keras_distillation_arguments(
            kwargs, distillation_loss, alpha
        )
        teachers = list(teacher) if isinstance(teacher, list | tuple) else [teacher]
        if not teachers:
            raise ValueError("`teacher` must be a keras.Model or a non-empty list.")
        named = [("student", student)] + [
            ("teacher" if len(teachers) == 1 else f"teacher[{i}]", t)
            for i, t in enumerate(teachers)
        ]
        for name, model in named:
            if not isinstance(model, keras.Model):
                raise TypeError(
                    f"`{name}` must be a `keras.Model`. Received: {name}={model!r} "
                    f"of type {type(model).__name__}"
                )
        if any(student is t for t in teachers):
            raise ValueError("`student` and `teacher` must be different models.")
        kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
        kd_losses.check_output_kind(student_outputs, "student_outputs")
        # Checked early; the variables made below warn about unusual values.
        alpha = check_alpha(alpha, warn=False)
        temperature = check_temperature(temperature, warn=False)
        hint_list = kd_hints.check_hints(hints)
        hint_weight = check_hint_weight(hint_weight)
        if hint_list and len(teachers) > 1:
            raise ValueError(
                "Hints (feature distillation) support a single teacher. "
                f"Received {len(teachers)} teachers and hints={hint_list!r}."
            )
        outputs = _output_count(student)
        per_output = outputs > 1 and all(_output_count(t) == outputs for t in teachers)
        if per_output:
            if len(teachers) > 1:
                raise ValueError(
                    "Several teachers with several outputs are not supported. "
                    f"Received {len(teachers)} teachers with {outputs} outputs each."
                )
            terms, term_outputs, layout, given = _resolve_output_terms(
                distillation_loss, outputs
            )
        else:
            terms, term_outputs, layout = _resolve_terms(distillation_loss), None, None
            specs = (
                distillation_loss
                if isinstance(distillation_loss, list | tuple)
                else [distillation_loss]
            )
            given = [spec if isinstance(spec, str) else "" for spec in specs]
        term_weights = _check_term_weights(distillation_loss_weights, terms)
        self._teacher_weights = _check_teacher_weights(teacher_weights, len(teachers))
        self._teacher_temperatures = _check_teacher_temperatures(
            teacher_temperatures, len(teachers)
        )
        classes = {name: _num_classes(model) for name, model in named}
        known = {name: c for name, c in classes.items() if c is not None}
        if len(set(known.values())) > 1:
            shapes = ", ".join(
                f"{name} {model.output_shape}"
                for name, model in named
                if classes[name] is not None
            )
            raise ValueError(
                "Teacher and student must predict the same number of classes. "
                f"Received output shapes: {shapes}."
            )
        for name, model in named:
            declared = student_outputs if name == "student" else teacher_outputs
            _check_declared_outputs(name, model, declared)
        super().__init__(**kwargs)
        self.student = student
        for t in teachers:
            t.trainable = False
            # Also each sublayer: a subclassed teacher restored from a file
            # has `trainable=False` but trainable sublayers, whose weights
            # would otherwise join `trainable_variables` (and the optimizer).
            for layer in _compat.sublayers(t):
                layer.trainable = False
        # The models the step runs and the file saves: uncompiled views of
        # compiled teachers (sharing their layers), so that no teacher
        # optimizer is saved. `teacher`/`teachers` return the models as passed.
        self._teacher_views = [_inference_view(t) for t in teachers]
        self._passed_teachers = _Untracked(teachers)
        self.hints = hint_list
        # Tracked as layers, so that a hint term's variables (if any) train
        # and save with the distiller.
        self.hint_terms = [hint.term for hint in hint_list]
        self.hint_adaptors = []
        self._hint_views = None
        if hint_list:
            self._hint_views = (
                kd_hints.FeatureView(
                    student, [h.student_layer for h in hint_list], "student"
                ),
                kd_hints.FeatureView(
                    self._teacher_views[0],
                    [h.teacher_layer for h in hint_list],
                    "teacher",
                ),
            )
            self._build_hint_adaptors()
        self.teacher_weights = teacher_weights
        self.teacher_temperatures = teacher_temperatures
        self.teacher_outputs = teacher_outputs
        self.student_outputs = student_outputs
        # Names as given are saved as names; terms are saved by their config.
        self._term_given_as_list = isinstance(distillation_loss, list | tuple)
        self._term_names_given = given
        # Multi-output models: the output of each term, and the saved layout.
        self._term_outputs = term_outputs
        self._term_layout = layout
        # Tracked as layers: a term's config and variables save with the model.
        self.distillation_terms = terms
        # Parameter variables check every assignment (`params.variable`).
        self._alpha = kd_params.variable("alpha", alpha)
        self._temperature = kd_params.variable("temperature", temperature)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        # One weight variable per term, with several terms or when weights
        # are given; a single term without weights keeps the original loss
        # (no variable to save or schedule).
        self._term_weights = None
        if term_weights is None and len(terms) > 1:
            term_weights = [1.0] * len(terms)
        if term_weights is not None:
            self._term_weights = [
                kd_params.variable(kd_params.term_weight_name(term.name), weight)
                for term, weight in zip(terms, term_weights)
            ]
        self.term_loss_trackers = []
        if len(terms) > 1:
            self.term_loss_trackers = [
                keras.metrics.Mean(name=f"{term.name}_loss") for term in terms
            ]
        # Without hints there is no hint term, so no `hint_weight` variable to
        # save or schedule (a schedule for it would change nothing).
        self._hint_weight = None
        if hint_list:
            self._hint_weight = kd_params.variable("hint_weight", hint_weight)
            self.hint_loss_tracker = keras.metrics.Mean(name="hint_loss")
        self._default_student_loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=student_outputs == "logits"
        )
        hints_ready = not hint_list or len(self.hint_adaptors) == len(hint_list)
        if student.built and all(t.built for t in teachers) and hints_ready:
            self.built = True

    # -- Scheduled parameters -------------------------------------------------

    @property
    def alpha(self):
        """Weight of the hard-label loss (a non-trainable `keras.Variable`)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value):
        self._alpha.assign(check_alpha(value, warn=False))  # the assign warns

    @property
    def temperature(self):
        """Softmax temperature of the KD term (a non-trainable `keras.Variable`)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature.assign(check_temperature(value, warn=False))

    @property
    def hint_weight(self):
        """Multiplier of the hint terms (a non-trainable `keras.Variable`).

        `None` for a distiller without `hints`.
        """
        return self._hint_weight

    @hint_weight.setter
    def hint_weight(self, value):
        if self._hint_weight is None:
            raise ValueError(
                "This distiller has no hints, so `hint_weight` has no effect. "
                f"Received: hint_weight={value!r}. Pass `hints=` to the Distiller."
            )
        self._hint_weight.assign(check_hint_weight(value))

    @property
    def distillation_loss(self):
        """The distillation term (`DistillationTerm`), or the list of them."""
        terms = list(self.distillation_terms)
        if self._term_layout is not None or self._term_given_as_list:
            return terms
        return terms[0]

    @property
    def distillation_loss_weights(self):
        """The terms' weights: a list of non-trainable `keras.Variable`s, or `None`.

        Each is named `<term name>_weight` (`kd_weight`, `dkd_weight`, ...),
        so `ParameterScheduler("dkd_weight", ...)` schedules it. `None` for a
        single term constructed without `distillation_loss_weights` (its
        weight is 1).
        """
        return None if self._term_weights is None else list(self._term_weights)

    @distillation_loss_weights.setter
    def distillation_loss_weights(self, values):
        if self._term_weights is None:
            raise ValueError(
                "This distiller has a single distillation term and no weight "
                "variables. Received: distillation_loss_weights="
                f"{values!r}. Pass `distillation_loss_weights=[w]` to the "
                "Distiller to weight (and schedule) its term."
            )
        checked = _check_term_weights(values, list(self.distillation_terms))
        for variable, value in zip(self._term_weights, checked):
            variable.assign(value)

    # -- Compile (also the keras-io example's form) ---------------------------

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        *args,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        **kwargs,
    ):
        """Configures the model for training, like `keras.Model.compile`.

        `loss` is the hard-label loss (sparse categorical cross-entropy when
        `None`). The keras-io "Knowledge Distillation" example's arguments
        are accepted too and mapped onto this distiller: `student_loss_fn` is
        `loss`; `alpha` and `temperature` set the distiller's variables
        (checked, like `distiller.alpha = ...`); `distillation_loss_fn` must
        be `keras.losses.KLDivergence()` (with the example's softmax and
        `T^2`, it is this distiller's `"kd"` term). See `docs/migration.md`.

        Args:
            optimizer: As for `keras.Model.compile`. Defaults to `"rmsprop"`.
            loss: The hard-label loss. Defaults to `None`.
            *args: `keras.Model.compile`'s other positional arguments
                (`loss_weights`, `metrics`, ...).
            student_loss_fn: keras-io name of `loss`.
            distillation_loss_fn: keras-io's KD loss; only
                `keras.losses.KLDivergence()` (or `"kl_divergence"`), the
                Hinton term.
            alpha: If given, sets `distiller.alpha`.
            temperature: If given, sets `distiller.temperature`.
            **kwargs: Passed to `keras.Model.compile` (e.g. `metrics`).

        Example:

        ```python
        distiller = kd.Distiller(student=student, teacher=teacher)
        distiller.compile(  # the keras-io example, unchanged
            optimizer=keras.optimizers.Adam(),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True),
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,
            temperature=10,
        )
        ```
        """
        if student_loss_fn is not None:
            if loss is not None:
                raise ValueError(
                    "Pass the hard-label loss once: `loss=` or keras-io's "
                    f"`student_loss_fn=`. Received: loss={loss!r}, "
                    f"student_loss_fn={student_loss_fn!r}"
                )
            loss = student_loss_fn
        if distillation_loss_fn is not None:
            self._check_keras_io_distillation_loss(distillation_loss_fn)
        if alpha is not None:
            self.alpha = alpha
        if temperature is not None:
            self.temperature = temperature
        super().compile(optimizer, loss, *args, **kwargs)

    def compile_from_config(self, config):
        # `compile()` is overridden, so Keras would skip it when loading.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _check_keras_io_distillation_loss(self, loss_fn):
        """Accepts keras-io's `KLDivergence()` when this distiller's term is "kd"."""
        is_kl = isinstance(loss_fn, keras.losses.KLDivergence) or (
            loss_fn in ("kl_divergence", "kld", "KLD", keras.losses.kl_divergence)
        )
        terms = list(self.distillation_terms)
        if len(terms) == 1 and terms[0].matches_keras_loss(loss_fn):
            return
        if is_kl:
            raise ValueError(
                "`distillation_loss_fn=KLDivergence()` (keras-io) is the Hinton KD "
                "term, but this distiller was built with distillation_loss="
                f"{[t.name for t in terms]}. Drop `distillation_loss_fn` from "
                "`compile()`; the distiller's own terms are used."
            )
        raise ValueError(
            "`compile(distillation_loss_fn=...)` (the keras-io example's) accepts "
            "only `keras.losses.KLDivergence()`, which is this distiller's 'kd' term. "
            f"Received: distillation_loss_fn={loss_fn!r}. Choose the term when "
            "building the distiller instead, e.g. `kd.Distiller(student, teacher, "
            "distillation_loss='mse')` or a `kd.losses.DistillationTerm` "
            "subclass, and call `compile(optimizer=..., loss=..., metrics=...)`."
        )

    # -- Model ----------------------------------------------------------------

    def build(self, input_shape):
        # Calling on a symbolic input builds subclassed models too (their
        # layers create weights on first call), also when loading a file.
        for model in (self.student, *self._teacher_views):
            if not model.built:
                model(keras.KerasTensor(input_shape))
        if self.hints:
            self._build_hint_adaptors(input_shape)
        self.built = True

    def _build_hint_adaptors(self, input_shape=None):
        """Creates one adaptor per hint once the feature shapes are known.

        Functional and Sequential models know them at construction; for
        subclassed models they come from a symbolic call in `build()`.
        """
        if len(self.hint_adaptors) == len(self.hints):
            return
        student_view, teacher_view = self._hint_views
        if input_shape is None:
            student_shapes = student_view.static_shapes()
            teacher_shapes = teacher_view.static_shapes()
            if student_shapes is None or teacher_shapes is None:
                return
        else:
            student_shapes = student_view.symbolic_shapes(input_shape)
            teacher_shapes = teacher_view.symbolic_shapes(input_shape)
        self.hint_adaptors = [
            kd_hints.make_adaptor(hint, t_shape, s_shape, name=f"hint_adaptor_{i}")
            for i, (hint, t_shape, s_shape) in enumerate(
                zip(self.hints, teacher_shapes, student_shapes)
            )
        ]

    def call(self, inputs, training=None, return_features=False):
        """The student's outputs; with `return_features`, also its hint features."""
        if return_features and self.hints:
            return self._hint_views[0](inputs, training=training)
        return self.student(inputs, training=training)

    # -- Training -------------------------------------------------------------

    @staticmethod
    def unpack_batch(data):
        """Splits a batch into `(x, y, sample_weight, teacher_targets)`.

        See `keras_distill.targets.unpack_batch`.
        """
        return kd_targets.unpack_batch(data)

    def teacher_logits(self, x, teacher_targets=None):
        """Teacher logits for `x` (float32), from the batch or the teacher."""
        if teacher_targets is not None:
            return ops.cast(teacher_targets[TEACHER_LOGITS_KEY], "float32")
        if len(self._teacher_views) == 1:
            outputs = self._teacher_views[0](x, training=False)
            return ops.stop_gradient(kd_losses.to_logits(outputs, self.teacher_outputs))
        logits = [
            kd_losses.to_logits(teacher(x, training=False), self.teacher_outputs)
            for teacher in self._teacher_views
        ]
        self._check_ensemble_classes(logits)
        mixture = kd_losses.mix_teachers(
            logits,
            self._teacher_weights,
            self._teacher_temperatures,
            self._temperature,
        )
        return ops.stop_gradient(mixture)

    @property
    def teacher(self):
        """The teacher as passed (the first one when there are several).

        A compiled teacher stays compiled (`distiller.teacher.evaluate()`
        works); the distiller runs and saves an uncompiled view of it that
        shares its layers, so the teacher's optimizer is not saved.
        """
        return self._passed_teachers.models[0]

    @property
    def teachers(self):
        """The list of teachers, as passed."""
        return list(self._passed_teachers.models)

    def __dir__(self):
        # Keras's saving walks `dir()`: hidden, the teachers as passed (with
        # their optimizers) are not saved; their views are, through `layers`.
        return [
            name for name in super().__dir__() if name not in ("teacher", "teachers")
        ]

    def teacher_hint_targets(self, x):
        """`(teacher_logits, teacher_features)` from one teacher pass (float32)."""
        outputs, features = self._hint_views[1](x, training=False)
        if isinstance(outputs, list | tuple):  # several outputs: one per term's output
            logits = [
                ops.stop_gradient(kd_losses.to_logits(o, self.teacher_outputs))
                for o in outputs
            ]
        else:
            logits = ops.stop_gradient(
                kd_losses.to_logits(outputs, self.teacher_outputs)
            )
        return logits, [ops.stop_gradient(f) for f in features]

    def compute_hint_loss(
        self, teacher_features, student_features, sample_weight=None, y=None
    ):
        """Sum over hints of `weight * hint.loss(teacher, adaptor(student))`.

        Each hint's term (mean squared error by default) is averaged over the
        batch with the sample weights.
        """
        total = 0.0
        for hint, adaptor, t, s in zip(
            self.hints, self.hint_adaptors, teacher_features, student_features
        ):
            per_example = hint.term.compute(t, adaptor(s), y, self._temperature)
            total = total + hint.weight * kd_losses.reduce_per_example(
                per_example, sample_weight
            )
        return ops.cast(total, "float32")

    def compute_step_losses(
        self,
        x,
        y,
        sample_weight,
        teacher_targets,
        training,
        problems=None,
        where=None,
        deferred=None,
    ):
        """Runs the models on a batch and returns `(y_pred, losses)`.

        `losses` is `(total, student_loss, distillation_loss, hint_loss,
        term_losses)`; `hint_loss` is `None` without hints, `term_losses` the
        list of each term's (unweighted) loss. With hints, teacher and
        student each run once and give both outputs and features.

        With `problems` (a list) and `where`, the labels that `check_batch`
        could not check (a student whose class count is only known from its
        traced outputs) are checked against the outputs, and the problems
        appended to `problems` (the step's combined check). With `deferred`
        (a `_compat.DeferredUpdates`), the student's call runs in it: the
        variables it writes are written only by `deferred.apply()`.
        """

        def student(**kwargs):
            if deferred is None:
                return self(x, training=training, **kwargs)
            with deferred:
                return self(x, training=training, **kwargs)

        def late_check(y, y_pred):
            if problems is None or self._labels_checked_early(y):
                return y
            found, y = self._late_label_problems(y, y_pred, where)
            problems.extend(found)
            return y

        if not self.hints:
            y_pred = student()
            y = late_check(y, y_pred)
            losses = self.compute_distillation_terms(
                x, y, y_pred, sample_weight, teacher_targets, training=training
            )
            total, student_loss, distillation_loss, term_losses = losses
            return y_pred, (total, student_loss, distillation_loss, None, term_losses)
        if teacher_targets is not None:
            raise ValueError(
                "Hints need the teacher's intermediate features, which "
                "precomputed teacher outputs (the teacher-output cache) do not "
                "hold. Train with hints on uncached batches."
            )
        y_pred, student_features = student(return_features=True)
        y = late_check(y, y_pred)
        teacher_logits, teacher_features = self.teacher_hint_targets(x)
        total, student_loss, distillation_loss, term_losses = (
            self.compute_distillation_terms(
                x,
                y,
                y_pred,
                sample_weight,
                {TEACHER_LOGITS_KEY: teacher_logits},
                training=training,
            )
        )
        hint_loss = self.compute_hint_loss(
            teacher_features, student_features, sample_weight, y
        )
        total = total + ops.cast(self._hint_weight, "float32") * hint_loss
        return y_pred, (total, student_loss, distillation_loss, hint_loss, term_losses)

    def compute_distillation_loss(
        self, x, y, y_pred, sample_weight=None, teacher_targets=None, training=True
    ):
        """Returns `(total_loss, student_loss, distillation_loss)` for a batch.

        `student_loss` is `None` for unlabeled batches, whose total loss is the
        distillation term alone. `distillation_loss` is the weighted sum of
        the terms (see `compute_distillation_terms`).
        """
        total, student_loss, distillation_loss, _ = self.compute_distillation_terms(
            x, y, y_pred, sample_weight, teacher_targets, training
        )
        return total, student_loss, distillation_loss

    def compute_distillation_terms(
        self, x, y, y_pred, sample_weight=None, teacher_targets=None, training=True
    ):
        """`(total, student_loss, distillation_loss, term_losses)` for a batch.

        `term_losses` holds each term's loss (averaged with the sample
        weights); `distillation_loss` is their sum weighted by
        `distillation_loss_weights` (the single term's loss itself when the
        distiller has no weights), and

        `total = alpha * student_loss + (1 - alpha) * distillation_loss`,

        or `distillation_loss` alone for a batch without labels.
        """
        terms = list(self.distillation_terms)
        if self._term_outputs is not None:
            term_losses = self._per_output_term_losses(
                x, y, y_pred, sample_weight, teacher_targets
            )
            return self._combine(y, y_pred, sample_weight, term_losses)
        student_logits = kd_losses.to_logits(
            self.soft_predictions(y_pred), self.student_outputs
        )
        if kd_targets.is_topk(teacher_targets):
            refused = [t.name for t in terms if not t.accepts_topk]
            if refused:
                raise ValueError(
                    "Top-k cached teacher outputs hold only the teacher's k largest "
                    f"logits, which the terms {refused} cannot use (a term declares "
                    "`accepts_topk`; the plain KD term does). Cache dense logits "
                    "(`top_k=None`) for these terms."
                )
            term_losses = [
                kd_losses.reduce_per_example(
                    term.compute_topk(
                        teacher_targets, student_logits, y, self._temperature
                    ),
                    sample_weight,
                )
                for term in terms
            ]
        else:
            teacher_logits = self.teacher_logits(x, teacher_targets)
            self._check_class_counts(teacher_logits, student_logits)
            term_losses = [
                term.reduced(
                    teacher_logits, student_logits, y, self._temperature, sample_weight
                )
                for term in terms
            ]
        return self._combine(y, y_pred, sample_weight, term_losses)

    def _per_output_term_losses(self, x, y, y_pred, sample_weight, teacher_targets):
        """Each term's loss on its output (multi-output student and teacher)."""
        given = (teacher_targets or {}).get(TEACHER_LOGITS_KEY)
        if teacher_targets is not None and not isinstance(given, list):
            raise ValueError(
                "Precomputed teacher outputs (the teacher-output cache) hold one "
                "output; this distiller distills several outputs. Train on "
                "uncached batches."
            )
        students = list(self.soft_predictions(y_pred))
        teachers = given or list(self._teacher_views[0](x, training=False))
        labels = list(y) if isinstance(y, list | tuple) else [y] * len(students)
        losses = []
        for term, output in zip(self.distillation_terms, self._term_outputs):
            student = kd_losses.to_logits(students[output], self.student_outputs)
            teacher = ops.stop_gradient(
                kd_losses.to_logits(teachers[output], self.teacher_outputs)
            )
            self._check_class_counts(teacher, student)
            losses.append(
                term.reduced(
                    teacher, student, labels[output], self._temperature, sample_weight
                )
            )
        return losses

    def _combine(self, y, y_pred, sample_weight, term_losses):
        """`(total, student_loss, distillation_loss, term_losses)` from the terms."""
        if self._term_weights is None:
            distillation_loss = term_losses[0]
        else:
            distillation_loss = ops.sum(
                ops.stack(
                    [
                        ops.cast(weight, "float32") * loss
                        for weight, loss in zip(self._term_weights, term_losses)
                    ]
                )
            )
        if y is None:
            total = self._add_regularization(distillation_loss)
            return total, None, distillation_loss, term_losses
        hard = self.hard_predictions(y_pred)
        if self._fused_student_loss(y, hard, sample_weight):
            student_loss = kd_losses.sparse_ce_mean_loss(y, hard)
        elif self._compile_loss is not None:
            student_loss = self._compile_loss(y, hard, sample_weight)
        elif isinstance(hard, list | tuple) and isinstance(y, list | tuple):
            student_loss = ops.sum(
                ops.stack(
                    [
                        self._default_student_loss(labels, out, sample_weight)
                        for labels, out in zip(y, hard)
                    ]
                )
            )
        else:
            student_loss = self._default_student_loss(y, hard, sample_weight)
        student_loss = ops.cast(student_loss, "float32")
        alpha = ops.cast(self._alpha, "float32")
        total = alpha * student_loss + (1.0 - alpha) * distillation_loss
        return (
            self._add_regularization(total),
            student_loss,
            distillation_loss,
            term_losses,
        )

    def _fused_student_loss(self, y, hard, sample_weight):
        """Whether `losses.sparse_ce_mean_loss` gives this batch's student loss.

        Only where it is the same value as the hard-label loss: the default
        or a compiled `SparseCategoricalCrossentropy(from_logits=True)` with
        its default arguments and no `loss_weights`, one output of logits
        (no Keras mask), integer labels of shape `(batch,)` or `(batch, 1)`,
        no sample weights, one replica, on TensorFlow.
        """
        import tensorflow as tf

        if (
            sample_weight is not None
            or keras.backend.backend() != "tensorflow"
            or not tf.is_tensor(y)
            or not y.dtype.is_integer
            or y.shape.rank not in (1, 2)
            or (y.shape.rank == 2 and y.shape[-1] != 1)
            or not tf.is_tensor(hard)
            or hard.shape.rank != 2
            or getattr(hard, "_keras_mask", None) is not None
            or kd_losses._num_replicas() != 1
        ):
            return False
        if self._compile_loss is None:
            loss = self._default_student_loss
        else:
            config = getattr(self, "_compile_config", None)
            config = getattr(config, "config", None) or {}
            if config.get("loss_weights") is not None:
                return False
            loss = getattr(self, "loss", None)
        return (
            type(loss) is keras.losses.SparseCategoricalCrossentropy
            and loss.reduction == "sum_over_batch_size"
            and loss.dtype == "float32"
            and _compat.loss_function(loss)[1]
            == {"from_logits": True, "ignore_class": None, "axis": -1}
        )

    def _add_regularization(self, loss):
        """Adds the student's own losses (e.g. weight regularizers), if any."""
        student_losses = self.student.losses
        if not student_losses:
            return loss
        return loss + ops.sum(
            [ops.cast(ops.sum(extra), "float32") for extra in student_losses]
        )

    def _check_ensemble_classes(self, logits):
        """Names the teacher of an ensemble whose traced class count differs.

        Subclassed teachers have no static output shape at construction;
        their traced logits do, before the mixture stacks them.
        """
        student = (
            _num_classes(self.student) if _output_count(self.student) == 1 else None
        )
        known = [(i, z.shape[-1]) for i, z in enumerate(logits) if z.shape[-1]]
        reference = ("the student", student) if student is not None else None
        if reference is None and known:
            reference = (f"teacher[{known[0][0]}]", known[0][1])
        for i, count in known:
            if reference is not None and count != reference[1]:
                raise ValueError(
                    "Teacher and student must predict the same number of classes. "
                    f"Received: teacher[{i}] ({self._teacher_views[i].name}) "
                    f"predicts {count} classes, {reference[0]} {reference[1]}."
                )

    @staticmethod
    def _check_class_counts(teacher_logits, student_logits):
        t_shape, s_shape = teacher_logits.shape, student_logits.shape
        if t_shape[-1] is not None and s_shape[-1] is not None:
            if t_shape[-1] != s_shape[-1]:
                raise ValueError(
                    "Teacher and student must predict the same number of "
                    f"classes. Received: teacher outputs of shape {t_shape}, "
                    f"student outputs of shape {s_shape}."
                )

    def _update_loss_trackers(
        self, x, total, student_loss, distillation_loss, hint_loss=None, terms=()
    ):
        batch_size = ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[
            0
        ]
        # Cast once for every tracker (their totals and counts are float32).
        batch_size = ops.cast(batch_size, self._loss_tracker.total.dtype)
        for tracker, value in (
            (self._loss_tracker, total),
            (self.student_loss_tracker, student_loss),
            (self.distillation_loss_tracker, distillation_loss),
            (self.hint_loss_tracker if hint_loss is not None else None, hint_loss),
            *zip(self.term_loss_trackers, terms or ()),
        ):
            if value is not None and tracker is not None:
                _compat.add_to_mean(
                    tracker, _compat.unscale_loss_for_distribution(value), batch_size
                )

    def _metrics_result(self, x, y, y_pred, sample_weight):
        if y is None:
            # Compiled metrics (e.g. accuracy) need labels: leave them as they are.
            return self.get_metrics_result()
        # This batch's labels were counted, so the student loss has a value:
        # no NaN guard to trace (see `get_metrics_result`).
        self._labelled_batch = True
        try:
            return self.compute_metrics(
                x, y, self.hard_predictions(y_pred), sample_weight=sample_weight
            )
        finally:
            self._labelled_batch = False

    def soft_predictions(self, y_pred):
        """The student outputs that the KD term compares with the teacher."""
        return y_pred

    def hard_predictions(self, y_pred):
        """The student outputs that the labels and compiled metrics apply to."""
        return y_pred

    def get_metrics_result(self):
        # Compiled metrics are built by their first labelled batch; until then
        # (unlabeled data only) they have no result to report.
        results = {}
        for metric in self.metrics:
            if metric is self._compile_metrics and not metric.built:
                continue
            result = metric.result()
            if metric is self.student_loss_tracker and not getattr(
                self, "_labelled_batch", False
            ):
                # Never a made-up 0 for a loss that was never computed
                # (unlabeled batches only): NaN until a labelled batch.
                result = ops.where(
                    metric.count > 0, result, ops.convert_to_tensor(float("nan"))
                )
            if isinstance(result, dict):
                results.update(result)
            else:
                results[metric.name] = result
        return results

    # -- Checks of every batch (in the traced step) -----------------------------

    def check_batch(self, x, y, sample_weight, where):
        """Checks a batch in the step: input shapes, labels, sample weights.

        Shapes are checked while tracing. Labels (integers in `[0, classes)`)
        and sample weights (finite, >= 0) are checked in every batch, by the
        step's one combined check (`_check_all`) before anything is updated;
        on CPU, integer labels of a single-output student are left to the
        sparse cross-entropy kernel, which refuses them itself before any
        gradient exists (`_kernel_checks_labels`).
        `where` is a callable giving a string tensor that names the batch.

        Returns:
            `(problems, y, sample_weight)`: `problems` is a list of
            `(failed, message_fn)`; `y` and `sample_weight` have bad entries
            replaced by harmless ones, so the loss ops cannot fail before
            the check reports them.
        """
        import tensorflow as tf

        for name, model in self._named_models():
            _check_input_shape(name, model, x)
        where = where if callable(where) else (lambda: where)
        problems = []
        if (
            y is not None
            and not isinstance(y, list | tuple | dict)
            and self._labels_are_sparse()
        ):
            labels = tf.convert_to_tensor(y)
            if labels.shape.rank == 2 and labels.shape[-1] not in (None, 1):
                raise ValueError(
                    f"The labels have shape {tuple(labels.shape)}: they look one-hot "
                    "(or multi-label), but the loss is sparse categorical "
                    "cross-entropy, which takes integer class ids. Pass integer "
                    "labels (e.g. `np.argmax(y, axis=-1)`) or compile with "
                    "`loss=keras.losses.CategoricalCrossentropy(from_logits=True)`."
                )
            # Integer labels are left to the loss's kernel where it refuses
            # them itself (and no ignored class needs naming in the message).
            kernel_checks = (
                labels.dtype.is_integer
                and self._sparse_loss()[1] is None
                and _kernel_checks_labels()
            )
            if _output_count(self.student) == 1 and not kernel_checks:
                found, y = self._label_problem(
                    labels, _num_classes(self.student), where
                )
                problems += found
        return problems, y, self._weight_problem(sample_weight, where, problems)

    def _label_problem(self, labels, classes, where, head=""):
        """`([(failed, message_fn)], labels)` for sparse labels of `classes` classes.

        Returns no problem when `classes` is unknown or the labels are not
        numbers; the labels come back with bad entries replaced by 0.
        """
        import tensorflow as tf

        labels = tf.convert_to_tensor(labels)
        if classes is None or not (labels.dtype.is_floating or labels.dtype.is_integer):
            return [], labels
        sparse = self._sparse_loss()
        ignore = sparse[1] if sparse else None
        if labels.dtype.is_integer:  # the common case: one clip, one test
            values = labels
            clipped = tf.clip_by_value(labels, 0, classes - 1)
            bad = tf.not_equal(clipped, labels)
        else:
            values = tf.cast(labels, "float32")
            bad = (values < 0) | (values >= classes) | (values != tf.floor(values))
        if ignore is not None:
            # The label the loss ignores is legal (and kept as it is).
            kept = tf.equal(values, tf.cast(ignore, values.dtype))
            bad = bad & tf.logical_not(kept)
            if labels.dtype.is_integer:
                clipped = tf.where(kept, labels, clipped)
        problem = (
            tf.reduce_any(bad),
            lambda: kd_checks.format_message(
                "Labels must be integers in [0, {}) for a student with {} classes"
                + head
                + ("" if ignore is None else f" (or {ignore}, the ignored class)")
                + ". Received a label value of {} in {}.",
                classes,
                classes,
                kd_checks.first(values, bad),
                where(),
            ),
        )
        fixed = (
            clipped
            if labels.dtype.is_integer
            else tf.where(bad, tf.zeros_like(labels), labels)
        )
        return [problem], fixed

    def _labels_checked_early(self, y):
        """Whether `check_batch` checked these labels (a static class count)."""
        return (
            y is not None
            and not isinstance(y, list | tuple | dict)
            and _output_count(self.student) == 1
            and _num_classes(self.student) is not None
        )

    def _late_label_problems(self, y, y_pred, where):
        """The label check from the traced outputs, when `check_batch` could not.

        A subclassed or multi-output student has no static output shape
        before it runs; its traced outputs have one. Checks each sparse
        label tensor against the last axis of the output it is compared with
        (`hard_predictions`: LwF's new head, each output of a multi-output
        student).

        Returns:
            `(problems, y)`, `y` with bad entries replaced.
        """
        if y is None or not self._labels_are_sparse():
            return [], y
        hard = self.hard_predictions(y_pred)
        if not isinstance(y, list | tuple | dict) and not isinstance(
            hard, list | tuple | dict
        ):
            return self._label_problem(y, hard.shape[-1], where)
        if (
            isinstance(y, list | tuple)
            and isinstance(hard, list | tuple)
            and len(y) == len(hard)
        ):
            problems, fixed = [], []
            for i, (labels, output) in enumerate(zip(y, hard)):
                found, labels = self._label_problem(
                    labels, output.shape[-1], where, f" at output {i}"
                )
                problems += found
                fixed.append(labels)
            return problems, type(y)(fixed)
        return [], y

    def _weight_problem(self, sample_weight, where, problems):
        """Appends the sample-weight check to `problems`; the repaired weights."""
        import tensorflow as tf

        if sample_weight is not None:
            raw = tf.convert_to_tensor(sample_weight)
            weights = tf.cast(raw, "float32")
            bad = tf.logical_not(tf.math.is_finite(weights)) | (weights < 0)
            problems.append(
                (
                    tf.reduce_any(bad),
                    lambda: kd_checks.format_message(
                        "`sample_weight` must be finite and >= 0. Received a weight "
                        "of {} in {}.",
                        kd_checks.first(weights, bad),
                        where(),
                    ),
                )
            )
            sample_weight = tf.where(bad, tf.zeros_like(raw), raw)
        return sample_weight

    def _check_all(self, problems, guard=()):
        """`checks.check_all`, or nothing under XLA.

        XLA compiles neither string formatting nor assertions, so with
        `jit_compile=True` the in-step checks are off (documented; `fit()`
        and `evaluate()` warn, see `_warn_if_checks_off`).
        """
        if self._checks_off():
            return None
        return kd_checks.check_all(problems, guard)

    def _checks_off(self):
        """Whether the step is compiled with XLA, so without its checks."""
        return getattr(self, "jit_compile", False) is True

    def _warn_if_checks_off(self, method):
        """Warns once per `fit()`/`evaluate()` call when XLA turns the checks off."""
        if self._checks_off():
            warnings.warn(
                f"{type(self).__name__}.{method}() runs with jit_compile=True "
                "(XLA; also what jit_compile='auto' chooses on a GPU), which "
                "compiles no assertions: the in-step checks (labels, sample "
                "weights, NaN/inf loss or gradients, directly assigned parameters) "
                "are off, and a bad batch trains silently. Compile with "
                "`jit_compile=False` to get them back.",
                UserWarning,
                stacklevel=3,
            )

    def _named_models(self):
        yield "student", self.student
        views = self._teacher_views
        for i, teacher in enumerate(views):
            yield ("teacher" if len(views) == 1 else f"teacher[{i}]"), teacher

    def _labels_are_sparse(self):
        """Whether the hard-label loss takes integer class ids."""
        return self._sparse_loss() is not None

    def _sparse_loss(self):
        """`(True, ignore_class)` if the hard-label loss is sparse CE, else None.

        Recognises the default (no loss), `SparseCategoricalCrossentropy`
        (instance, its name or `keras.losses.sparse_categorical_crossentropy`)
        and a list or dict of them (one per output). `ignore_class` is the
        label the loss ignores (legal in the labels), or None.
        """
        loss = getattr(self, "loss", None)
        if isinstance(loss, dict):
            loss = list(loss.values())
        losses = list(loss) if isinstance(loss, list | tuple) else [loss]
        found = [_sparse_loss_of(item) for item in losses]
        if not found or any(item is None for item in found):
            return None
        ignored = {item[1] for item in found}
        return True, ignored.pop() if len(ignored) == 1 else None

    def _check_finite(self, losses, gradients, guard):
        """The loss or a gradient is not finite: stop the step before the update.

        One NaN or inf input, label or teacher output usually makes the loss
        non-finite at once; where a layer swallows it (some CPU kernels give
        `relu(nan) = 0`) the loss stays finite but the gradients do not, so
        both are checked: the loss, and the sum of every gradient's sum (a
        reduction per variable). One op (`checks.assert_finite`), which
        reports each term's loss on failure; `raise_readable` names them and
        the step.
        """
        import tensorflow as tf

        if self._checks_off():
            return
        total, student_loss, distillation_loss, hint_loss, term_losses = losses
        named = [("loss", total)]
        if student_loss is not None:
            named.append(("student_loss", student_loss))
        named.append(("distillation_loss", distillation_loss))
        if hint_loss is not None:
            named.append(("hint_loss", hint_loss))
        if len(term_losses) > 1:
            named += [
                (f"{term.name}_loss", value)
                for term, value in zip(self.distillation_terms, term_losses)
            ]
        flags = [tf.cast(total, "float32")]
        # A `LossScaleOptimizer`'s scaled gradients overflow now and then by
        # design: it skips those updates itself and lowers its scale. Its
        # gradients are left to it (only the loss is checked), or mixed
        # precision training would stop at the first overflow.
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            sums = [
                tf.reduce_sum(tf.cast(g, "float32")) for g in gradients if g is not None
            ]
            if sums:
                gradient_sum = tf.add_n(sums)
                named.append(("gradients", gradient_sum))
                flags.append(gradient_sum)
        ok = tf.math.is_finite(tf.add_n(flags))
        kd_checks.assert_finite(named, ok, guard)

    def _parameter_note(self):
        """Names a parameter outside its sound range (the likely cause of a NaN)."""
        return kd_params.unusual_note(self.parameter_variables())

    def _readable_errors(self, where):
        """`checks.raise_readable` for this distiller's steps."""
        return kd_checks.raise_readable(where, note=self._parameter_note)

    def parameter_variables(self):
        """`{name: variable}` of the declared parameters this distiller holds."""
        found = {"alpha": self._alpha, "temperature": self._temperature}
        if self._hint_weight is not None:
            found["hint_weight"] = self._hint_weight
        for variable, term in zip(self._term_weights or (), self.distillation_terms):
            found[kd_params.term_weight_name(term.name)] = variable
        for term in (*self.distillation_terms, *self.hint_terms):
            found.update(term.parameter_variables())
        return found

    def training_state(self):
        """`{name: trackable}`: everything training changes, for checkpoints.

        The student, the optimizer, the scheduled parameters, the hint
        adaptors and the terms that hold variables (CTKD's temperature); the
        teacher is frozen, so it is not part of it. Used by
        `keras_distill.distribute` for its per-epoch checkpoints.
        """
        state = {"student": self.student, "optimizer": self.optimizer}
        state.update(self.parameter_variables())
        state.update({adaptor.name: adaptor for adaptor in self.hint_adaptors})
        for term in (*self.distillation_terms, *self.hint_terms):
            if term.weights:
                state[f"term_{term.name}"] = term
        return state

    def train_step(self, data):
        import tensorflow as tf

        # The parameters need no check here: their variables check every
        # assignment (`params.variable`).
        x, y, sample_weight, teacher_targets = self.unpack_batch(data)

        def where():  # Formatted only when a check fails.
            return kd_checks.format_message(
                "training step {}", _compat.step_count(self.optimizer) + 1
            )

        problems, y, sample_weight = self.check_batch(x, y, sample_weight, where)
        # The student's own writes in its call (BatchNormalization's moving
        # statistics, dropout seeds) wait for the checks too: a NaN batch
        # must not leave NaN statistics behind.
        deferred = _compat.DeferredUpdates(self)
        ready = self.built and deferred.usable(self.student)  # creates no variable
        with tf.GradientTape() as tape:
            y_pred, losses = self.compute_step_losses(
                x,
                y,
                sample_weight,
                teacher_targets,
                True,
                problems,
                where,
                deferred=deferred if ready else None,
            )
            total = losses[0]
            scaled = self.optimizer.scale_loss(total) if self.optimizer else total
        # The student's and the hint adaptors' weights (the teachers are
        # frozen): the list Keras builds the optimizer with.
        trainable = self.trainable_variables
        gradients = tape.gradient(scaled, trainable)
        # Every write of the step waits for the checks, so a failed one stops
        # the step before any variable changes: the checks name (take as
        # inputs) the trainable, optimizer and metric variables and those the
        # student's call wrote (BatchNormalization's statistics), and
        # TensorFlow's automatic control dependencies order every later use
        # of them after the checks: the updates, and the writes that do not
        # use the gradients (weight decay, the optimizer's counters, gradient
        # accumulators). The rest of the step runs as early as before.
        guard = [
            *trainable,
            *self.optimizer.variables,
            *self._metric_variables(),
            *deferred.variables,
        ]
        self._check_all(problems, guard=guard)  # labels, weights (when present)
        self._check_finite(losses, gradients, guard)
        deferred.apply()
        self._update_loss_trackers(x, *losses)
        self.optimizer.apply_gradients(zip(gradients, trainable))
        return self._metrics_result(x, y, y_pred, sample_weight)

    def _metric_variables(self):
        """The variables of the loss trackers and of the built compiled metrics.

        `fit()` builds the compiled metrics before the first step; a custom
        loop (`kd.distribute` on several workers) builds them in the step's
        first trace, after the checks, so their first trace cannot name them.
        """
        compiled = self._compile_metrics
        return [
            variable
            for metric in self.metrics
            if metric is not compiled or compiled.built
            for variable in metric.variables
        ]

    def make_train_function(self, force=False):
        return self._make_packed_function("train", force)

    def make_test_function(self, force=False):
        return self._make_packed_function("test", force)

    def _make_packed_function(self, kind, force):
        """The compiled `kind` ("train"/"test") function, its logs in one tensor.

        See `_compat.packed_logs_function`; Keras's own function on other
        backends.
        """
        attribute = f"{kind}_function"
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        function = _compat.packed_logs_function(self, getattr(self, f"{kind}_step"))
        if function is None:
            parent = getattr(super(), f"make_{kind}_function")
            parent(force)
            return getattr(self, attribute)
        setattr(self, attribute, function)
        return function

    def test_step(self, data):
        import tensorflow as tf

        x, y, sample_weight, teacher_targets = self.unpack_batch(data)
        where = lambda: "an evaluation batch"  # noqa: E731
        problems, y, sample_weight = self.check_batch(x, y, sample_weight, where)
        y_pred, losses = self.compute_step_losses(
            x, y, sample_weight, teacher_targets, False, problems, where
        )
        check = self._check_all(problems)
        # The trackers wait for the check: a failed batch is not counted.
        with tf.control_dependencies([check] if check is not None else []):
            self._update_loss_trackers(x, *losses)
        return self._metrics_result(x, y, y_pred, sample_weight)

    # -- Input checks before training -----------------------------------------

    def _training_step_name(self):
        """Names the step that failed: the optimizer counts only good steps."""
        return (
            "training step "
            f"{int(ops.convert_to_numpy(_compat.step_count(self.optimizer))) + 1}"
        )

    def fit(self, x=None, y=None, *args, **kwargs):
        with self._readable_errors(self._training_step_name):
            return self._checked_fit(x, y, *args, **kwargs)

    def _checked_fit(self, x, y, *args, **kwargs):
        self._warn_if_checks_off("fit")
        _check_not_empty(x, "training data")
        self._check_output_kinds(x)
        self._check_labels(x, y, "training data")
        positional = args[8] if len(args) > 8 else None  # fit's 11th argument
        _warn_if_no_weight(kwargs.get("sample_weight", positional))
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            # Checked before training (`evaluate()` would refuse empty data
            # only after the first epoch).
            if isinstance(validation_data, tuple | list):
                _check_not_empty(validation_data[0], "validation_data")
                self._check_labels(
                    validation_data[0], validation_data[1], "validation_data"
                )
            else:
                _check_not_empty(validation_data, "validation_data")
                self._check_labels(validation_data, None, "validation_data")
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset) and len(args) < 7 and "shuffle" not in kwargs:
            # Keras ignores `shuffle` for a dataset but warns about its
            # default, True, on every `fit()`: nothing to shuffle, no warning.
            kwargs["shuffle"] = False
        counter = _StepCounter()
        if len(args) < 4:  # `callbacks` not given by position
            given = list(kwargs.get("callbacks") or [])
            # First, so that the user's loggers (CSVLogger, TensorBoard) see
            # the learned temperatures too.
            learned = [_LogLearnedTemperatures()] if self._learned_terms() else []
            kwargs["callbacks"] = [*learned, *given, counter]
        history = super().fit(x, y, *args, **kwargs)
        if counter.epochs and not counter.steps:
            raise ValueError(
                "The training data yielded no batches, so nothing was trained "
                "(e.g. an empty or fully filtered `tf.data.Dataset`). Received: "
                f"x={x!r}"
            )
        return history

    def _learned_terms(self):
        """The terms that learn their temperature (CTKD), in hints too."""
        return [
            term
            for term in (*self.distillation_terms, *self.hint_terms)
            if term.epoch_logs()
        ]

    def learned_temperatures(self):
        """`{"<term>_temperature": float}` of the terms that learn it (CTKD).

        `fit()` writes them into each epoch's logs (and so the `History`,
        `CSVLogger` and TensorBoard), the value at the end of the epoch, so
        CTKD's curriculum is visible epoch by epoch.
        """
        logs = {}
        for term in self._learned_terms():
            logs.update(term.epoch_logs())
        return logs

    def evaluate(self, x=None, y=None, *args, **kwargs):
        with self._readable_errors(lambda: "an evaluation batch"):
            self._warn_if_checks_off("evaluate")
            _check_not_empty(x, "evaluation data")
            self._check_labels(x, y, "evaluation data")
            return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        with self._readable_errors(self._training_step_name):
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        with self._readable_errors(lambda: "an evaluation batch"):
            return super().test_on_batch(*args, **kwargs)

    def load_own_variables(self, store):
        # Loading assigns every variable, and the parameter variables refuse
        # a bad value as it is assigned: nothing is left to check afterwards.
        try:
            super().load_own_variables(store)
        except ValueError as error:
            raise ValueError(
                f"The saved distiller holds an invalid parameter: {error}"
            ) from None

    def save(self, filepath, *args, **kwargs):
        # A file that `load_model()` would refuse is not written.
        self._check_stored_parameters("The distiller to save holds")
        return super().save(filepath, *args, **kwargs)

    def _check_stored_parameters(self, prefix):
        """Raises if a parameter variable holds a value its rule refuses."""
        for name, variable in self.parameter_variables().items():
            value = float(ops.convert_to_numpy(variable))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the usual-range warning
                    kd_params.check(name, value)
            except ValueError as error:
                raise ValueError(f"{prefix} an invalid `{name}`: {error}") from None

    def _check_output_kinds(self, x):
        """Checks `teacher_outputs`/`student_outputs` against the first batch.

        For models whose last activation is unknown (subclassed models), runs
        them on a few examples of the first batch: rows in [0, 1] summing to
        1 are probabilities, anything else logits. A contradiction is an
        error naming the model.
        """
        sample = _first_batch_inputs(x)
        if sample is None:
            return
        for name, model in self._named_models():
            declared = (
                self.student_outputs if name == "student" else self.teacher_outputs
            )
            if _last_activation(model) is not None:
                continue  # Checked from the architecture at construction.
            try:
                outputs = model(sample, training=False)
            except Exception:  # noqa: BLE001  (the step reports its own errors)
                continue
            if not hasattr(outputs, "shape"):
                continue
            values = np.asarray(ops.convert_to_numpy(outputs), "float64")
            looks = _looks_like(values)
            if looks is not None and looks != declared:
                raise ValueError(_outputs_message(name, model, declared, looks))

    def _check_labels(self, x, y, where):
        """Raises a ValueError naming the first out-of-range sparse label."""
        num_classes = _num_classes(self.student)
        if num_classes is None:
            return
        labels = y
        if labels is None:
            labels = _first_batch_labels(x)
        if labels is None:
            return
        labels = np.asarray(labels)
        is_sparse = labels.ndim <= 1 or (labels.ndim == 2 and labels.shape[-1] == 1)
        if not is_sparse or labels.size == 0 or labels.dtype.kind not in "iuf":
            return
        sparse = self._sparse_loss()
        if sparse is None:
            return
        bad = (labels < 0) | (labels >= num_classes) | (labels != np.round(labels))
        if sparse[1] is not None:
            bad &= labels != sparse[1]  # the class the loss ignores
        if np.any(bad):
            index = int(np.argmax(bad.reshape(-1)))
            value = labels.reshape(-1)[index].item()
            raise ValueError(
                f"Labels in the {where} must be integers in [0, {num_classes}) for a "
                f"student with {num_classes} classes. Received a label value of "
                f"{value!r} at index {index} (the smallest label given is "
                f"{labels.min().item()!r}, the largest {labels.max().item()!r})."
            )

    # -- Serialization --------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": (
                    keras.saving.serialize_keras_object(self._teacher_views[0])
                    if len(self._teacher_views) == 1
                    else [
                        keras.saving.serialize_keras_object(t)
                        for t in self._teacher_views
                    ]
                ),
                "teacher_weights": self.teacher_weights,
                "teacher_temperatures": self.teacher_temperatures,
                "hints": [hint.get_config() for hint in self.hints] or None,
                "hint_weight": (
                    float(ops.convert_to_numpy(self._hint_weight))
                    if self._hint_weight is not None
                    else 1.0
                ),
                "alpha": float(ops.convert_to_numpy(self._alpha)),
                "temperature": float(ops.convert_to_numpy(self._temperature)),
                "teacher_outputs": self.teacher_outputs,
                "student_outputs": self.student_outputs,
                "distillation_loss": self._terms_config(),
                "distillation_loss_weights": (
                    None
                    if self._term_weights is None
                    else [float(ops.convert_to_numpy(w)) for w in self._term_weights]
                ),
            }
        )
        return config

    def _terms_config(self):
        """The terms as saved: names as given, other terms by their config."""
        saved = [
            given or keras.saving.serialize_keras_object(term)
            for given, term in zip(self._term_names_given, self.distillation_terms)
        ]
        if self._term_layout is not None:
            return [
                None
                if entry is None
                else [saved[i] for i in entry]
                if isinstance(entry, list | tuple)
                else saved[entry]
                for entry in self._term_layout
            ]
        return saved if self._term_given_as_list else saved[0]

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        teacher = config["teacher"]
        config["teacher"] = (
            [keras.saving.deserialize_keras_object(t) for t in teacher]
            if isinstance(teacher, list)
            else keras.saving.deserialize_keras_object(teacher)
        )
        loss = config.get("distillation_loss")
        if isinstance(loss, dict):
            config["distillation_loss"] = keras.saving.deserialize_keras_object(loss)
        elif isinstance(loss, list):

            def restore(item):
                if isinstance(item, list):
                    return [restore(i) for i in item]
                if isinstance(item, dict):
                    return keras.saving.deserialize_keras_object(item)
                return item

            config["distillation_loss"] = restore(loss)
        return cls(**config)


class _Untracked:
    """Holds models out of Keras's tracking (and so out of the saved file)."""

    def __init__(self, models):
        self.models = list(models)


class _LogLearnedTemperatures(keras.callbacks.Callback):
    """Writes `Distiller.learned_temperatures()` into each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.model.learned_temperatures())


def _kernel_checks_labels():
    """Whether the sparse cross-entropy kernel itself refuses a bad label.

    TensorFlow's CPU kernel raises for a label outside `[0, classes)` before
    any gradient exists (its GPU kernel gives NaN instead), so on CPU the
    step leaves integer labels to it and spends no op of its own;
    `checks.raise_readable` turns the kernel's error into the same message.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


class _StepCounter(keras.callbacks.Callback):
    """Counts the epochs begun and the batches trained in one `fit()`."""

    def __init__(self):
        super().__init__()
        self.epochs = self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def _last_activation(model):
    """`"softmax"`, `"linear"`, ... of a functional model's last layer, or None."""
    if not _compat.is_functional(model) or not model.layers:
        return None
    layer = model.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name in ("softmax", "linear", "sigmoid", "log_softmax"):
        return name
    return None


def _looks_like(values):
    """`"probabilities"` if every row is in [0, 1] and sums to 1, else `"logits"`."""
    if values.ndim < 2 or values.shape[-1] < 2 or not np.all(np.isfinite(values)):
        return None
    in_range = np.all((values >= 0) & (values <= 1))
    sums_to_one = np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)
    return "probabilities" if in_range and sums_to_one else "logits"


def _outputs_message(name, model, declared, actual):
    argument = "student_outputs" if name == "student" else "teacher_outputs"
    return (
        f"The {name} ({model.name}) returns {actual}, but {argument}="
        f"{declared!r}. Pass {argument}={actual!r} (or change the {name}'s last "
        "layer); training on a misread distribution gives a wrong student."
    )


def _check_declared_outputs(name, model, declared):
    """Raises if a functional model's last activation contradicts `declared`."""
    activation = _last_activation(model)
    if activation == "softmax" and declared == "logits":
        raise ValueError(_outputs_message(name, model, declared, "probabilities"))
    if activation in ("linear", "log_softmax") and declared == "probabilities":
        raise ValueError(_outputs_message(name, model, declared, "logits"))


def _check_not_empty(x, where):
    """Raises if `x` holds no examples (arrays) or no batches (a known-size Dataset)."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError(f"The {where} is an empty `tf.data.Dataset` (0 batches).")
        return
    first = keras.tree.flatten(x)[0] if x is not None else None
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) and shape[0] == 0:
        raise ValueError(
            f"The {where} holds no examples: inputs of shape {tuple(shape)}."
        )


def _warn_if_no_weight(sample_weight):
    """Warns once (per call) when every sample weight is 0: nothing would train."""
    if sample_weight is None or isinstance(sample_weight, dict):
        return
    try:
        values = np.asarray(ops.convert_to_numpy(sample_weight), "float64")
    except Exception:  # noqa: BLE001  (not array-like: Keras reports it)
        return
    if values.size and not np.any(values):
        import warnings

        warnings.warn(
            f"Every `sample_weight` is 0 ({values.size} weights), so every loss "
            "is 0 and training changes nothing. Give the examples to learn from a "
            "weight > 0.",
            UserWarning,
            stacklevel=3,
        )


def _first_batch_inputs(data, count=8):
    """A few inputs of the first batch (arrays or a Dataset), else None."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        for batch in data.take(1):
            x, _, _, _ = kd_targets.unpack_batch(batch)
            break
        else:
            return None
    else:
        x = data
    if not hasattr(x, "shape") or isinstance(x, dict | list | tuple) or not len(x):
        return None
    return x[:count]


def _check_input_shape(name, model, x):
    """Raises a ValueError naming the model if `x` cannot be its input."""
    try:
        expected = model.input_shape
    except (AttributeError, ValueError, RuntimeError):
        return
    if not (
        isinstance(expected, tuple)
        and all(d is None or isinstance(d, int) for d in expected)
    ):
        return  # Several inputs, or unknown: the model checks it itself.
    if not hasattr(x, "shape") or isinstance(x, dict | list | tuple):
        return
    received = tuple(x.shape)
    if len(received) != len(expected) or any(
        e is not None and r is not None and e != r
        for e, r in zip(expected[1:], received[1:])
    ):
        raise ValueError(
            f"The {name} ({model.name}) expects inputs of shape {expected}, but "
            f"the batch's inputs have shape {received}. Feed the data the "
            f"{name} was built for, or rebuild the {name} for this input shape."
        )


def _first_batch_labels(data):
    """Labels of the first batch of a `tf.data.Dataset`, else None."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        return None
    for batch in data.take(1):
        _, y, _, _ = Distiller.unpack_batch(batch)
        return None if y is None else ops.convert_to_numpy(y)
    return None
