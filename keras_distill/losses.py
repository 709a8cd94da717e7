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
    >>> mixed = np.asarray(mix_teachers([z, z], [0.5, 0.5], [None, None], 4.0))
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

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(kd_loss(t, t, temperature=4.0)[0])
    0.0
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

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> float(kd_mean_loss(t, t, temperature=4.0))
    0.0
    """
    temperature = ops.cast(temperature, "float32")
    return _closed_form_kd(teacher_logits, student_logits, temperature, mean=True)


def sparse_ce_mean_loss(labels, logits):
    """The batch mean of the sparse categorical cross-entropy of logits.

    The same value as `keras.losses.SparseCategoricalCrossentropy(
    from_logits=True)(labels, logits)` (no sample weights), with the
    gradient `(softmax(logits) - one_hot(labels)) / batch` taken from the
    cross-entropy kernel's own output instead of through Keras's reduction
    (a sum, the batch size as a product of the shape, a safe division, and
    their gradients): about a dozen fewer ops in every training step. The
    kernel is the one Keras calls, so a label outside `[0, classes)` fails
    the same way. TensorFlow backend only.

    Args:
        labels: Integer class ids, shape `(batch,)` or `(batch, 1)`.
        logits: Logits, shape `(batch, num_classes)`.

    Returns:
        A float32 scalar.

    Example:

    >>> import numpy as np
    >>> logits = np.zeros((2, 4), "float32")
    >>> round(float(sparse_ce_mean_loss(np.array([0, 3]), logits)), 4)
    1.3863
    """
    import tensorflow as tf

    labels = tf.convert_to_tensor(labels)
    if labels.dtype not in (tf.int32, tf.int64):
        labels = tf.cast(labels, tf.int64)
    labels = tf.reshape(labels, [-1])

    @tf.custom_gradient
    def loss(logits):
        values, backprop = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=logits, labels=labels
        )

        def grad(upstream):
            batch = tf.cast(tf.shape(logits)[0], "float32")
            return backprop * (upstream / batch)

        return tf.reduce_mean(values), grad

    return loss(tf.cast(logits, "float32"))


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
    replicas = _num_replicas()
    if sample_weight is None and replicas == 1:
        # The same value (one replica's steps never see an empty batch), in
        # fewer ops.
        return ops.mean(values)
    # Under a strategy, a replica's share of a last batch smaller than the
    # replica count is empty: it adds 0, as Keras's own losses do, not NaN.
    batch = ops.cast(ops.shape(values)[0], "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        values = values * ops.reshape(sample_weight, ops.shape(values))
    loss = ops.divide_no_nan(ops.sum(values), batch)
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


# -- Pure functions of the newer methods ---------------------------------------

# Added to the standard deviation in logit standardization (Sun et al.'s code).
_STD_EPSILON = 1e-7
# Smallest norm used when normalising a vector (as `F.normalize` does).
_NORM_EPSILON = 1e-12
FEATURE_DISTANCES = ("mse", "mae", "cosine")


def standardize_logits(logits, epsilon: float = _STD_EPSILON):
    """Z-scores each row of logits: `(z - mean(z)) / (std(z) + epsilon)`.

    The standard deviation is the population one, `sqrt(mean((z - mean)^2))`,
    as in the paper's definition (Sun et al.'s released code uses PyTorch's
    unbiased `std`, which differs by the constant `sqrt(K / (K - 1))`, the same
    as a slightly lower temperature).

    Reference: Sun, Ren, Li, Wang and Cao, "Logit Standardization in
    Knowledge Distillation", CVPR 2024 (https://arxiv.org/abs/2403.01427).

    Args:
        logits: `(batch, num_classes)` logits.
        epsilon: Added to the standard deviation. Defaults to `1e-7`.

    Example:

    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0]], "float32"))
    >>> [round(float(v), 4) for v in z[0]]
    [-1.2247, 0.0, 1.2247]
    """
    logits = ops.cast(logits, "float32")
    mean = ops.mean(logits, axis=-1, keepdims=True)
    centered = logits - mean
    std = ops.sqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True))
    return centered / (std + epsilon)


def _flat(features):
    features = ops.cast(features, "float32")
    return ops.reshape(features, (ops.shape(features)[0], -1))


def _normalize_rows(x):
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return x / ops.maximum(norm, _NORM_EPSILON)


def feature_distance(teacher_features, student_features, distance: str = "mse"):
    """A distance between features, one value per example.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: Student features of the same shape.
        distance: `"mse"` (mean squared error over the non-batch axes, the
            FitNets hint), `"mae"` (mean absolute error) or `"cosine"`
            (`1 - cos(student, teacher)` of the flattened features, in
            [0, 2]). Defaults to `"mse"`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> t = np.ones((2, 3), "float32")
    >>> [float(v) for v in feature_distance(t, -t, "cosine")]
    [2.0, 2.0]
    """
    if distance not in FEATURE_DISTANCES:
        raise ValueError(
            f"`distance` must be one of {FEATURE_DISTANCES}. "
            f"Received: distance={distance!r}"
        )
    if distance == "mse":
        return hint_loss(teacher_features, student_features)
    hint_loss(teacher_features[:0], student_features[:0])  # the shape check
    teacher, student = _flat(teacher_features), _flat(student_features)
    if distance == "mae":
        return ops.mean(ops.abs(student - teacher), axis=-1)
    return 1.0 - ops.sum(_normalize_rows(teacher) * _normalize_rows(student), axis=-1)


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


def similarity_preserving_loss(teacher_features, student_features):
    """Similarity-preserving KD (SP), one value per example.

    `G = Q Q^T` for the flattened features `Q` (batch x batch), each row
    L2-normalised; the loss is `||G_T - G_S||_F^2 / b^2`. Example `i` gets
    `sum_j (G_T - G_S)_ij^2 / b`, so the batch mean is the paper's value. The
    paper weights this term by 3000.

    Reference: Tung and Mori, "Similarity-Preserving Knowledge Distillation",
    ICCV 2019 (https://arxiv.org/abs/1907.09682), eq. 2-4.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: `(batch, ...)` student features (any shape).

    Returns:
        A float32 tensor of shape `(batch,)`.
    """

    def similarity(features):
        x = _flat(features)
        return _normalize_rows(ops.matmul(x, ops.transpose(x)))

    diff = similarity(student_features) - ops.stop_gradient(
        similarity(teacher_features)
    )
    b = ops.cast(ops.shape(diff)[0], "float32")
    return ops.sum(ops.square(diff), axis=-1) / b


def attention_map(features, p: int = 2):
    """`vec(sum_c |A_c|^p)`, L2-normalised: the attention map of AT.

    Args:
        features: `(batch, height, width, channels)` (channels last) or
            `(batch, units)`.
        p: The power. Defaults to `2`.
    """
    features = ops.cast(features, "float32")
    energy = ops.sum(ops.abs(features) ** p, axis=-1)
    return _normalize_rows(_flat(energy))


def attention_transfer_loss(teacher_features, student_features, p: int = 2):
    """Activation-based attention transfer (AT), one value per example.

    `|| Q_S / ||Q_S|| - Q_T / ||Q_T|| ||_2` with `Q = vec(sum_c |A_c|^p)`
    (the paper's eq. 2 without its `beta / 2`; set that with the term's
    weight). Channels may differ; the spatial sizes must match.

    Reference: Zagoruyko and Komodakis, "Paying More Attention to Attention",
    ICLR 2017 (https://arxiv.org/abs/1612.03928).

    Args:
        teacher_features: `(batch, height, width, channels)` teacher features.
        student_features: `(batch, height, width, channels')` student features.
        p: The power of the attention map. Defaults to `2`.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    t_shape, s_shape = tuple(teacher_features.shape), tuple(student_features.shape)
    if len(t_shape) != len(s_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(t_shape[1:-1], s_shape[1:-1])
    ):
        raise ValueError(
            "Attention transfer needs features with the same spatial size. "
            f"Received: teacher features of shape {t_shape}, student features "
            f"of shape {s_shape}."
        )
    diff = attention_map(student_features, p) - ops.stop_gradient(
        attention_map(teacher_features, p)
    )
    return ops.sqrt(ops.maximum(ops.sum(ops.square(diff), axis=-1), 1e-12))


# -- Distillation terms ----------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_distill")
class DistillationTerm(keras.layers.Layer):
    """Base class of a distillation term: one value per example.

    A term compares the teacher's and the student's outputs (logits, for the
    `Distiller`'s `distillation_loss`) or features (in a
    `keras_distill.hints.Hint`). Subclasses implement `call(teacher,
    student, labels=None, temperature=None)` and return a float32 tensor of
    shape `(batch,)`; the distiller averages it with the sample weights
    (`reduce_per_example`) and logs it as `<name>_loss` when it has several
    terms. `labels` are the batch's labels, or `None` for a batch without
    labels; `temperature` is the distiller's current temperature (a scalar
    tensor; a term may ignore it). Teacher and student arrive as float32,
    the teacher's already without gradient.

    A term is a `keras.layers.Layer`: it is saved with the distiller (its
    config through `get_config`, any variables it creates with the
    distiller's weights) and may hold trainable variables, which train with
    the student. Register subclasses with
    `keras.saving.register_keras_serializable()` so that a saved distiller
    loads, and return every `__init__` argument from `get_config()`.

    Class attributes:
        default_name: The name of an instance made without `name=`, and so
            the key of its loss in the logs (`"<name>_loss"`) and of its
            weight variable (`"<name>_weight"`).
        needs_labels: Whether `call()` needs `labels` (like DKD); the
            distiller then refuses batches without labels with a clear
            error.
        elementwise: Whether teacher and student must have the same shape
            (a distance between features). In a hint with `adaptor=None`,
            a term that is not elementwise (RKD, PKT, SP, AT) gets the
            features as they are, whatever their widths.

    Args:
        name: The term's name, a Python identifier. Defaults to the class's
            `default_name`.
        **kwargs: Passed to `keras.layers.Layer`.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class L1Logits(kd.losses.DistillationTerm):
        default_name = "l1"

        def call(self, teacher, student, labels=None, temperature=None):
            return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)

    distiller = kd.Distiller(student, teacher,
                             distillation_loss=["kd", L1Logits()],
                             distillation_loss_weights=[0.7, 0.3])
    ```
    """

    default_name = "term"
    needs_labels = False
    elementwise = False

    def __init__(self, name=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name or self.default_name, **kwargs)

    def call(self, teacher, student, labels=None, temperature=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(teacher, student, "
            "labels=None, temperature=None)` returning one value per example."
        )

    def parameter_variables(self):
        """`{name: variable}` of the term's schedulable parameters."""
        return {}

    def compute(self, teacher, student, labels=None, temperature=1.0):
        """Calls the term on float32 inputs and checks it returns `(batch,)`."""
        if self.needs_labels and labels is None:
            raise ValueError(
                f"The distillation term {self.name!r} ({type(self).__name__}) "
                "needs labels (e.g. DKD separates the true class); received a "
                "batch without labels. Train on (x, y) batches or choose a term "
                "that does not need labels, such as 'kd'."
            )
        value = self(
            ops.cast(teacher, "float32"),
            ops.cast(student, "float32"),
            labels=labels,
            temperature=ops.cast(temperature, "float32"),
        )
        if not hasattr(value, "shape") or len(value.shape) != 1:
            shape = getattr(value, "shape", None)
            raise ValueError(
                f"The distillation term {self.name!r} ({type(self).__name__}) must "
                "return one value per example, a tensor of shape (batch,). It "
                f"returned {'a ' + type(value).__name__ if shape is None else shape}."
            )
        return ops.cast(value, "float32")

    def reduced(
        self, teacher, student, labels=None, temperature=1.0, sample_weight=None
    ):
        """The term averaged over the batch with the sample weights, a scalar.

        `reduce_per_example(self.compute(...), sample_weight)`; a subclass
        may compute the same value in fewer ops (`KDTerm` does).
        """
        return reduce_per_example(
            self.compute(teacher, student, labels, temperature), sample_weight
        )


def _rank(x):
    """The static rank of `x`, or None when unknown."""
    try:
        return len(x.shape)
    except (AttributeError, TypeError, ValueError):
        return None


def _maybe_standardize(standardize, teacher, student):
    if standardize:
        return standardize_logits(teacher), standardize_logits(student)
    return teacher, student


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_distill")
class KDTerm(DistillationTerm):
    """Hinton's KD term, `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    With `standardize=True`, both models' logits are z-scored first
    (`standardize_logits`), which lets the student match the teacher's
    ranking of the classes rather than the scale of its logits (Sun et al.,
    CVPR 2024, https://arxiv.org/abs/2403.01427); use a lower temperature
    with it (the paper: 2) and a larger KD weight.

    Reference: Hinton, Vinyals and Dean, "Distilling the Knowledge in a
    Neural Network", 2015 (https://arxiv.org/abs/1503.02531).

    Args:
        standardize: Z-score the logits before the softened softmax.
            Defaults to `False`.
        name: Defaults to `"kd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, temperature=2.0,
                             distillation_loss=kd.losses.KDTerm(standardize=True))
    ```
    """

    default_name = "kd"
    # Set by CTKDTerm: the temperature is learned, so it needs a gradient.
    _temperature_is_learned = False

    def __init__(self, standardize=False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.standardize = _check_bool(standardize, "standardize")

    def call(self, teacher, student, labels=None, temperature=None):
        teacher, student = _maybe_standardize(self.standardize, teacher, student)
        return kd_loss(
            teacher,
            student,
            1.0 if temperature is None else temperature,
            closed_form_gradient=not self._temperature_is_learned,
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
            or self._temperature_is_learned
            or _rank(teacher) != 2
            or _rank(student) != 2
            or _num_replicas() != 1
        ):
            return super().reduced(teacher, student, labels, temperature, sample_weight)
        return kd_mean_loss(teacher, student, temperature)

    def get_config(self):
        return {**super().get_config(), "standardize": self.standardize}


@keras.saving.register_keras_serializable(package="keras_distill")
class LogitMSETerm(DistillationTerm):
    """Squared error between logits (`logit_mse_loss`); ignores the temperature.

    Args:
        name: Defaults to `"mse"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher, distillation_loss=["kd", "mse"],
                             distillation_loss_weights=[1.0, 0.1])
    ```
    """

    default_name = "mse"
    elementwise = True

    def call(self, teacher, student, labels=None, temperature=None):
        return logit_mse_loss(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
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
    needs_labels = True

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


@keras.saving.register_keras_serializable(package="keras_distill")
class FeatureDistanceTerm(DistillationTerm):
    """A distance between features (`feature_distance`): MSE, MAE or cosine.

    Args:
        distance: `"mse"`, `"mae"` or `"cosine"`. Defaults to `"mse"`.
        name: Defaults to `"feature_<distance>"`.

    Example:

    ```python
    hint = kd.hints.Hint("conv2", "conv1", loss="cosine")  # uses this term
    ```
    """

    default_name = "feature"
    elementwise = True

    def __init__(self, distance="mse", name=None, **kwargs):
        if distance not in FEATURE_DISTANCES:
            raise ValueError(
                f"`distance` must be one of {FEATURE_DISTANCES}. "
                f"Received: distance={distance!r}"
            )
        super().__init__(name=name or f"feature_{distance}", **kwargs)
        self.distance = distance

    def call(self, teacher, student, labels=None, temperature=None):
        return feature_distance(teacher, student, self.distance)

    def get_config(self):
        return {**super().get_config(), "distance": self.distance}


@keras.saving.register_keras_serializable(package="keras_distill")
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

    def call(self, teacher, student, labels=None, temperature=None):
        return rkd_distance_loss(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
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

    def call(self, teacher, student, labels=None, temperature=None):
        return rkd_angle_loss(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
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

    def call(self, teacher, student, labels=None, temperature=None):
        return pkt_loss(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
class SimilarityPreservingTerm(DistillationTerm):
    """Similarity-preserving KD (`similarity_preserving_loss`; Tung and Mori 2019).

    Args:
        name: Defaults to `"sp"`.

    Example:

    ```python
    hint = kd.hints.Hint("conv2", "conv1", loss=kd.losses.SimilarityPreservingTerm(),
                         weight=3000.0, adaptor=None)
    ```
    """

    default_name = "sp"

    def call(self, teacher, student, labels=None, temperature=None):
        return similarity_preserving_loss(teacher, student)


@keras.saving.register_keras_serializable(package="keras_distill")
class AttentionTransferTerm(DistillationTerm):
    """Attention transfer (`attention_transfer_loss`; Zagoruyko and Komodakis 2017).

    Args:
        p: The power of the attention map. Defaults to `2`.
        name: Defaults to `"at"`.

    Example:

    ```python
    # Same height and width; the channel counts may differ.
    hint = kd.hints.Hint("conv2", "conv1", loss=kd.losses.AttentionTransferTerm(),
                         adaptor=None)
    ```
    """

    default_name = "at"

    def __init__(self, p=2, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"`p` must be an integer >= 1. Received: p={p!r}")
        self.p = p

    def call(self, teacher, student, labels=None, temperature=None):
        return attention_transfer_loss(teacher, student, self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


def gradient_reversal(x, strength):
    """The identity, whose gradient is multiplied by `-strength`.

    Reference: Ganin and Lempitsky, "Unsupervised Domain Adaptation by
    Backpropagation", ICML 2015 (https://arxiv.org/abs/1409.7495).

    Args:
        x: A tensor.
        strength: The reversal strength `lambda >= 0`, a float or scalar
            tensor.
    """
    strength = ops.cast(strength, "float32")

    @ops.custom_gradient
    def reverse(value):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return -strength * upstream

        return value * 1.0, grad

    return reverse(ops.cast(x, "float32"))


@keras.saving.register_keras_serializable(package="keras_distill")
class CTKDTerm(DistillationTerm):
    """Curriculum temperature KD (CTKD): a learned, adversarial temperature.

    Wraps a logit term (KD or DKD, with or without logit standardization) and
    replaces the distiller's temperature by a learned one, `T = t_start +
    t_end * sigmoid(theta)`, where `theta` is a trainable variable reached
    through a gradient reversal layer: the student descends the loss while
    the temperature ascends it (it makes the task harder), scaled by the
    reversal strength `lambda`. CTKD raises `lambda` from 0 to 1 with a
    cosine curriculum over the first epochs (the paper: 10): schedule the
    non-trainable `"<name>_reversal"` variable, e.g.
    `kd.callbacks.ParameterScheduler("ctkd_reversal", kd.schedules.cosine(0.0,
    1.0, 10))`. Without a schedule `lambda` stays 0 and `T` stays at its
    initial value.

    Reference: Zheng Li et al., "Curriculum
    Temperature for Knowledge Distillation", AAAI 2023
    (https://arxiv.org/abs/2211.16231). `theta` starts at 1, as in the
    authors' code (so `T` starts at `1 + 20 * sigmoid(1) = 15.6`).

    Args:
        term: The wrapped term: `"kd"`, `"dkd"` or a `DistillationTerm` that
            uses the temperature. Defaults to `"kd"`.
        t_start: The lowest temperature. Defaults to `1.0`.
        t_end: The range above it. Defaults to `20.0`.
        name: Defaults to `"ctkd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher,
                             distillation_loss=kd.losses.CTKDTerm("kd"))
    distiller.fit(x, y, epochs=30, callbacks=[kd.callbacks.ParameterScheduler(
        "ctkd_reversal", kd.schedules.cosine(0.0, 1.0, 10))])
    distiller.distillation_loss.learned_temperature()  # a float
    ```
    """

    default_name = "ctkd"

    def __init__(self, term="kd", t_start=1.0, t_end=20.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.term = get_term(term, "term")
        if isinstance(self.term, CTKDTerm):
            raise ValueError("`term` cannot itself be a CTKDTerm.")
        if isinstance(self.term, KDTerm):
            self.term._temperature_is_learned = True
        self.needs_labels = self.term.needs_labels
        self.t_start = kd_params.check("temperature", t_start, "CTKDTerm(t_start)")
        self.t_end = kd_params.Param("t_end", 20.0, 0.0).check(t_end)
        self.theta = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(1.0), name="theta"
        )
        # Checked on every assignment (a schedule's value, a loaded weight).
        self.reversal = kd_params.variable(f"{self.name}_reversal", 0.0)

    def temperature_of(self, theta):
        return self.t_start + self.t_end * ops.sigmoid(theta)

    def learned_temperature(self):
        """The current learned temperature, a Python float."""
        return float(ops.convert_to_numpy(self.temperature_of(self.theta)))

    def parameter_variables(self):
        return {f"{self.name}_reversal": self.reversal}

    def call(self, teacher, student, labels=None, temperature=None):
        theta = gradient_reversal(self.theta, self.reversal)
        return self.term.compute(teacher, student, labels, self.temperature_of(theta))

    def get_config(self):
        return {
            **super().get_config(),
            "term": keras.saving.serialize_keras_object(self.term),
            "t_start": self.t_start,
            "t_end": self.t_end,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("term"), dict):
            config["term"] = keras.saving.deserialize_keras_object(config["term"])
        return cls(**config)


# Names accepted wherever a term is (`Distiller(distillation_loss=...)`).
TERMS = {
    "kd": KDTerm,
    "mse": LogitMSETerm,
    "dkd": DKDTerm,
    "rkd_distance": RKDDistanceTerm,
    "rkd_angle": RKDAngleTerm,
    "pkt": PKTTerm,
    "sp": SimilarityPreservingTerm,
    "at": AttentionTransferTerm,
    "ctkd": CTKDTerm,
}


def _keras_equivalent(loss) -> str:
    """The keras_distill call equivalent to a keras.distillation loss object."""
    name = type(loss).__name__
    if name == "LogitsDistillation":
        temperature = getattr(loss, "temperature", 3.0)
        kl = isinstance(getattr(loss, "loss", None), keras.losses.KLDivergence)
        note = (
            ""
            if kl
            else " (keras.distillation's default `loss='kl_divergence'` applies "
            "KL to the logits / T without softmax or T^2; 'kd' is Hinton's T^2 * "
            "KL of the softened distributions)"
        )
        return (
            f"for `LogitsDistillation(temperature={temperature!r})` pass "
            f"`distillation_loss='kd', temperature={temperature!r}` to "
            f"`kd.Distiller`{note}."
        )
    if name == "FeatureDistillation":
        t = getattr(loss, "teacher_layer_name", None)
        s = getattr(loss, "student_layer_name", None)
        if t is None or s is None:
            return (
                "for `FeatureDistillation` on the final outputs pass "
                "`distillation_loss='mse'`."
            )
        return (
            f"for `FeatureDistillation(teacher_layer_name={t!r}, "
            f"student_layer_name={s!r})` pass `hints=[kd.hints.Hint({t!r}, "
            f"{s!r}, loss='mse')]` (or loss='mae' / 'cosine') to `kd.Distiller`."
        )
    return "subclass `kd.losses.DistillationTerm` (one value per example)."


def get_term(spec, argument: str = "distillation_loss") -> DistillationTerm:
    """A `DistillationTerm` from a name, a term, a saved config or a loss class.

    Accepts a `DistillationTerm` (returned as it is), a name in `TERMS`
    (`"kd"`, `"mse"`, `"dkd"`, ...), the config dict of a saved term, or
    one of the `keras.losses.Loss` classes of this module
    (`KnowledgeDistillation`, `LogitMSE`, `DecoupledKD`).

    Raises:
        ValueError: naming `argument` and the value; for an unknown name,
            the closest known names.
    """
    import difflib

    if isinstance(spec, DistillationTerm):
        return spec
    if isinstance(spec, str):
        if spec in TERMS:
            return TERMS[spec]()
        close = difflib.get_close_matches(spec, list(TERMS), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown distillation term {argument}={spec!r}.{hint} Known names: "
            f"{sorted(TERMS)}; or pass a `kd.losses.DistillationTerm` instance."
        )
    if isinstance(spec, dict):
        term = keras.saving.deserialize_keras_object(spec)
        if isinstance(term, DistillationTerm):
            return term
    if isinstance(spec, DecoupledKD):
        return DKDTerm(alpha=spec.alpha, beta=spec.beta)
    if isinstance(spec, LogitMSE):
        return LogitMSETerm()
    if isinstance(spec, KnowledgeDistillation):
        return KDTerm()
    if isinstance(spec, type) and issubclass(spec, DistillationTerm):
        raise ValueError(
            f"`{argument}` must be a term instance, not the class. Received: "
            f"{argument}={spec.__name__}; pass {spec.__name__}()."
        )
    if isinstance(spec, keras.losses.KLDivergence):
        raise ValueError(
            f"`{argument}` received keras.losses.KLDivergence(). Hinton's term "
            "(KL of the softened distributions, times T^2) is `'kd'`: pass "
            f"{argument}='kd'."
        )
    module = type(spec).__module__ or ""
    if module.startswith("keras.src.distillation"):
        raise ValueError(
            f"`{argument}` received a keras.distillation loss, {spec!r}. "
            f"keras_distill takes its own terms: {_keras_equivalent(spec)} "
            "See docs/migration.md."
        )
    raise ValueError(
        f"`{argument}` must be a term name ({sorted(TERMS)}), a "
        "`kd.losses.DistillationTerm`, or a KnowledgeDistillation, LogitMSE or "
        f"DecoupledKD loss. Received: {argument}={spec!r}"
    )
