"""Decoupled knowledge distillation (Zhao et al., CVPR 2022)."""

from keras import ops

from keras_distill import params as kd_params
from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _NEG_LARGE, _check_bool, _maybe_standardize
from keras_distill.terms.registry import register


def dkd_loss(
    teacher_logits,
    student_logits,
    labels,
    temperature=1.0,
    alpha=1.0,
    beta=8.0,
):
    """Decoupled Knowledge Distillation, one value per example.

    Splits the KD term into target-class KD (TCKD: the binary distribution
    "true class vs the rest") and non-target-class KD (NCKD: the distribution
    over the other classes), weighted separately:
    `T^2 * (alpha * TCKD + beta * NCKD)`.

    Reference: Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge
    Distillation", CVPR 2022 (https://arxiv.org/abs/2203.08679). The paper's
    warm-up of the KD weight is a schedule on the Distiller's `alpha` (see
    `keras_distill.callbacks.ParameterScheduler`).

    Args:
        teacher_logits: `(batch, num_classes)` teacher logits.
        student_logits: `(batch, num_classes)` student logits.
        labels: `(batch,)` integer true classes.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        alpha: Weight of TCKD. Defaults to `1.0`.
        beta: Weight of NCKD. Defaults to `8.0` (the paper's CIFAR setting).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    temperature = ops.cast(temperature, "float32")
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    mask = ops.cast(ops.one_hot(labels, ops.shape(t)[-1]), "bool")
    t_log_p, s_log_p = ops.log_softmax(t, -1), ops.log_softmax(s, -1)

    def binary(log_p):
        log_target = ops.sum(ops.where(mask, log_p, 0.0), axis=-1)
        log_other = ops.logsumexp(ops.where(mask, _NEG_LARGE, log_p), axis=-1)
        return ops.stack([log_target, log_other], axis=-1)

    t_bin, s_bin = binary(t_log_p), binary(s_log_p)
    tckd = ops.sum(ops.exp(t_bin) * (t_bin - s_bin), axis=-1)
    t_non = ops.log_softmax(ops.where(mask, _NEG_LARGE, t), -1)
    s_non = ops.log_softmax(ops.where(mask, _NEG_LARGE, s), -1)
    nckd = ops.sum(ops.where(mask, 0.0, ops.exp(t_non) * (t_non - s_non)), axis=-1)
    return ops.square(temperature) * (alpha * tckd + beta * nckd)


@register("dkd")
class DKDTerm(DistillationTerm):
    """Decoupled KD, `T^2 * (alpha * TCKD + beta * NCKD)` (`dkd_loss`).

    Needs labels. The paper warms the term up over its first 20 epochs
    (weight `min(epoch / 20, 1)`): give the distiller
    `distillation_loss_weights=[...]` and schedule the `"dkd_weight"`
    variable (see `docs/terms.md`).

    Reference: Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge
    Distillation", CVPR 2022 (https://arxiv.org/abs/2203.08679).

    Args:
        alpha: Weight of TCKD (not the distiller's `alpha`). Defaults to `1.0`.
        beta: Weight of NCKD. Defaults to `8.0`.
        standardize: Z-score the logits first (Sun et al., CVPR 2024).
            Defaults to `False`.
        name: Defaults to `"dkd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, alpha=0.5,
                             distillation_loss=kd.losses.DKDTerm(beta=2.0))
    ```
    """

    default_name = "dkd"
    reads = ("logits",)
    needs_labels = True
    uses_temperature = True

    def __init__(self, alpha=1.0, beta=8.0, standardize=False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = kd_params.Param("alpha", 1.0, 0.0).check(alpha)
        self.beta = kd_params.Param("beta", 8.0, 0.0).check(beta)
        self.standardize = _check_bool(standardize, "standardize")

    def call(self, teacher, student, labels=None, temperature=None):
        teacher, student = _maybe_standardize(self.standardize, teacher, student)
        temperature = 1.0 if temperature is None else temperature
        return dkd_loss(teacher, student, labels, temperature, self.alpha, self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "standardize": self.standardize,
        }
