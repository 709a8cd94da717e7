"""Hinton's knowledge distillation: `T^2 * KL(p_teacher^T || p_student^T)`.

Reference: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015 (https://arxiv.org/abs/1503.02531).
"""

import keras
from keras import ops

from keras_distill.targets import TOPK_INDICES_KEY, TOPK_LOGITS_KEY, TOPK_REST_KEY
from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import (
    _NEG_LARGE,
    _check_bool,
    _maybe_standardize,
    _num_replicas,
    _rank,
)
from keras_distill.terms.registry import register


def kd_loss(teacher_logits, student_logits, temperature=1.0, closed_form_gradient=True):
    """Hinton's knowledge-distillation term, one value per example.

    Computes `T^2 * KL(softmax(teacher / T) || softmax(student / T))` in log
    space and in float32. The `T^2` factor keeps the gradient magnitude of the
    soft term comparable to the hard-label term as `T` changes.

    Reference: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
    Network", 2015 (https://arxiv.org/abs/1503.02531).

    Args:
        teacher_logits: Teacher logits, shape `(batch, num_classes)`.
        student_logits: Student logits, shape `(batch, num_classes)`.
        temperature: Softmax temperature `T > 0`, a float or scalar tensor.
            Defaults to `1.0`.
        closed_form_gradient: Use the closed-form gradients for teacher and
            student (faster; no gradient reaches `temperature`). `False`
            differentiates the formula, also with respect to a learned
            temperature (CTKD). Defaults to `True`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(kd_loss(t, t, temperature=4.0)[0])
    0.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    if not closed_form_gradient:
        teacher_log_p = ops.log_softmax(
            ops.cast(teacher_logits, "float32") / temperature, axis=-1
        )
        student_log_p = ops.log_softmax(
            ops.cast(student_logits, "float32") / temperature, axis=-1
        )
        kl = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), -1)
        return ops.square(temperature) * kl

    return _closed_form_kd(teacher_logits, student_logits, temperature, mean=False)


def _closed_form_kd(teacher_logits, student_logits, temperature, mean):
    """`kd_loss` (or, with `mean`, its batch mean) with closed-form gradients.

    The gradients, `T * (q - p)` for the student and `T * p * (log p - log q
    - KL)` for the teacher (p, q the softened distributions; divided by the
    batch size for the mean), cost a few fused ops instead of autodiff
    through both log-softmaxes and the mean: this term runs in every
    training step. No gradient reaches `temperature` (a float32 tensor).
    """

    @ops.custom_gradient
    def loss(teacher, student):
        teacher_log_p = ops.log_softmax(teacher / temperature, axis=-1)
        student_log_p = ops.log_softmax(student / temperature, axis=-1)
        teacher_p = ops.exp(teacher_log_p)
        log_ratio = teacher_log_p - student_log_p
        kl = ops.sum(teacher_p * log_ratio, axis=-1)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if mean:
                batch = ops.cast(ops.shape(student)[0], "float32")
                scale = upstream * temperature / batch
            else:
                scale = ops.expand_dims(upstream, -1) * temperature
            d_student = scale * (ops.exp(student_log_p) - teacher_p)
            d_teacher = scale * teacher_p * (log_ratio - ops.expand_dims(kl, -1))
            return d_teacher, d_student

        values = ops.square(temperature) * kl
        # The mean of the per-example values, bit for bit.
        return (ops.mean(values) if mean else values), grad

    return loss(
        ops.cast(teacher_logits, "float32"), ops.cast(student_logits, "float32")
    )


def kd_mean_loss(teacher_logits, student_logits, temperature=1.0):
    """The batch mean of `kd_loss`, a scalar, with a fused closed-form gradient.

    The same value, bit for bit, as `ops.mean(kd_loss(teacher_logits,
    student_logits, temperature))`. Its gradient, `T / batch * (q - p)` for
    the student and `T / batch * p * (log p - log q - KL)` for the teacher,
    is given in one step instead of through the mean's own gradient (which
    reshapes, tiles and divides by the batch size) and then `kd_loss`'s: it
    saves about ten ops in every training step. No gradient reaches
    `temperature`.

    Args:
        teacher_logits: Teacher logits, shape `(batch, num_classes)`.
        student_logits: Student logits, shape `(batch, num_classes)`.
        temperature: Softmax temperature `T > 0`, a float or scalar tensor.
            Defaults to `1.0`.

    Returns:
        A float32 scalar.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> float(kd_mean_loss(t, t, temperature=4.0))
    0.0

    ```
    """
    temperature = ops.cast(temperature, "float32")
    return _closed_form_kd(teacher_logits, student_logits, temperature, mean=True)


def topk_kd_loss(
    teacher_topk_logits,
    teacher_topk_indices,
    teacher_rest_logsumexp,
    student_logits,
    temperature=1.0,
):
    """The KD term from a teacher's top-k logits, one value per example.

    Both distributions are taken over k + 1 buckets: the teacher's k largest
    classes, and "the rest". The teacher's rest bucket comes from the stored
    log-sum-exp of its other logits, `L`, assuming those logits are equal
    (`m = L - log(C - k)`, so at temperature T the bucket's logit is
    `m / T + log(C - k)`); the student's rest bucket is exact. With
    `k = C` there is no rest bucket and the value equals `kd_loss` exactly;
    for smaller k it stays close when the teacher is peaked.

    Args:
        teacher_topk_logits: `(batch, k)` largest teacher logits.
        teacher_topk_indices: `(batch, k)` their class ids.
        teacher_rest_logsumexp: `(batch,)` log-sum-exp of the other logits.
        student_logits: `(batch, C)` student logits.
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    temperature = ops.cast(temperature, "float32")
    student = ops.cast(student_logits, "float32") / temperature
    values = ops.cast(teacher_topk_logits, "float32") / temperature
    indices = ops.cast(teacher_topk_indices, "int32")
    # Shapes may be dynamic (Keras retraces with relaxed shapes), so the
    # empty rest bucket of k = C is handled with values, not Python branches:
    # its logits become a large finite negative (probability 0, finite
    # gradients).
    k = ops.cast(ops.shape(values)[-1], "float32")
    num_classes = ops.cast(ops.shape(student)[-1], "float32")
    rest_count = num_classes - k
    log_rest_count = ops.log(ops.maximum(rest_count, 1.0))
    rest = ops.cast(ops.reshape(teacher_rest_logsumexp, (-1, 1)), "float32")
    rest_logit = (rest - log_rest_count) / temperature + log_rest_count
    rest_logit = ops.where(
        (rest_count > 0) & ops.isfinite(rest_logit), rest_logit, _NEG_LARGE
    )
    teacher_log_p = ops.log_softmax(ops.concatenate([values, rest_logit], -1), -1)
    in_top = ops.sum(ops.one_hot(indices, ops.shape(student)[-1]), axis=1) > 0
    student_log_norm = ops.logsumexp(student, axis=-1, keepdims=True)
    student_top = ops.take_along_axis(student, indices, axis=-1)
    student_rest = ops.logsumexp(
        ops.where(in_top, ops.full_like(student, _NEG_LARGE), student),
        axis=-1,
        keepdims=True,
    )
    student_log_p = ops.concatenate([student_top, student_rest], -1) - student_log_norm
    kl = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return ops.square(temperature) * kl


@register("kd")
class KDTerm(DistillationTerm):
    """Hinton's KD term, `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    With `standardize=True`, both models' logits are z-scored first
    (`standardize_logits`), which lets the student match the teacher's
    ranking of the classes rather than the scale of its logits (Sun et al.,
    CVPR 2024, https://arxiv.org/abs/2403.01427); use a lower temperature
    with it (the paper: 2) and a larger KD weight.

    Reference: Hinton, Vinyals and Dean, "Distilling the Knowledge in a
    Neural Network", 2015 (https://arxiv.org/abs/1503.02531).

    Declares `accepts_topk` (without `standardize`: a top-k teacher cache
    holds too little to z-score the teacher's logits) and
    `matches_keras_loss(keras.losses.KLDivergence())`, the keras-io
    example's form of this term.

    Args:
        standardize: Z-score the logits before the softened softmax.
            Defaults to `False`.
        closed_form_gradient: Use the closed-form gradients for teacher and
            student (faster; no gradient reaches the temperature). `False`
            differentiates the formula, also with respect to a learned
            temperature (what `for_learned_temperature()` gives, for CTKD).
            Defaults to `True`.
        name: Defaults to `"kd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=2.0,
                             distillation_loss=kd.losses.KDTerm(standardize=True))
    ```
    """

    default_name = "kd"
    uses_temperature = True

    def __init__(
        self, standardize=False, closed_form_gradient=True, name=None, **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.standardize = _check_bool(standardize, "standardize")
        self.closed_form_gradient = _check_bool(
            closed_form_gradient, "closed_form_gradient"
        )

    @property
    def accepts_topk(self):
        return not self.standardize

    @property
    def closed_form(self):
        # Only where the value is exactly Hinton's KL of the logits and no
        # gradient should reach the temperature (as in `reduced`).
        plain = (
            type(self).call is KDTerm.call
            and type(self).compute is DistillationTerm.compute
            and self.compute_dtype == "float32"
            and not self.standardize
            and self.closed_form_gradient
        )
        return "forward_kl" if plain else None

    def matches_keras_loss(self, loss):
        is_kl = isinstance(loss, keras.losses.KLDivergence) or (
            loss in ("kl_divergence", "kld", "KLD", keras.losses.kl_divergence)
        )
        return is_kl and not self.standardize

    def for_learned_temperature(self):
        config = {**self.get_config(), "closed_form_gradient": False}
        return type(self).from_config(config)

    def compute_topk(self, targets, student, labels=None, temperature=1.0):
        return topk_kd_loss(
            targets[TOPK_LOGITS_KEY],
            targets[TOPK_INDICES_KEY],
            targets[TOPK_REST_KEY],
            student,
            temperature,
        )

    def call(self, teacher, student, labels=None, temperature=None):
        teacher, student = _maybe_standardize(self.standardize, teacher, student)
        return kd_loss(
            teacher,
            student,
            1.0 if temperature is None else temperature,
            closed_form_gradient=self.closed_form_gradient,
        )

    def reduced(
        self, teacher, student, labels=None, temperature=1.0, sample_weight=None
    ):
        # Without weights, the plain term's mean has its own fused gradient
        # where it is the same value and gradient: not for a subclass with
        # its own `call` or `compute`, a compute dtype other than float32,
        # logits other than `(batch, classes)` (which `compute` refuses), or
        # several replicas (whose shares of a last batch may be empty).
        if (
            type(self).call is not KDTerm.call
            or type(self).compute is not DistillationTerm.compute
            or self.compute_dtype != "float32"
            or sample_weight is not None
            or self.standardize
            or not self.closed_form_gradient
            or _rank(teacher) != 2
            or _rank(student) != 2
            or _num_replicas() != 1
        ):
            return super().reduced(teacher, student, labels, temperature, sample_weight)
        return kd_mean_loss(teacher, student, temperature)

    def get_config(self):
        config = {**super().get_config(), "standardize": self.standardize}
        if not self.closed_form_gradient:
            config["closed_form_gradient"] = False
        return config
