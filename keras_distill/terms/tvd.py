"""Total variation distance, `0.5 * sum |p_t - p_s|`, `T^2`-scaled.

A bounded, symmetric distance between the two distributions (in [0, 1] before
the `T^2` factor), used as a distillation objective for language models by
Wen et al. (f-divergence minimisation for sequence-level KD).

Reference: Wen, Li, Du and Mou, "f-Divergence Minimization for
Sequence-Level Knowledge Distillation", ACL 2023
(https://arxiv.org/abs/2307.15190).
"""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import softened_log_probs
from keras_distill.terms.registry import register


def tvd_loss(teacher_logits, student_logits, temperature=1.0):
    """`T^2 * 0.5 * sum |softmax(t / T) - softmax(s / T)|`, one value per row.

    In float32, over the last axis.

    Reference: Wen et al., "f-Divergence Minimization for Sequence-Level
    Knowledge Distillation", ACL 2023 (https://arxiv.org/abs/2307.15190).

    Args:
        teacher_logits: Teacher logits, `(..., classes)`.
        student_logits: Student logits of the same shape.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.

    Returns:
        A float32 tensor of the logits' shape without the last axis.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[20.0, 0.0]])
    >>> s = np.array([[0.0, 20.0]])
    >>> round(float(tvd_loss(t, s)[0]), 4)
    1.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    p_t = ops.exp(softened_log_probs(teacher_logits, temperature))
    p_s = ops.exp(softened_log_probs(student_logits, temperature))
    return ops.square(temperature) * 0.5 * ops.sum(ops.abs(p_t - p_s), axis=-1)


@register("tvd")
class TVDTerm(DistillationTerm):
    """Total variation distance of the softened distributions, `T^2`-scaled.

    `0.5 * sum |p_t - p_s|`: bounded and symmetric; its gradient does not
    grow where either model gives a class (token) little mass.

    Reference: Wen, Li, Du and Mou, "f-Divergence Minimization for
    Sequence-Level Knowledge Distillation", ACL 2023
    (https://arxiv.org/abs/2307.15190).

    Args:
        name: Defaults to `"tvd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss="tvd")
    ```
    """

    default_name = "tvd"
    reads = ("logits",)
    uses_temperature = True

    def call(self, teacher, student, labels=None, temperature=None):
        return tvd_loss(teacher, student, 1.0 if temperature is None else temperature)
