"""Reverse KL, `T^2 * KL(p_student^T || p_teacher^T)`: mode-seeking distillation.

The forward KL of Hinton's KD makes the student cover every mode of the
teacher; the reverse KL makes it put its mass where the teacher's is and
leave the rest, which suits a small student of a language model (MiniLLM).

Reference: Gu, Dong, Wei and Huang, "MiniLLM: Knowledge Distillation of Large
Language Models", ICLR 2024 (https://arxiv.org/abs/2306.08543).
"""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import kl_of_log_probs, softened_log_probs
from keras_distill.terms.registry import register


def reverse_kl_loss(teacher_logits, student_logits, temperature=1.0):
    """`T^2 * KL(softmax(s / T) || softmax(t / T))`, one value per row.

    In log space and float32, over the last axis (classes, or a language
    model's vocabulary: `(batch, seq, vocab)` gives `(batch, seq)`).

    Reference: Gu et al., "MiniLLM", ICLR 2024
    (https://arxiv.org/abs/2306.08543).

    Args:
        teacher_logits: Teacher logits, `(..., classes)`.
        student_logits: Student logits of the same shape.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.

    Returns:
        A float32 tensor of the logits' shape without the last axis.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(reverse_kl_loss(t, t)[0])
    0.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    log_t = softened_log_probs(teacher_logits, temperature)
    log_s = softened_log_probs(student_logits, temperature)
    return ops.square(temperature) * kl_of_log_probs(log_s, log_t)


@register("reverse_kl")
class ReverseKLTerm(DistillationTerm):
    """Reverse KL, `T^2 * KL(p_s || p_t)` (MiniLLM's token-level objective).

    Mode-seeking: the student is pushed away from classes (tokens) the
    teacher finds unlikely rather than made to spread over all the teacher's
    modes. With a language model, use `temperature=1.0`.

    Reference: Gu, Dong, Wei and Huang, "MiniLLM: Knowledge Distillation of
    Large Language Models", ICLR 2024 (https://arxiv.org/abs/2306.08543).

    Args:
        name: Defaults to `"reverse_kl"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=1.0,
                             distillation_loss="reverse_kl")
    ```
    """

    default_name = "reverse_kl"
    reads = ("logits",)
    uses_temperature = True

    def call(self, teacher, student, labels=None, temperature=None):
        return reverse_kl_loss(
            teacher, student, 1.0 if temperature is None else temperature
        )
