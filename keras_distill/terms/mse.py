"""Squared error between outputs (logits or features): Ba & Caruana 2014;
FitNets' hint distance (Romero et al., ICLR 2015).
"""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.registry import register


def logit_mse_loss(teacher_logits, student_logits):
    """Mean squared error between logits, one value per example.

    Matching logits directly is the high-temperature limit of the KD term
    (Hinton et al. 2015, section 2.1; Ba & Caruana, "Do Deep Nets Really
    Need to be Deep?", 2014).

    Args:
        teacher_logits: `(batch, num_classes)` teacher logits.
        student_logits: `(batch, num_classes)` student logits.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    diff = ops.cast(student_logits, "float32") - ops.cast(teacher_logits, "float32")
    return ops.mean(ops.square(diff), axis=-1)


def hint_loss(teacher_features, student_features):
    """FitNets' hint term: mean squared error between features, per example.

    The student's (adapted) features are regressed onto the teacher's hint
    features; the squared error is averaged over all non-batch axes (for
    image features: height, width and channels). Reduce the result over the
    batch with `reduce_per_example`, like the other terms.

    Reference: Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets:
    Hints for Thin Deep Nets", ICLR 2015 (https://arxiv.org/abs/1412.6550).

    Args:
        teacher_features: Teacher hint features, shape `(batch, ...)`.
        student_features: Student features of the same shape (after the
            adaptor, if any).

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.ones((2, 4, 4, 3), "float32")
    >>> [float(v) for v in hint_loss(t, 0.5 * t)]
    [0.25, 0.25]

    ```
    """
    teacher = ops.cast(teacher_features, "float32")
    student = ops.cast(student_features, "float32")
    if teacher.shape[1:] != student.shape[1:] and None not in (
        *teacher.shape[1:],
        *student.shape[1:],
    ):
        raise ValueError(
            "Hint features must have the same shape (use an adaptor when they "
            f"differ). Received: teacher features of shape {teacher.shape}, "
            f"student features of shape {student.shape}."
        )
    diff = ops.reshape(student - teacher, (ops.shape(student)[0], -1))
    return ops.mean(ops.square(diff), axis=-1)


@register("mse")
class LogitMSETerm(DistillationTerm):
    """Squared error, averaged over the non-batch axes; ignores the temperature.

    `"mse"` means this term everywhere: between logits (`logit_mse_loss`,
    the high-temperature limit of KD) as `distillation_loss="mse"`, and
    between features (`hint_loss`, the FitNets hint) as `Hint(loss="mse")`.
    On `(batch, classes)` logits the two are the same value.

    Args:
        name: Defaults to `"mse"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, distillation_loss=["kd", "mse"],
                             distillation_loss_weights=[1.0, 0.1])
    ```
    """

    default_name = "mse"
    elementwise = True

    def call(self, teacher, student, labels=None, temperature=None):
        return hint_loss(teacher, student)


MSETerm = LogitMSETerm
