"""Distillation losses.

Each loss is a pure function of tensors (computed in log space and in float32,
returning one value per example) plus, where it must be saved, a thin
serializable `keras.losses.Loss` class around it.
"""

import keras
import numpy as np
from keras import ops

from keras_distill import params as kd_params

OUTPUT_KINDS = ("logits", "probabilities")

# A large finite negative logit: probability 0 without infinities in gradients.
_NEG_LARGE = -1e9
# Smallest probability used when turning probabilities into log-probabilities.
_PROB_EPSILON = 1e-7


def check_output_kind(value, argument: str) -> str:
    """Returns `value` if it is one of `OUTPUT_KINDS`, else raises ValueError."""
    if value not in OUTPUT_KINDS:
        raise ValueError(
            f"`{argument}` must be one of {OUTPUT_KINDS}. Received: "
            f"{argument}={value!r}"
        )
    return value


def to_logits(outputs, kind: str = "logits"):
    """Returns float32 values whose softmax is the model's distribution.

    Logits are returned as they are; probabilities are turned into
    log-probabilities (clipped away from zero), which are valid logits.

    Args:
        outputs: Model outputs of shape `(batch, num_classes)`.
        kind: `"logits"` or `"probabilities"`. Defaults to `"logits"`.
    """
    outputs = ops.cast(outputs, "float32")
    if kind == "probabilities":
        return ops.log(ops.clip(outputs, _PROB_EPSILON, 1.0))
    return outputs


def mix_teachers(teacher_logits, weights, temperatures, temperature):
    """Hinton's ensemble of teachers, as logits for the KD term.

    Averages the teachers' softened distributions in probability space and
    returns logits `L` with `softmax(L / T)` equal to the average:
    `L = T * log(sum_i w_i softmax(z_i / T_i))` (Hinton et al. 2015, sec. 4).

    Args:
        teacher_logits: A list of `(batch, classes)` logits, one per teacher.
        weights: One weight per teacher, non-negative, summing to 1.
        temperatures: One fixed temperature per teacher, or `None` entries
            for the shared `temperature`.
        temperature: The distiller's temperature `T` (float or scalar tensor).

    Example:

    >>> z = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> mixed = mix_teachers([z, z], [0.5, 0.5], [None, None], 4.0)
    >>> bool(np.allclose(mixed - mixed.max(), z - z.max(), atol=1e-5))
    True
    """
    temperature = ops.cast(temperature, "float32")
    log_terms = []
    for logits, weight, t_i in zip(teacher_logits, weights, temperatures):
        t_i = temperature if t_i is None else t_i
        log_terms.append(
            np.log(weight) + ops.log_softmax(ops.cast(logits, "float32") / t_i, axis=-1)
        )
    return temperature * ops.logsumexp(ops.stack(log_terms, axis=0), axis=0)


