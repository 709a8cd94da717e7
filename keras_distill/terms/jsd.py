"""Generalized Jensen-Shannon divergence JSD(beta), GKD's divergence.

With the mixture `m = beta * p_t + (1 - beta) * p_s`,
`JSD(beta) = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`. It is bounded,
symmetric at `beta = 0.5`, and interpolates between the two KL directions:
`JSD(beta) / beta -> KL(p_t || p_s)` as `beta -> 0` and
`JSD(beta) / (1 - beta) -> KL(p_s || p_t)` as `beta -> 1`. As in TRL's GKD
trainer, `beta = 0` and `beta = 1` are those two limits (forward and reverse
KL), not the vanishing value.

Reference: Agarwal, Vieillard, Zhou, Stanczyk, Ramos, Geist and Bachem,
"On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", ICLR 2024 (https://arxiv.org/abs/2306.13649).
"""

from keras import ops

from keras_distill import params as kd_params
from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import (
    kl_of_log_probs,
    log_mixture,
    softened_log_probs,
)
from keras_distill.terms.registry import register


def jsd_loss(teacher_logits, student_logits, temperature=1.0, beta=0.5):
    """`T^2 * JSD(beta)` of the softened distributions, one value per row.

    `beta = 0` is the forward KL `KL(p_t || p_s)` and `beta = 1` the reverse
    KL `KL(p_s || p_t)` (the limits of `JSD(beta)` divided by `beta`, resp.
    `1 - beta`); in between, `beta * KL(p_t || m) + (1 - beta) * KL(p_s ||
    m)` with `m = beta p_t + (1 - beta) p_s`. In log space and float32, over
    the last axis.

    Reference: Agarwal et al., "On-Policy Distillation of Language Models",
    ICLR 2024 (https://arxiv.org/abs/2306.13649).

    Args:
        teacher_logits: Teacher logits, `(..., classes)`.
        student_logits: Student logits of the same shape.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        beta: The teacher's share of the mixture, a Python float in
            `[0, 1]`. Defaults to `0.5`.

    Returns:
        A float32 tensor of the logits' shape without the last axis.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> round(float(jsd_loss(t, t, beta=0.5)[0]), 6)
    0.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    log_t = softened_log_probs(teacher_logits, temperature)
    log_s = softened_log_probs(student_logits, temperature)
    beta = float(beta)
    if beta == 0.0:
        value = kl_of_log_probs(log_t, log_s)
    elif beta == 1.0:
        value = kl_of_log_probs(log_s, log_t)
    else:
        log_m = log_mixture(log_t, log_s, beta)
        value = beta * kl_of_log_probs(log_t, log_m) + (1.0 - beta) * (
            kl_of_log_probs(log_s, log_m)
        )
    return ops.square(temperature) * value


@register("jsd")
class JSDTerm(DistillationTerm):
    """Generalized JSD(beta) of teacher and student (GKD), `T^2`-scaled.

    `beta` is the teacher's share of the mixture: 0.5 is the symmetric
    Jensen-Shannon divergence (bounded by `log 2`), `beta = 0` the forward KL
    (Hinton's KD term) and `beta = 1` the reverse KL (MiniLLM), as in TRL's
    GKD trainer. GKD found JSD(0.9) and the reverse KL best for on-policy
    distillation of summarisation and translation models.

    Reference: Agarwal, Vieillard, Zhou, Stanczyk, Ramos, Geist and Bachem,
    "On-Policy Distillation of Language Models: Learning from Self-Generated
    Mistakes", ICLR 2024 (https://arxiv.org/abs/2306.13649).

    Args:
        beta: The teacher's share of the mixture, in `[0, 1]`. Defaults to
            `0.5`.
        name: Defaults to `"jsd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss=kd.terms.JSDTerm(beta=0.9))
    ```
    """

    default_name = "jsd"
    reads = ("logits",)
    uses_temperature = True

    def __init__(self, beta=0.5, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = kd_params.Param("beta", 0.5, 0.0, 1.0).check(beta)

    def call(self, teacher, student, labels=None, temperature=None):
        temperature = 1.0 if temperature is None else temperature
        return jsd_loss(teacher, student, temperature, self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
