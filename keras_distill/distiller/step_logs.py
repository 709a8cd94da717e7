"""What every backend's step logs: the loss trackers and the compiled metrics."""

import keras
from keras import ops

from keras_distill import _compat


class StepLogs:
    """The `Distiller`'s loss trackers and metric results, for any backend's step.

    Backend-neutral (`keras.ops` and Keras variables): on JAX the step runs
    these inside a `keras.StatelessScope`, which records the writes.
    """

    def _update_loss_trackers(self, x, report):
        """Adds the report's losses to their `Mean` trackers (by log name)."""
        batch_size = ops.shape(next(t for t in keras.tree.flatten(x) if t is not None))[
            0
        ]
        tracker = _compat.loss_tracker(self)
        # Cast once for every tracker (their totals and counts are float32).
        batch_size = ops.cast(batch_size, tracker.total.dtype)
        trackers = {
            "loss": tracker,
            "student_loss": self.student_loss_tracker,
            "distillation_loss": self.distillation_loss_tracker,
            "hint_loss": getattr(self, "hint_loss_tracker", None),
            **{t.name: t for t in self.term_loss_trackers},
        }
        for name, value in report.logs().items():
            if trackers.get(name) is not None:
                _compat.add_to_mean(
                    trackers[name],
                    _compat.unscale_loss_for_distribution(value),
                    batch_size,
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

    def get_metrics_result(self):
        # Compiled metrics are built by their first labelled batch; until then
        # (unlabeled data only) they have no result to report.
        results = {}
        for metric in self.metrics:
            if metric is _compat.compiled_metrics(self) and not metric.built:
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

    def _metric_variables(self):
        """The variables of the loss trackers and of the built compiled metrics.

        `fit()` builds the compiled metrics before the first step; a custom
        loop (`kd.distribute` on several workers) builds them in the step's
        first trace, after the checks, so their first trace cannot name them.
        """
        compiled = _compat.compiled_metrics(self)
        return [
            variable
            for metric in self.metrics
            if metric is not compiled or compiled.built
            for variable in metric.variables
        ]
