"""Skew KL and skew reverse KL (DistiLLM): KL against a mixture of both models.

`SKL(skew) = KL(p_t || skew * p_t + (1 - skew) * p_s)` and
`SRKL(skew) = KL(p_s || skew * p_s + (1 - skew) * p_t)`. Mixing a little of
the first distribution into the second keeps the divergence and its gradient
bounded where the second is near zero (DistiLLM's argument for stable
optimisation); `skew = 0` is the plain KL, forward or reverse.

Reference: Ko, Kim, Chen and Yun, "DistiLLM: Towards Streamlined Distillation
for Large Language Models", ICML 2024 (https://arxiv.org/abs/2402.03898).
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


def skew_kl_loss(
    teacher_logits, student_logits, temperature=1.0, skew=0.1, reverse=False
):
    """`T^2` times DistiLLM's skew KL (or, with `reverse`, skew reverse KL).

    Forward: `KL(p_t || skew p_t + (1 - skew) p_s)`; reverse:
    `KL(p_s || skew p_s + (1 - skew) p_t)`. In log space and float32, over
    the last axis. `skew = 0` is the plain KL; `skew = 1` is 0.

    Reference: Ko et al., "DistiLLM", ICML 2024
    (https://arxiv.org/abs/2402.03898).

    Args:
        teacher_logits: Teacher logits, `(..., classes)`.
        student_logits: Student logits of the same shape.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        skew: The first distribution's share of the mixture, a Python float
            in `[0, 1]`. Defaults to `0.1` (the paper's).
        reverse: The skew reverse KL. Defaults to `False`.

    Returns:
        A float32 tensor of the logits' shape without the last axis.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> round(float(skew_kl_loss(t, t)[0]), 6)
    0.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    log_t = softened_log_probs(teacher_logits, temperature)
    log_s = softened_log_probs(student_logits, temperature)
    first, second = (log_s, log_t) if reverse else (log_t, log_s)
    skew = float(skew)
    if skew == 1.0:
        value = ops.zeros_like(first[..., 0])
    else:
        mixed = second if skew == 0.0 else log_mixture(first, second, skew)
        value = kl_of_log_probs(first, mixed)
    return ops.square(temperature) * value


class _SkewTerm(DistillationTerm):
    reads = ("logits",)
    uses_temperature = True
    reverse = False

    def __init__(self, skew=0.1, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.skew = kd_params.Param("skew", 0.1, 0.0, 1.0).check(skew)
        if self.skew == 1.0:
            # The mixture is then the first distribution itself: KL 0 for any
            # student, so the term would teach nothing without a word.
            raise ValueError(
                f"`skew` must be in [0, 1) for a {self.default_name} term: at 1 the "
                "divergence is 0 for every student (nothing is distilled). The "
                "paper uses 0.1. Received: skew=1.0"
            )

    def call(self, teacher, student, labels=None, temperature=None):
        temperature = 1.0 if temperature is None else temperature
        return skew_kl_loss(teacher, student, temperature, self.skew, self.reverse)

    def get_config(self):
        return {**super().get_config(), "skew": self.skew}


@register("skew_kl")
class SkewKLTerm(_SkewTerm):
    """DistiLLM's skew KL, `T^2 * KL(p_t || skew p_t + (1 - skew) p_s)`.

    The forward KL against a mixture that keeps `skew` of the teacher, so
    the value and gradient stay bounded where the student gives a teacher's
    token almost no mass. `skew = 0` is Hinton's KD term.

    Reference: Ko, Kim, Chen and Yun, "DistiLLM: Towards Streamlined
    Distillation for Large Language Models", ICML 2024
    (https://arxiv.org/abs/2402.03898).

    Args:
        skew: The teacher's share of the mixture, in `[0, 1]`. Defaults to
            `0.1` (the paper's).
        name: Defaults to `"skew_kl"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss=kd.terms.SkewKLTerm(skew=0.1))
    ```
    """

    default_name = "skew_kl"


@register("skew_reverse_kl")
class SkewReverseKLTerm(_SkewTerm):
    """DistiLLM's skew reverse KL, `T^2 * KL(p_s || skew p_s + (1 - skew) p_t)`.

    The reverse KL (mode-seeking, as MiniLLM's) against a mixture that keeps
    `skew` of the student; `skew = 0` is the plain reverse KL.

    Reference: Ko, Kim, Chen and Yun, "DistiLLM: Towards Streamlined
    Distillation for Large Language Models", ICML 2024
    (https://arxiv.org/abs/2402.03898).

    Args:
        skew: The student's share of the mixture, in `[0, 1]`. Defaults to
            `0.1` (the paper's).
        name: Defaults to `"skew_reverse_kl"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss="skew_reverse_kl")
    ```
    """

    default_name = "skew_reverse_kl"
    reverse = True
