"""What every term shares: output kinds, the batch reduction, logit helpers.

Pure functions of tensors (`keras.ops`, float32): turning a model's outputs
into logits (`to_logits`), Hinton's mixture of several teachers
(`mix_teachers`), the sample-weighted batch mean every term is reduced with
(`reduce_per_example`), logit standardization, and the hard-label mean with a
fused gradient that the distiller uses where it equals Keras's loss
(`sparse_ce_mean_loss`).
"""

import keras
import numpy as np
from keras import ops

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

    ```pycon
    >>> z = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> mixed = np.asarray(mix_teachers([z, z], [0.5, 0.5], [None, None], 4.0))
    >>> bool(np.allclose(mixed - mixed.max(), z - z.max(), atol=1e-5))
    True

    ```
    """
    temperature = ops.cast(temperature, "float32")
    log_terms = []
    for logits, weight, t_i in zip(teacher_logits, weights, temperatures):
        t_i = temperature if t_i is None else t_i
        log_terms.append(
            np.log(weight) + ops.log_softmax(ops.cast(logits, "float32") / t_i, axis=-1)
        )
    return temperature * ops.logsumexp(ops.stack(log_terms, axis=0), axis=0)


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

    ```pycon
    >>> import numpy as np
    >>> logits = np.zeros((2, 4), "float32")
    >>> round(float(sparse_ce_mean_loss(np.array([0, 3]), logits)), 4)
    1.3863

    ```
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

    ```pycon
    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0]], "float32"))
    >>> [round(float(v), 4) for v in z[0]]
    [-1.2247, 0.0, 1.2247]

    ```
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


def softened_log_probs(logits, temperature=1.0):
    """`log_softmax(logits / T)` over the last axis, in float32.

    Any rank: the class (vocabulary) axis is the last, so `(batch, classes)`
    gives one distribution per example and `(batch, seq, vocab)` one per
    token.
    """
    temperature = ops.cast(temperature, "float32")
    return ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1)


def kl_of_log_probs(log_p, log_q):
    """`KL(p || q) = sum p (log p - log q)` over the last axis, from logs.

    Positions where `p` is 0 add exactly 0 (`exp(-inf) * finite`); both
    arguments are log-probabilities, so no probability is clipped.
    """
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def log_mixture(log_p, log_q, weight_p: float):
    """`log(w p + (1 - w) q)` from `log p` and `log q`, for `w` in (0, 1).

    Computed with a log-sum-exp, so it stays finite where one of the two
    probabilities underflows.
    """
    weight_p = float(weight_p)
    return ops.logaddexp(log_p + np.log(weight_p), log_q + np.log(1.0 - weight_p))
