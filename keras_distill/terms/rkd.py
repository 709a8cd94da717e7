"""Relational knowledge distillation, distance and angle (Park et al., CVPR 2019)."""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _NORM_EPSILON, _flat
from keras_distill.terms.registry import register


def _smooth_l1(x):
    """Huber loss with delta 1 (PyTorch's `smooth_l1_loss`), elementwise."""
    absolute = ops.abs(x)
    return ops.where(absolute < 1.0, 0.5 * ops.square(x), absolute - 0.5)


def _pairwise_distances(x):
    """`(b, b)` Euclidean distances between the rows of `x`."""
    squared = ops.sum(ops.square(x), axis=-1)
    gram = ops.matmul(x, ops.transpose(x))
    d2 = ops.expand_dims(squared, 0) + ops.expand_dims(squared, 1) - 2.0 * gram
    # Clipped away from 0, where sqrt's derivative is infinite (as RKD's code).
    d = ops.sqrt(ops.maximum(d2, 1e-12))
    return d * (1.0 - ops.eye(ops.shape(x)[0], dtype="float32"))


def rkd_distance_loss(teacher_features, student_features):
    """RKD distance-wise term, one value per example.

    Pairwise distances `psi_D(x_i, x_j) = ||x_i - x_j|| / mu`, each model's
    normalised by its mean distance `mu` over pairs `i != j`, are matched
    with the Huber loss: example `i` gets `mean_j huber(psi_S(i, j) -
    psi_T(i, j))`, so the batch mean is the paper's mean over all pairs.
    Features are flattened. The paper weights this term by 25 (set it with
    `distillation_loss_weights` or `Hint(weight=)`).

    Reference: Park, Kim, Lu and Cho, "Relational Knowledge Distillation",
    CVPR 2019 (https://arxiv.org/abs/1904.05068), eq. 4-5.

    Args:
        teacher_features: `(batch, ...)` teacher features or embeddings.
        student_features: `(batch, ...)` student features (any width).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """

    def normalised(features):
        d = _pairwise_distances(_flat(features))
        b = ops.cast(ops.shape(d)[0], "float32")
        mu = ops.sum(d) / ops.maximum(b * (b - 1.0), 1.0)
        return d / ops.maximum(mu, _NORM_EPSILON)

    teacher = ops.stop_gradient(normalised(teacher_features))
    return ops.mean(_smooth_l1(normalised(student_features) - teacher), axis=-1)


def rkd_angle_loss(teacher_features, student_features):
    """RKD angle-wise term, one value per example.

    For each anchor `j` and pair `(i, k)`, the cosine of the angle at `x_j`,
    `<e_ij, e_kj>` with `e_ij = (x_i - x_j) / ||x_i - x_j||`, is matched with
    the Huber loss; example `j` gets the mean over `(i, k)`, so the batch
    mean is the paper's mean over all triplets (terms with `i = j` or `k = j`
    are 0 for both models). The paper weights this term by 50.

    Reference: Park, Kim, Lu and Cho, "Relational Knowledge Distillation",
    CVPR 2019 (https://arxiv.org/abs/1904.05068), eq. 6-7.

    Args:
        teacher_features: `(batch, ...)` teacher features or embeddings.
        student_features: `(batch, ...)` student features (any width).

    Returns:
        A float32 tensor of shape `(batch,)`. Memory grows as `batch^2 *
        width`.
    """

    def angles(features):
        x = _flat(features)
        # diff[j, i] = x_i - x_j
        diff = ops.expand_dims(x, 0) - ops.expand_dims(x, 1)
        norm = ops.sqrt(ops.sum(ops.square(diff), axis=-1, keepdims=True))
        unit = diff / ops.maximum(norm, _NORM_EPSILON)
        return ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))  # [j, i, k]

    teacher = ops.stop_gradient(angles(teacher_features))
    loss = _smooth_l1(angles(student_features) - teacher)
    return ops.mean(ops.reshape(loss, (ops.shape(loss)[0], -1)), axis=-1)


@register("rkd_distance")
class RKDDistanceTerm(DistillationTerm):
    """RKD distance-wise term (`rkd_distance_loss`; Park et al., CVPR 2019).

    Args:
        name: Defaults to `"rkd_distance"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, hints=[
        kd.hints.Hint("flatten", "hidden", loss=kd.losses.RKDDistanceTerm(),
                      weight=25.0, adaptor=None)])
    ```
    """

    default_name = "rkd_distance"
    relational = True

    def call(self, teacher, student, labels=None, temperature=None):
        return rkd_distance_loss(teacher, student)


@register("rkd_angle")
class RKDAngleTerm(DistillationTerm):
    """RKD angle-wise term (`rkd_angle_loss`; Park et al., CVPR 2019).

    Args:
        name: Defaults to `"rkd_angle"`.

    Example:

    ```python
    hints = [kd.hints.Hint("flatten", "flatten", loss=kd.losses.RKDDistanceTerm(),
                           weight=25.0, adaptor=None),
             kd.hints.Hint("flatten", "flatten", loss=kd.losses.RKDAngleTerm(),
                           weight=50.0, adaptor=None)]
    ```
    """

    default_name = "rkd_angle"
    relational = True

    def call(self, teacher, student, labels=None, temperature=None):
        return rkd_angle_loss(teacher, student)
