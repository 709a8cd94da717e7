"""Similarity-preserving knowledge distillation (Tung and Mori, ICCV 2019)."""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _flat, _normalize_rows
from keras_distill.terms.registry import register


def similarity_preserving_loss(teacher_features, student_features):
    """Similarity-preserving KD (SP), one value per example.

    `G = Q Q^T` for the flattened features `Q` (batch x batch), each row
    L2-normalised; the loss is `||G_T - G_S||_F^2 / b^2`. Example `i` gets
    `sum_j (G_T - G_S)_ij^2 / b`, so the batch mean is the paper's value. The
    paper weights this term by 3000.

    Reference: Tung and Mori, "Similarity-Preserving Knowledge Distillation",
    ICCV 2019 (https://arxiv.org/abs/1907.09682), eq. 2-4.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features (any shape).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """

    def similarity(features):
        x = _flat(features)
        return _normalize_rows(ops.matmul(x, ops.transpose(x)))

    diff = similarity(student_features) - ops.stop_gradient(
        similarity(teacher_features)
    )
    b = ops.cast(ops.shape(diff)[0], "float32")
    return ops.sum(ops.square(diff), axis=-1) / b


@register("sp")
class SimilarityPreservingTerm(DistillationTerm):
    """Similarity-preserving KD (`similarity_preserving_loss`; Tung and Mori 2019).

    Args:
        name: Defaults to `"sp"`.

    Example:

    ```python
    hint = kd.hints.Hint("conv2", "conv1", loss=kd.losses.SimilarityPreservingTerm(),
                         weight=3000.0, adaptor=None)
    ```
    """

    default_name = "sp"
    relational = True

    def call(self, teacher, student, labels=None, temperature=None):
        return similarity_preserving_loss(teacher, student)
