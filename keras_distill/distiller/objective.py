"""The objective: binds the terms to the outputs and teachers, and computes the loss."""

import keras
from keras import ops

from keras_distill import _compat
from keras_distill import hints as kd_hints
from keras_distill import targets as kd_targets
from keras_distill.distiller import tokens as kd_tokens
from keras_distill.distiller.report import LossReport
from keras_distill.distiller.wiring import (
    _num_classes,
    _output_count,
)
from keras_distill.targets import (
    TEACHER_LOGITS_KEY,
)
from keras_distill.terms import common as kd_losses


class Objective:
    """The `Distiller`'s loss: terms bound to outputs and teachers (a mixin)."""

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
        """`(total, {log name: loss})` of the hints.

        `total` is the sum over hints of `weight * hint.loss(teacher,
        adaptor(student))`; each hint's term (mean squared error by default)
        is averaged over the batch with the sample weights, and that mean is
        its entry in the dict (named by `hints.log_names`).
        """
        total, losses = 0.0, {}
        for name, hint, adaptor, t, s in zip(
            kd_hints.log_names(self.hints),
            self.hints,
            self.hint_adaptors,
            teacher_features,
            student_features,
        ):
            per_example = hint.term.compute(t, adaptor(s), y, self._temperature)
            losses[name] = ops.cast(
                kd_losses.reduce_per_example(per_example, sample_weight), "float32"
            )
            total = total + hint.weight * losses[name]
        return ops.cast(total, "float32"), losses

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
        """Runs the student on a batch, then the hook: `(y_pred, LossReport)`.

        With hints, the student runs once and gives both outputs and
        features. With `problems` (a list) and `where`, the labels that
        `check_batch` could not check (a student whose class count is only
        known from its traced outputs) are checked against the outputs, and
        the problems appended to `problems` (the step's combined check).
        With `deferred` (a `_compat.DeferredUpdates`), the student's call
        runs in it: the variables it writes are written only by
        `deferred.apply()`.
        """
        kwargs = {"return_features": True} if self.hints else {}
        if deferred is None:
            outputs = self(x, training=training, **kwargs)
        else:
            with deferred:
                outputs = self(x, training=training, **kwargs)
        y_pred, features = outputs if self.hints else (outputs, None)
        if problems is not None and not self._labels_checked_early(y):
            found, y = self._late_label_problems(y, y_pred, where)
            problems.extend(found)
        report = self.compute_loss_report(
            x, y, y_pred, sample_weight, teacher_targets, training, features
        )
        return y_pred, report

    def compute_loss_report(
        self,
        x,
        y,
        y_pred,
        sample_weight=None,
        teacher_targets=None,
        training=True,
        student_features=None,
    ):
        """The loss of a batch, by name: the one hook the step calls.

        Like Keras's `Model.compute_loss`, but it returns a `LossReport`
        (the total, the hard-label loss, each term's value and weight, the
        hint loss) rather than a scalar, so the step can check, log and
        report every part. Override it to change what a batch costs
        (`kd.continual.LearningWithoutForgetting` does); build the report
        with `loss_report(y, y_pred, sample_weight, term_losses, hint_loss)`.

        Args:
            x: The batch's inputs.
            y: The labels, or `None` for a batch without labels.
            y_pred: The student's outputs.
            sample_weight: Per-example weights, or `None`.
            teacher_targets: Precomputed teacher outputs (the teacher cache;
                see `keras_distill.targets`), or `None` to run the teacher.
            training: Whether this is a training step.
            student_features: With hints, the student's hint features.

        Returns:
            A `LossReport`.
        """
        if (
            sample_weight is None
            and not isinstance(y_pred, list | tuple | dict)
            and kd_tokens.is_sequence(self.hard_predictions(y_pred))
        ):
            sample_weight = kd_tokens.token_weights(
                x, None, tuple(self.hard_predictions(y_pred).shape)[:-1]
            )
        if not self.hints:
            term_losses, student_loss = self._term_and_student_losses(
                x, y, y_pred, sample_weight, teacher_targets
            )
            return self.loss_report(
                y, y_pred, sample_weight, term_losses, student_loss=student_loss
            )
        if teacher_targets is not None:
            raise ValueError(
                "Hints need the teacher's intermediate features, which "
                "precomputed teacher outputs (the teacher-output cache) do not "
                "hold. Train with hints on uncached batches."
            )
        teacher_logits, teacher_features = self.teacher_hint_targets(x)
        term_losses = self.term_losses(
            x, y, y_pred, sample_weight, {TEACHER_LOGITS_KEY: teacher_logits}
        )
        hint_loss, hint_losses = self.compute_hint_loss(
            teacher_features, student_features, sample_weight, y
        )
        return self.loss_report(
            y, y_pred, sample_weight, term_losses, hint_loss, hint_losses
        )

    def compute_distillation_loss(
        self, x, y, y_pred, sample_weight=None, teacher_targets=None, training=True
    ):
        """Returns `(total_loss, student_loss, distillation_loss)` for a batch.

        `student_loss` is `None` for unlabeled batches. A tuple view of
        `compute_loss_report` (kept for existing code).
        """
        report = self.compute_loss_report(
            x, y, y_pred, sample_weight, teacher_targets, training
        )
        return report.total, report.student_loss, report.distillation_loss

    def compute_distillation_terms(
        self, x, y, y_pred, sample_weight=None, teacher_targets=None, training=True
    ):
        """`(total, student_loss, distillation_loss, term_losses)` for a batch.

        A tuple view of `compute_loss_report` (kept for existing code);
        `term_losses` is the list of each term's loss.
        """
        report = self.compute_loss_report(
            x, y, y_pred, sample_weight, teacher_targets, training
        )
        return (
            report.total,
            report.student_loss,
            report.distillation_loss,
            list(report.term_losses.values()),
        )

    def term_losses(self, x, y, y_pred, sample_weight=None, teacher_targets=None):
        """Each term's loss on the batch (averaged with the sample weights).

        One scalar per term of `distillation_terms`, in order. Terms are
        bound to the student's `soft_predictions` and the teacher's logits
        (from the batch's `teacher_targets`, or the teachers); a top-k
        teacher cache feeds the terms that declare `accepts_topk`.
        """
        return self._term_and_student_losses(
            x, y, y_pred, sample_weight, teacher_targets, fuse=False
        )[0]

    def _fuses_student_loss(self, y, y_pred):
        """Whether the token-level pass also gives the default hard-label loss.

        For sequence outputs without a compiled loss, where the labels apply
        to the outputs the terms read: the cross-entropy then shares the
        terms' chunked pass and their one student gradient (`tokens`).
        """
        soft = self.soft_predictions(y_pred)
        return (
            y is not None
            and _compat.compiled_loss(self) is None
            and soft is self.hard_predictions(y_pred)
            and not isinstance(soft, list | tuple | dict)
            and not isinstance(y, list | tuple | dict)
            and kd_tokens.is_sequence(soft)
        )

    def _term_and_student_losses(
        self, x, y, y_pred, sample_weight=None, teacher_targets=None, fuse=True
    ):
        """`(term_losses, student_loss or None)`: see `term_losses`.

        `student_loss` is given where the token-level pass computes it with
        the terms (`_fuses_student_loss`); else None (`student_loss()`).
        """
        terms = list(self.distillation_terms)
        if self._term_outputs is not None:
            losses = self._per_output_term_losses(
                x, y, y_pred, sample_weight, teacher_targets
            )
            return losses, None
        student_logits = kd_losses.to_logits(
            self.soft_predictions(y_pred), self.student_outputs
        )
        sequence = kd_tokens.is_sequence(student_logits)
        if kd_targets.is_topk(teacher_targets):
            if sequence:
                raise ValueError(
                    "A top-k teacher cache holds one distribution per example; "
                    "this student outputs one per token "
                    f"({tuple(student_logits.shape)}). Cache dense logits "
                    "(`TeacherCache.build(..., k=None)`) or distill online."
                )
            refused = [t.name for t in terms if not t.accepts_topk]
            if refused:
                raise ValueError(
                    "Top-k cached teacher outputs hold only the teacher's k largest "
                    f"logits, which the terms {refused} cannot use (a term declares "
                    "`accepts_topk`; the plain KD term does). Cache dense logits "
                    "(`TeacherCache.build(..., k=None)`) for these terms."
                )
            return [
                kd_losses.reduce_per_example(
                    term.compute_topk(
                        teacher_targets, student_logits, y, self._temperature
                    ),
                    sample_weight,
                )
                for term in terms
            ], None
        teacher_logits = self.teacher_logits(x, teacher_targets)
        if sequence or kd_tokens.is_sequence(teacher_logits):
            teacher_logits = kd_tokens.check_token_shapes(
                teacher_logits, student_logits, self.teacher_vocabulary
            )
            fused = fuse and self._fuses_student_loss(y, y_pred)
            return kd_tokens.term_losses(
                terms,
                teacher_logits,
                student_logits,
                y,
                sample_weight,
                self._temperature,
                self.token_reduction,
                hard_label_loss={"from_logits": True} if fused else None,
            )
        self._check_class_counts(teacher_logits, student_logits)
        return [
            term.reduced(
                teacher_logits, student_logits, y, self._temperature, sample_weight
            )
            for term in terms
        ], None

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

    def loss_report(
        self,
        y,
        y_pred,
        sample_weight,
        term_losses,
        hint_loss=None,
        hint_losses=None,
        student_loss=None,
    ):
        """The `LossReport` of a batch from its terms' losses.

        `distillation_loss = sum(w_i * term_i)` (the single term's loss when
        the distiller has no weights) and

        `total = alpha * student_loss + (1 - alpha) * distillation_loss
        (+ hint_weight * hint_loss) (+ the student's own losses)`,

        with `distillation_loss` alone in place of the mixture for a batch
        without labels. `student_loss`, when given, is the hard-label loss
        already computed (else `student_loss()` computes it).
        """
        names = [term.name for term in self.distillation_terms]
        if self._term_weights is None:
            weights = {names[0]: 1.0}
            distillation_loss = term_losses[0]
        else:
            weights = dict(zip(names, self._term_weights))
            distillation_loss = ops.sum(
                ops.stack(
                    [
                        ops.cast(weight, "float32") * loss
                        for weight, loss in zip(self._term_weights, term_losses)
                    ]
                )
            )
        if y is None:
            student_loss = None
            total = distillation_loss
        else:
            if student_loss is None:
                student_loss = self.student_loss(y, y_pred, sample_weight)
            student_loss = ops.cast(student_loss, "float32")
            alpha = ops.cast(self._alpha, "float32")
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
        if hint_loss is not None:
            total = total + ops.cast(self._hint_weight, "float32") * hint_loss
        return LossReport(
            total=self._add_regularization(total),
            student_loss=student_loss,
            distillation_loss=distillation_loss,
            hint_loss=hint_loss,
            hint_losses=dict(hint_losses or {}),
            term_losses=dict(zip(names, term_losses)),
            term_weights=weights,
        )

    def student_loss(self, y, y_pred, sample_weight=None):
        """The hard-label loss of the student's `hard_predictions`, float32."""
        hard = self.hard_predictions(y_pred)
        compiled = _compat.compiled_loss(self)
        if self._fused_student_loss(y, hard, sample_weight):
            loss = kd_losses.sparse_ce_mean_loss(y, hard)
        elif compiled is None and kd_tokens.is_sequence(hard):
            loss = kd_tokens.sparse_ce_tokens(
                y,
                hard,
                sample_weight,
                self.token_reduction,
                from_logits=self.student_outputs == "logits",
            )
        elif compiled is not None:
            loss = compiled(y, hard, sample_weight)
        elif isinstance(hard, list | tuple) and isinstance(y, list | tuple):
            loss = ops.sum(
                ops.stack(
                    [
                        self._default_student_loss(labels, out, sample_weight)
                        for labels, out in zip(y, hard)
                    ]
                )
            )
        else:
            loss = self._default_student_loss(y, hard, sample_weight)
        return ops.cast(loss, "float32")

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
        if _compat.compiled_loss(self) is None:
            loss = self._default_student_loss
        else:
            if _compat.compile_config(self).get("loss_weights") is not None:
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

    def soft_predictions(self, y_pred):
        """The student outputs that the KD term compares with the teacher."""
        return y_pred

    def hard_predictions(self, y_pred):
        """The student outputs that the labels and compiled metrics apply to."""
        return y_pred

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
