"""The TensorFlow step: `train_step`/`test_step`, the guard, packed logs.

Everything here is specific to the TensorFlow backend (`tf.GradientTape`,
control dependencies, `_compat.packed_logs_function`); another backend's
step is one more module beside it.
"""

from keras_distill import _compat
from keras_distill import checks as kd_checks
from keras_distill.distiller.batch_checks import nonfinite_problem
from keras_distill.distiller.step_logs import StepLogs


class TensorFlowStep(StepLogs):
    """The `Distiller`'s train and test steps on TensorFlow (a mixin)."""

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
            y_pred, report = self.compute_step_losses(
                x,
                y,
                sample_weight,
                teacher_targets,
                True,
                problems,
                where,
                deferred=deferred if ready else None,
            )
            total = report.total
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
        self._check_finite(report, gradients, guard)
        deferred.apply()
        self._update_loss_trackers(x, report)
        self.optimizer.apply_gradients(zip(gradients, trainable))
        return self._metrics_result(x, y, y_pred, sample_weight)

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
        y_pred, report = self.compute_step_losses(
            x, y, sample_weight, teacher_targets, False, problems, where
        )
        problems.append(nonfinite_problem(x, report.total, where))
        check = self._check_all(problems)
        # The trackers wait for the check: a failed batch is not counted.
        with tf.control_dependencies([check] if check is not None else []):
            self._update_loss_trackers(x, report)
        return self._metrics_result(x, y, y_pred, sample_weight)