def kd_loss(teacher_logits, student_logits, temperature=1.0):
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

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(kd_loss(t, t, temperature=4.0)[0])
    0.0
    """
    temperature = ops.cast(temperature, "float32")

    # The gradients in closed form, `T * (q - p)` for the student and
    # `T * p * (log p - log q - KL)` for the teacher (p, q the softened
    # distributions), cost a few fused ops instead of autodiff through both
    # log-softmaxes: this term runs in every training step.
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
            scale = ops.expand_dims(upstream, -1) * temperature
            d_student = scale * (ops.exp(student_log_p) - teacher_p)
            d_teacher = scale * teacher_p * (log_ratio - ops.expand_dims(kl, -1))
            return d_teacher, d_student

        return ops.square(temperature) * kl, grad

    return loss(
        ops.cast(teacher_logits, "float32"), ops.cast(student_logits, "float32")
    )


def reduce_per_example(values, sample_weight=None):
    """Averages per-example loss values the way Keras losses do.

    Matches Keras's `"sum_over_batch_size"` reduction, `sum(w * l) / batch`,
    including its division by the number of replicas under `tf.distribute`,
    so that a distillation term and a compiled Keras loss can be added.

    Args:
        values: Per-example losses, shape `(batch,)`.
        sample_weight: Optional weights broadcastable to `(batch,)`.
    """
    values = ops.cast(values, "float32")
    if sample_weight is None:
        # The same value (steps never see an empty batch), in fewer ops.
        loss = ops.mean(values)
    else:
        batch = ops.cast(ops.shape(values)[0], "float32")
        sample_weight = ops.cast(sample_weight, "float32")
        sample_weight = ops.reshape(sample_weight, ops.shape(values))
        loss = ops.divide_no_nan(ops.sum(values * sample_weight), batch)
    replicas = _num_replicas()
    return loss if replicas == 1 else loss / float(replicas)


def _num_replicas() -> int:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1


@keras.saving.register_keras_serializable(package="keras_distill")
class KnowledgeDistillation(keras.losses.Loss):
    """Hinton's KD loss as a `keras.losses.Loss`: `y_true` are teacher logits.

    Args:
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Loss name. Defaults to `"knowledge_distillation"`.

    Example:

    ```python
    loss = kd.losses.KnowledgeDistillation(temperature=4.0)
    value = loss(teacher_logits, student_logits)
    ```
    """

    def __init__(
        self,
        temperature=1.0,
        reduction="sum_over_batch_size",
        name="knowledge_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = kd_params.check("temperature", temperature)

    def call(self, y_true, y_pred):
        return kd_loss(y_true, y_pred, self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


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


def logit_mse_loss(teacher_logits, student_logits):
    """Mean squared error between logits, one value per example.

    Matching logits directly is the high-temperature limit of the KD term
    (Hinton et al. 2015, section 2.1; Ba & Caruana, "Do Deep Nets Really
    Need to be Deep?", 2014).

    Args:
        teacher_logits: `(batch, num_classes)` teacher logits.
        student_logits: `(batch, num_classes)` student logits.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    diff = ops.cast(student_logits, "float32") - ops.cast(teacher_logits, "float32")
    return ops.mean(ops.square(diff), axis=-1)


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


@keras.saving.register_keras_serializable(package="keras_distill")
class LogitMSE(keras.losses.Loss):
    """`logit_mse_loss` as a `keras.losses.Loss`: `y_true` are teacher logits.

    Example:

    ```python
    value = kd.losses.LogitMSE()(teacher_logits, student_logits)
    ```
    """

    def __init__(self, reduction="sum_over_batch_size", name="logit_mse", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return logit_mse_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_distill")
class DecoupledKD(keras.losses.Loss):
    """`dkd_loss` as a `keras.losses.Loss`.

    `y_true` is a dict `{"teacher_logits": ..., "labels": ...}`.

    Args:
        temperature: Softmax temperature. Defaults to `1.0`.
        alpha: TCKD weight. Defaults to `1.0`.
        beta: NCKD weight. Defaults to `8.0`.

    Example:

    ```python
    loss = kd.losses.DecoupledKD(temperature=4.0, beta=8.0)
    value = loss({"teacher_logits": t, "labels": y}, student_logits)
    ```
    """

    def __init__(
        self,
        temperature=1.0,
        alpha=1.0,
        beta=8.0,
        reduction="sum_over_batch_size",
        name="decoupled_kd",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature, self.alpha, self.beta = float(temperature), alpha, beta

    def call(self, y_true, y_pred):
        return dkd_loss(
            y_true["teacher_logits"],
            y_pred,
            y_true["labels"],
            self.temperature,
            self.alpha,
            self.beta,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"temperature": self.temperature, "alpha": self.alpha, "beta": self.beta}
        )
        return config


def hint_loss(teacher_features, student_features):
    """FitNets' hint term: mean squared error between features, per example.

    The student's (adapted) features are regressed onto the teacher's hint
    features; the squared error is averaged over all non-batch axes (for
    image features: height, width and channels). Reduce the result over the
    batch with `reduce_per_example`, like the other terms.

    Reference: Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets:
    Hints for Thin Deep Nets", ICLR 2015 (https://arxiv.org/abs/1412.6550).

    Args:
        teacher_features: Teacher hint features, shape `(batch, ...)`.
        student_features: Student features of the same shape (after the
            adaptor, if any).

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.ones((2, 4, 4, 3), "float32")
    >>> [float(v) for v in hint_loss(t, 0.5 * t)]
    [0.25, 0.25]
    """
    teacher = ops.cast(teacher_features, "float32")
    student = ops.cast(student_features, "float32")
    if teacher.shape[1:] != student.shape[1:] and None not in (
        *teacher.shape[1:],
        *student.shape[1:],
    ):
        raise ValueError(
            "Hint features must have the same shape (use an adaptor when they "
            f"differ). Received: teacher features of shape {teacher.shape}, "
            f"student features of shape {student.shape}."
        )
    diff = ops.reshape(student - teacher, (ops.shape(student)[0], -1))
    return ops.mean(ops.square(diff), axis=-1)


@keras.saving.register_keras_serializable(package="keras_distill")
class HintLoss(keras.losses.Loss):
    """`hint_loss` as a `keras.losses.Loss`: `y_true` are teacher features.

    Reference: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015
    (https://arxiv.org/abs/1412.6550).

    Args:
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Loss name. Defaults to `"hint"`.

    Example:

    ```python
    value = kd.losses.HintLoss()(teacher_features, adapted_student_features)
    ```
    """

    def __init__(self, reduction="sum_over_batch_size", name="hint", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return hint_loss(y_true, y_pred)
