"""`LearningWithoutForgetting`: the Distiller with one KD term per old head."""

import keras
from keras import ops

from keras_distill import losses as kd_losses
from keras_distill.distiller import Distiller


@keras.saving.register_keras_serializable(package="keras_distill")
class LearningWithoutForgetting(Distiller):
    """Learns a new task without forgetting the old ones (LwF).

    `student` has outputs `[*old_heads, new_head]` (see `add_task_head`, or
    `old_classes_view` for one growing head); `teacher` is the old model,
    with outputs `old_heads`. On new-task batches `(x, y_new)` the loss is

    `alpha * CE(y_new, new_head) + (1 - alpha) * T^2 * sum_k KL(old_k(x)/T || head_k/T)`

    Li and Hoiem minimise `L_new + lambda_o * L_old` with `lambda_o = 1`,
    `T = 2` and no `T^2` factor; that is our `alpha = T^2 / (T^2 +
    lambda_o) = 0.8` (see `alpha_for_lambda`), the default. Their warm-up
    step (the new head trained first with the rest frozen) is
    `warm_up_head`. `alpha=1` is plain fine-tuning of the shared trunk (the
    old heads are left to drift), the baseline LwF improves on. Compiled
    metrics refer to the new head; `predict()` returns every head.

    Args:
        student: A model with outputs `[*old_heads, new_head]` (two or more).
        teacher: The model trained on the old tasks (frozen), whose outputs
            match `old_heads`.
        alpha: Weight of the new task's loss. Defaults to `0.8`
            (`lambda_o = 1` at `T = 2`).
        temperature: Temperature of the old-task KD term. Defaults to `2.0`.
        **kwargs: Passed to `Distiller`.

    Example:

    ```python
    student = kd.continual.add_task_head(old_model, num_classes=5)
    kd.continual.warm_up_head(student, x_task2, y_task2)
    lwf = kd.continual.LearningWithoutForgetting(student, old_model)
    lwf.compile(optimizer="adam", metrics=["accuracy"])
    lwf.fit(x_task2, y_task2, epochs=10)
    old_logits, new_logits = lwf.predict(x)
    ```
    """

    def __init__(self, student, teacher, alpha=0.8, temperature=2.0, **kwargs):
        outputs = getattr(student, "outputs", None)
        if outputs is not None and len(outputs) < 2:
            raise ValueError(
                "`student` must have at least two outputs, [*old_heads, new_head] "
                f"(see `add_task_head`). Received a model with {len(outputs)} "
                "output(s)."
            )
        self._old_sizes = None
        if outputs is not None:
            self._old_sizes = [int(o.shape[-1]) for o in outputs[:-1]]
            teacher_outputs = getattr(teacher, "outputs", None)
            if teacher_outputs is not None:
                teacher_sizes = [int(o.shape[-1]) for o in teacher_outputs]
                if teacher_sizes != self._old_sizes:
                    raise ValueError(
                        "The teacher's outputs must match the student's old heads. "
                        f"Received teacher output sizes {teacher_sizes} and old "
                        f"head sizes {self._old_sizes}."
                    )
        super().__init__(
            student, teacher, alpha=alpha, temperature=temperature, **kwargs
        )
        needing = [t.name for t in self.distillation_terms if t.needs_labels]
        if needing:
            raise ValueError(
                "LwF distills the old heads with the new task's batches, whose "
                "labels are the new task's, so a term that needs labels cannot "
                f"distill the old heads. Received the terms {needing}; use terms "
                "that do not need labels (e.g. 'kd', 'mse', 'dist')."
            )

    def soft_predictions(self, y_pred):
        if len(y_pred) == 2:
            return y_pred[0]
        return ops.concatenate([ops.cast(p, "float32") for p in y_pred[:-1]], -1)

    def hard_predictions(self, y_pred):
        return y_pred[-1]

    def teacher_logits(self, x, teacher_targets=None):
        if (
            teacher_targets is not None
            or not self._old_sizes
            or (len(self._old_sizes) == 1)
        ):
            return super().teacher_logits(x, teacher_targets)
        outputs = self.teacher(x, training=False)
        logits = [kd_losses.to_logits(o, self.teacher_outputs) for o in outputs]
        return ops.stop_gradient(ops.concatenate(logits, -1))

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
        # Several old heads: each term on each old head (its own softmax),
        # summed over the heads, as in the paper (one KD term per old head).
        if not self._old_sizes or len(self._old_sizes) == 1:
            return super().compute_loss_report(
                x,
                y,
                y_pred,
                sample_weight,
                teacher_targets,
                training,
                student_features,
            )
        teacher = self.teacher_logits(x, teacher_targets)
        student = kd_losses.to_logits(
            self.soft_predictions(y_pred), self.student_outputs
        )
        term_losses = []
        for term in self.distillation_terms:
            total, start = 0.0, 0
            for size in self._old_sizes:
                total = total + term.reduced(
                    teacher[:, start : start + size],
                    student[:, start : start + size],
                    None,
                    self._temperature,
                    sample_weight,
                )
                start += size
            term_losses.append(total)
        return self.loss_report(y, y_pred, sample_weight, term_losses)

    def _check_labels(self, x, y, where):
        pass  # the step checks the labels against the new head (its traced shape)
