"""Probabilistic knowledge transfer (Passalis and Tefas, ECCV 2018)."""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _flat, _normalize_rows
from keras_distill.terms.registry import register


def pkt_loss(teacher_features, student_features, epsilon: float = 1e-7):
    """Probabilistic knowledge transfer (PKT), one value per example.

    Each model's features define conditional probabilities with the cosine
    kernel `K(a, b) = (cos(a, b) + 1) / 2`: `p_{j|i} = K(x_i, x_j) /
    sum_{k != i} K(x_i, x_k)` for `j != i`. Example `i` gets
    `KL(p_{.|i} || q_{.|i}) = sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i})`
    (teacher `p`, student `q`); the paper's loss is their sum over `i`.

    Reference: Passalis and Tefas, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV 2018
    (https://arxiv.org/abs/1803.10837), eq. 9-11.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features (any width).
        epsilon: Guards the logarithm. Defaults to `1e-7`.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """

    def conditional(features):
        x = _normalize_rows(_flat(features))
        kernel = (ops.matmul(x, ops.transpose(x)) + 1.0) / 2.0
        kernel = kernel * (1.0 - ops.eye(ops.shape(x)[0], dtype="float32"))
        return kernel / ops.maximum(ops.sum(kernel, axis=-1, keepdims=True), epsilon)

    p = ops.stop_gradient(conditional(teacher_features))
    q = conditional(student_features)
    return ops.sum(p * (ops.log(p + epsilon) - ops.log(q + epsilon)), axis=-1)


@register("pkt")
class PKTTerm(DistillationTerm):
    """Probabilistic knowledge transfer (`pkt_loss`; Passalis and Tefas, 2018).

    Args:
        name: Defaults to `"pkt"`.

    Example:

    ```python
    hint = kd.hints.Hint("flatten", "flatten", loss=kd.losses.PKTTerm(),
                         adaptor=None)
    ```
    """

    default_name = "pkt"
    relational = True

    def call(self, teacher, student, labels=None, temperature=None):
        return pkt_loss(teacher, student)
