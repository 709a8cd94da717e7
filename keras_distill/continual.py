"""Lifelong learning: Learning without Forgetting on top of the Distiller.

A model trained on task 1 becomes the teacher for task 2. The new model keeps
the old model's trunk and head and adds a new head; on the new task's data,
the old head is distilled towards the old model's recorded responses (so
what it knew is kept) while the new head learns the new labels.

Reference: Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI
2017 (https://arxiv.org/abs/1606.09282).
"""

import keras

from keras_distill.distiller import Distiller


def add_task_head(model, num_classes, name="new_task"):
    """A copy of `model` with a second head for a new task.

    The copy shares nothing with `model` (which stays the frozen teacher):
    its trunk (every layer but the last) and old head start from `model`'s
    weights, and a new `Dense(num_classes)` head reads the trunk's features.

    Args:
        model: A trained functional or Sequential `keras.Model` whose last
            layer is its classification head.
        num_classes: Number of classes of the new task.
        name: Name of the new head (and prefix of the model name).
            Defaults to `"new_task"`.

    Returns:
        A `keras.Model` with outputs `[old_head, new_head]`.

    Example:

    ```python
    two_heads = kd.continual.add_task_head(old_model, num_classes=5)
    ```
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            "`model` must be a built functional or Sequential keras.Model (its "
            f"layers are reused). Received: {model!r}"
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 1
    ):
        raise ValueError(
            "`num_classes` must be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    features = clone.layers[-2].output
    old_head = clone.layers[-1].output
    new_head = keras.layers.Dense(num_classes, name=name)(features)
    return keras.Model(clone.inputs, [old_head, new_head], name=f"{model.name}_{name}")


@keras.saving.register_keras_serializable(package="keras_distill")
class LearningWithoutForgetting(Distiller):
    """Learns a new task without forgetting the old one (LwF).

    `student` has two outputs, `[old_head, new_head]` (see
    `add_task_head`); `teacher` is the old model. On new-task batches
    `(x, y_new)`, the loss is

    `alpha * CE(y_new, new_head) + (1 - alpha) * T^2 * KL(old(x)/T || old_head/T)`

    Li and Hoiem weight the two terms equally (`alpha=0.5`) with `T=2`.
    `alpha=1` is plain fine-tuning of the shared trunk (the old head is left
    to drift), the baseline LwF improves on. Compiled metrics and
    `predict()`'s second output refer to the new head; `predict()` returns
    both heads.

    Args:
        student: A two-output model `[old_head, new_head]`.
        teacher: The model trained on the old task (frozen).
        alpha: Weight of the new task's loss. Defaults to `0.5`.
        temperature: Temperature of the old-task KD term. Defaults to `2.0`.
        **kwargs: Passed to `Distiller`.

    Example:

    ```python
    student = kd.continual.add_task_head(old_model, num_classes=5)
    lwf = kd.continual.LearningWithoutForgetting(student, old_model)
    lwf.compile(optimizer="adam", metrics=["accuracy"])
    lwf.fit(x_task2, y_task2, epochs=10)
    old_logits, new_logits = lwf.predict(x)
    ```
    """

    def __init__(self, student, teacher, alpha=0.5, temperature=2.0, **kwargs):
        outputs = getattr(student, "outputs", None)
        if outputs is not None and len(outputs) != 2:
            raise ValueError(
                "`student` must have two outputs, [old_head, new_head] (see "
                f"`add_task_head`). Received a model with {len(outputs)} output(s)."
            )
        super().__init__(
            student, teacher, alpha=alpha, temperature=temperature, **kwargs
        )

    def soft_predictions(self, y_pred):
        return y_pred[0]

    def hard_predictions(self, y_pred):
        return y_pred[1]

    def _check_labels(self, x, y, where):
        pass  # the new head's class count is checked by the loss itself
