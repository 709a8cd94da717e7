"""The `Distiller` model: train a student from a frozen teacher with `fit()`."""

import keras

from keras_distill import _compat
from keras_distill import hints as kd_hints
from keras_distill import params as kd_params
from keras_distill.distiller import tokens as kd_tokens
from keras_distill.distiller.arguments import (
    _check_teacher_temperatures,
    _check_teacher_weights,
    _check_term_weights,
    _keras_distillation_arguments,
    _resolve_output_terms,
    _resolve_terms,
    check_alpha,
    check_hint_weight,
    check_keras_io_distillation_loss,
    check_loss_reads_outputs,
    check_loss_weights_have_loss,
    check_temperature,
)
from keras_distill.distiller.backends import step_class
from keras_distill.distiller.batch_checks import BatchChecks
from keras_distill.distiller.fit_checks import FitChecks
from keras_distill.distiller.objective import Objective
from keras_distill.distiller.serialization import Serialization
from keras_distill.distiller.wiring import (
    _inference_view,
    _output_count,
    _Untracked,
    check_models,
    check_output_counts,
    check_output_shapes,
)
from keras_distill.terms import common as kd_losses


@keras.saving.register_keras_serializable(package="keras_distill")
class Distiller(
    Objective, BatchChecks, FitChecks, step_class(), Serialization, keras.Model
):
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
            ... see `kd.terms.names()`), a `kd.terms.DistillationTerm`
            (e.g. `kd.terms.make("kd", standardize=True)`,
            `kd.terms.make("dkd", beta=2.0)`, or your own registered
            subclass), or one of the older `KnowledgeDistillation`,
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
        token_reduction: For sequence outputs (e.g. a language model's
            `(batch, seq, vocab)` logits, distilled per token, masked by a
            `(batch, seq)` `sample_weight` or the inputs' `padding_mask`):
            `"tokens"`, the mean over the batch's real tokens, or
            `"sequences"`, the mean of each sequence's mean. Applies to the
            terms and the default hard-label loss. Defaults to `"tokens"`.
        teacher_vocabulary: `"same"` (the vocabularies must match) or
            `"truncate"`: a teacher with a larger vocabulary (an embedding
            padded to a multiple of 64, say) gives its first `vocab` logits.
            Defaults to `"same"`.
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
        token_reduction="tokens",
        teacher_vocabulary="same",
        **kwargs,
    ):
        distillation_loss, alpha = _keras_distillation_arguments(
            kwargs, distillation_loss, alpha
        )
        teachers = list(teacher) if isinstance(teacher, list | tuple) else [teacher]
        # A file loads its weights after construction: no built check then.
        named = check_models(student, teachers, kwargs.pop("_from_config", False))
        kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
        kd_losses.check_output_kind(student_outputs, "student_outputs")
        # Checked early; the variables made below warn about unusual values.
        token_reduction = kd_tokens.check_token_reduction(token_reduction)
        teacher_vocabulary = kd_tokens.check_vocabulary(teacher_vocabulary)
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
        if type(self).soft_predictions is Objective.soft_predictions:
            check_output_counts(student, teachers)
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
        check_output_shapes(named, teacher_vocabulary, student_outputs, teacher_outputs)
        super().__init__(**kwargs)
        self.token_reduction = token_reduction
        self.teacher_vocabulary = teacher_vocabulary
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
            if len(hint_list) > 1:
                self.term_loss_trackers += [
                    keras.metrics.Mean(name=name)
                    for name in kd_hints.log_names(hint_list)
                ]
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
        check_loss_reads_outputs(loss, self.student_outputs)
        check_loss_weights_have_loss(loss, args, kwargs)
        if distillation_loss_fn is not None:
            check_keras_io_distillation_loss(
                self.distillation_terms, distillation_loss_fn
            )
        if alpha is not None:
            self.alpha = alpha
        if temperature is not None:
            self.temperature = temperature
        super().compile(optimizer, loss, *args, **kwargs)

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

    def call(self, inputs, training=None, return_features=False):
        """The student's outputs; with `return_features`, also its hint features."""
        if return_features and self.hints:
            return self._hint_views[0](inputs, training=training)
        return self.student(inputs, training=training)

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
