"""DIST: knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022).

Matches the *relations* of the softened predictions rather than their values:
the Pearson correlation of teacher and student probabilities across the
classes of each example (inter-class) and across the examples of each class
(intra-class), so a student need not reproduce a much stronger teacher's
exact probabilities.

Reference: Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A
Stronger Teacher", NeurIPS 2022 (https://arxiv.org/abs/2205.10536).
"""

from keras import ops

from keras_distill import params as kd_params
from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.registry import register

_EPSILON = 1e-8


def _pearson_distance(a, b, axis):
    """`1 - pearson(a, b)` along `axis` (the authors' cosine of the centred)."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    cosine = ops.sum(a * b, axis=axis) / (
        ops.sqrt(ops.sum(ops.square(a), axis=axis))
        * ops.sqrt(ops.sum(ops.square(b), axis=axis))
        + _EPSILON
    )
    return 1.0 - cosine


def dist_loss(teacher_logits, student_logits, temperature=1.0, beta=1.0, gamma=1.0):
    """The DIST loss, one value per example.

    With `p = softmax(logits / T)`, example `i` gets
    `T^2 * (beta * (1 - pearson(p_s[i, :], p_t[i, :])) + gamma * intra)`,
    where `intra = mean_j (1 - pearson(p_s[:, j], p_t[:, j]))` is the
    intra-class relation of the whole batch (the same for every example), so
    the batch mean is the paper's `beta * L_inter + gamma * L_intra`.

    Args:
        teacher_logits: `(batch, num_classes)` teacher logits.
        student_logits: `(batch, num_classes)` student logits.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        beta: Weight of the inter-class relation. Defaults to `1.0`.
        gamma: Weight of the intra-class relation. Defaults to `1.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```pycon
    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0], [1.0, 3.0, 0.0]], "float32")
    >>> [round(float(v), 4) for v in dist_loss(z, z)]
    [0.0, 0.0, 0.0]

    ```
    """
    temperature = ops.cast(temperature, "float32")
    p_t = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    p_s = ops.softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    inter = _pearson_distance(p_s, p_t, axis=-1)
    intra = ops.mean(_pearson_distance(p_s, p_t, axis=0))
    return ops.square(temperature) * (beta * inter + gamma * intra)


@register("dist")
class DISTTerm(DistillationTerm):
    """DIST: Pearson-correlation relations of the softened predictions.

    `T^2 * (beta * L_inter + gamma * L_intra)` (`dist_loss`): the
    inter-class relation matches each example's ranking of the classes, the
    intra-class relation each class's ranking of the examples (which makes
    the term relational: an example's value depends on its batch). It uses
    the distiller's temperature; the paper uses `T = 1` on ImageNet and 4 on
    CIFAR-100, with `beta = gamma = 1` (2 for the stronger settings).

    Reference: Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A
    Stronger Teacher", NeurIPS 2022 (https://arxiv.org/abs/2205.10536).

    Args:
        beta: Weight of the inter-class relation, >= 0. Defaults to `1.0`.
        gamma: Weight of the intra-class relation, >= 0. Defaults to `1.0`.
        name: Defaults to `"dist"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss=kd.terms.DISTTerm(beta=2.0))
    ```
    """

    default_name = "dist"
    reads = ("logits",)
    uses_temperature = True
    relational = True

    def __init__(self, beta=1.0, gamma=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = kd_params.Param("beta", 1.0, 0.0).check(beta)
        self.gamma = kd_params.Param("gamma", 1.0, 0.0).check(gamma)

    def call(self, teacher, student, labels=None, temperature=None):
        temperature = 1.0 if temperature is None else temperature
        return dist_loss(teacher, student, temperature, self.beta, self.gamma)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma}
