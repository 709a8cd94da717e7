"""Fingerprints: of the teacher (its weights), of the data, of each example, of a file.

The manifest keeps the teacher's fingerprint and the data's; the per-example
fingerprints are stored beside the targets, so that reading pairs every
target with the example it was computed from.
"""

import functools
import hashlib
import json

import keras
import numpy as np


def teacher_fingerprint(teacher, trainable=None):
    """A sha256 of the teacher's architecture and weights.

    Args:
        teacher: The model.
        trainable: `None` to hash its config as it is; `True` or `False` to
            hash it with every `trainable` flag set so (a `Distiller` freezes
            its teacher, which changes nothing the cache holds). Defaults to
            `None`.
    """
    digest = hashlib.sha256()
    try:
        config = teacher.get_config()
        if trainable is not None:
            config = _with_trainable(config, trainable)
        config = json.dumps(config, sort_keys=True, default=str)
    except NotImplementedError:
        config = type(teacher).__name__
    digest.update(config.encode())
    for weight in teacher.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def same_teacher(teacher, fingerprint: str) -> bool:
    """Whether `teacher` has `fingerprint`, whatever its `trainable` flags."""
    return any(
        teacher_fingerprint(teacher, trainable) == fingerprint
        for trainable in (None, True, False)
    )


def _with_trainable(config, value):
    """`config` (nested dicts and lists) with every `trainable` key set to `value`."""
    if isinstance(config, dict):
        return {
            key: value if key == "trainable" else _with_trainable(item, value)
            for key, item in config.items()
        }
    if isinstance(config, list | tuple):
        return [_with_trainable(item, value) for item in config]
    return config


def _batches(x, batch_size):
    """Yields input batches (NumPy) from arrays or a tf.data.Dataset."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        for batch in x:
            if isinstance(batch, tuple | list):
                batch = batch[0]
            yield keras.ops.convert_to_numpy(batch)
    else:
        x = np.asarray(x)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size]


# Each example's input is fingerprinted by two fixed random projections of
# its values (float64), stored with its targets and compared when reading, so
# targets never pair with the wrong examples (a permuted or filtered `x`).
_FINGERPRINT_WIDTH = 2
_FINGERPRINT_RTOL = 1e-6


def _projection(size):
    rng = np.random.default_rng(20231123)
    return rng.standard_normal((size, _FINGERPRINT_WIDTH))


def fingerprints(x):
    """Per-example fingerprints `(n, 2)` (float64) of an input array."""
    x = np.asarray(x)
    flat = x.reshape(len(x), -1).astype("float64")
    return flat @ _projection(flat.shape[1])


def _fingerprints_tf(x):
    """The same fingerprints as `fingerprints`, inside a `tf.data` pipeline."""
    import tensorflow as tf

    size = int(np.prod(x.shape[1:]))  # static: examples have a fixed shape
    flat = tf.cast(tf.reshape(x, [-1, size]), tf.float64)
    return tf.matmul(flat, tf.constant(_projection(size)))


def _fingerprints_match(a, b):
    return np.abs(a - b) <= _FINGERPRINT_RTOL * (np.abs(a) + np.abs(b) + 1.0)


# Caches built since: fingerprints of the float32 *bits*, compared exactly. The
# relative tolerance above let a large feature hide the others (with
# `x[:, 0] = 1e7` a permutation passed). Each example's float32 values are
# read as 16-bit words and projected on fixed random integer weights, in
# float64: every product and partial sum is an integer below 2**53, hence
# exact in any summation order (NumPy here, `tf.matmul` in a pipeline), so
# equal bits give equal fingerprints and no tolerance is needed.
FINGERPRINT_BITS = "float32-bits"


@functools.lru_cache(maxsize=8)
def _bit_weights(words):
    # 2**16 per word times 2**bits per weight, summed over `words`, < 2**53.
    bits = max(1, min(16, 52 - 16 - int(np.ceil(np.log2(max(words, 2))))))
    rng = np.random.default_rng(20231124)
    weights = rng.integers(1, 2**bits, (words, _FINGERPRINT_WIDTH))
    return weights.astype("float64")


def bit_fingerprints(x, chunk=4096):
    """Per-example exact fingerprints `(n, 2)` (float64) of an input array."""
    x = np.asarray(x)
    flat = np.ascontiguousarray(x.reshape(len(x), -1), dtype="float32")
    words = flat.view(np.uint16)
    weights = _bit_weights(words.shape[1])
    out = np.empty((len(words), _FINGERPRINT_WIDTH))
    for start in range(0, len(words), chunk):
        out[start : start + chunk] = words[start : start + chunk] @ weights
    return out


def _bit_fingerprints_tf(x):
    """The same fingerprints as `bit_fingerprints`, inside a `tf.data` pipeline."""
    import tensorflow as tf

    size = int(np.prod(x.shape[1:]))
    flat = tf.cast(tf.reshape(x, [-1, size]), tf.float32)
    words = tf.reshape(tf.bitcast(flat, tf.uint16), [-1, 2 * size])
    return tf.matmul(tf.cast(words, tf.float64), tf.constant(_bit_weights(2 * size)))


def _file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
