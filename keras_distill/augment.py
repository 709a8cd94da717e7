"""Consistent augmentation: one augmented batch, seen by teacher and student.

"Patient and consistent" teaching (Beyer, Zhai, Royer, Markeeva, Anil and
Kolesnikov, "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022, https://arxiv.org/abs/2106.05237): the teacher and
the student see the *same* aggressively augmented input in every step, the
teacher runs online, the loss matches the teacher's function on those
inputs (function matching, KD term only, often on mixed-up inputs), and the
schedule is long.

This module builds that from `tf.data` maps, so the `Distiller` needs no
change: an augmentation is applied once per batch, in the input pipeline,
and the `Distiller` feeds the batch it receives to both the teacher and the
student. Augmentations are stateless functions of `(x, seed)` on a whole
batch; `augment_dataset` draws a fresh seed for every batch (different
every epoch, repeatable for a given `seed`).

- `mixup(alpha)`: each example mixed with another example of the batch,
  `lam * x_i + (1 - lam) * x_j`, `lam ~ Beta(alpha, alpha)` per example
  (Zhang et al., "mixup", ICLR 2018). The labels of a mixed batch are no
  longer the labels of its examples, so mixing augmentations need
  `labels="drop"` (function matching: the KD term alone).
- `shift(max_shift)`, `scale(low, high)`, `noise(stddev)`: label-preserving
  augmentations for 1-D signals (and, along the first spatial axis, images).
- `flip(axis)`: a random mirror image (for images, a horizontal flip).
- `compose(*augmentations)`: applied in order.

Function matching from arrays is one call:

```python
augmentation = kd.augment.compose(kd.augment.shift(4), kd.augment.mixup(1.0))
train_ds = kd.augment.function_matching_dataset(x_train, 64, augmentation, seed=0)
distiller = kd.Distiller(student, teacher, temperature=1.0)
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(train_ds, epochs=200)  # x-only batches: KD term only
```

**The teacher-output cache cannot serve augmented batches.**
`keras_distill.cache.TeacherCache` stores the teacher's outputs for fixed
inputs; an input augmented differently in every epoch has no stored output
(and the cache's fingerprint check refuses it). Augmentation with a cache
would only be possible if the augmentation were deterministic per epoch
(the same augmented copy of each example every epoch, i.e. a fixed,
enlarged data set, which is then cached like any other data); that is not
"consistent teaching" in Beyer et al.'s sense, whose gains come from fresh
views. `augment_dataset` refuses batches that carry precomputed teacher
outputs for this reason.
"""

import keras

from keras_distill import schedules

LABEL_MODES = ("keep", "drop")


class Augmentation:
    """A stateless batch augmentation: `augmentation(x, seed) -> x`.

    `x` is a float batch `(batch, ...)`; `seed` a stateless seed, an int
    tensor of shape `(2,)`. Subclasses implement `apply`. `mixes` says
    whether the augmentation combines examples (then the labels no longer
    fit the inputs).
    """

    mixes = False

    def __call__(self, x, seed):
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        return self.apply(x, seed)

    def apply(self, x, seed):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _per_example_shape(x):
    import tensorflow as tf

    rank = x.shape.rank
    return tf.concat([tf.shape(x)[:1], tf.ones([rank - 1], tf.int32)], axis=0)


class Mixup(Augmentation):
    """See `mixup`."""

    mixes = True

    def __init__(self, alpha=1.0):
        self.alpha = schedules.number(alpha, "alpha")
        if self.alpha <= 0:
            raise ValueError(f"mixup's `alpha` must be > 0. Received: alpha={alpha!r}")

    def apply(self, x, seed):
        import tensorflow as tf

        seeds = tf.random.experimental.stateless_split(seed, 3)
        n = tf.shape(x)[0]
        shape = _per_example_shape(x)
        a = tf.random.stateless_gamma(shape, seeds[0], alpha=self.alpha, dtype=x.dtype)
        b = tf.random.stateless_gamma(shape, seeds[1], alpha=self.alpha, dtype=x.dtype)
        lam = a / (a + b)
        partner = tf.random.experimental.stateless_shuffle(tf.range(n), seeds[2])
        return lam * x + (1.0 - lam) * tf.gather(x, partner)


class Shift(Augmentation):
    """See `shift`."""

    def __init__(self, max_shift, axis=1, mode="roll"):
        self.max_shift = schedules.whole_number(max_shift, "max_shift")
        self.axis = int(axis)
        if self.axis == 0:
            raise ValueError("`shift` cannot shift along the batch axis (axis=0).")
        if mode not in ("roll", "zeros"):
            raise ValueError(
                f"`mode` must be 'roll' or 'zeros'. Received: mode={mode!r}"
            )
        self.mode = mode

    def apply(self, x, seed):
        import tensorflow as tf

        if self.max_shift == 0:
            return x
        rank = x.shape.rank
        if rank is not None and not (-rank < self.axis < rank and self.axis % rank):
            raise ValueError(
                f"`shift(axis={self.axis})` needs an axis of the examples, in "
                f"[1, {rank - 1}] (or [-{rank - 1}, -1]), but the batches have shape "
                f"{tuple(x.shape)}."
            )
        length = tf.shape(x)[self.axis]
        shifts = tf.random.stateless_uniform(
            tf.shape(x)[:1],
            seed,
            minval=-self.max_shift,
            maxval=self.max_shift + 1,
            dtype=tf.int32,
        )
        # Per-example circular shift, as a gather along `axis`.
        positions = tf.range(length)[None, :] - shifts[:, None]
        index = tf.math.floormod(positions, length)
        moved = tf.gather(x, index, axis=self.axis, batch_dims=1)
        if self.mode == "zeros":
            inside = tf.cast((positions >= 0) & (positions < length), x.dtype)
            rank, axis = x.shape.rank, self.axis % x.shape.rank
            shape = [-1] + [1] * (axis - 1) + [length] + [1] * (rank - axis - 1)
            moved = moved * tf.reshape(inside, shape)
        return moved


class Scale(Augmentation):
    """See `scale`."""

    def __init__(self, low=0.8, high=1.2):
        self.low = schedules.number(low, "low")
        self.high = schedules.number(high, "high")
        if not 0 < self.low <= self.high:
            raise ValueError(
                f"`scale` needs 0 < low <= high. Received: low={low!r}, high={high!r}"
            )

    def apply(self, x, seed):
        import tensorflow as tf

        factor = tf.random.stateless_uniform(
            _per_example_shape(x), seed, self.low, self.high, dtype=x.dtype
        )
        return x * factor


class Noise(Augmentation):
    """See `noise`."""

    def __init__(self, stddev):
        self.stddev = schedules.number(stddev, "stddev")
        if self.stddev < 0:
            raise ValueError(f"`stddev` must be >= 0. Received: stddev={stddev!r}")

    def apply(self, x, seed):
        import tensorflow as tf

        return x + self.stddev * tf.random.stateless_normal(
            tf.shape(x), seed, dtype=x.dtype
        )


class Flip(Augmentation):
    """See `flip`."""

    def __init__(self, axis=2, probability=0.5):
        self.axis = int(axis)
        if self.axis == 0:
            raise ValueError("`flip` cannot flip along the batch axis (axis=0).")
        self.probability = schedules.number(probability, "probability")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(
                "`probability` must be in [0, 1]. Received: "
                f"probability={probability!r}"
            )

    def apply(self, x, seed):
        import tensorflow as tf

        flip = tf.random.stateless_uniform(tf.shape(x)[:1], seed) < self.probability
        flip = tf.reshape(flip, _per_example_shape(x))
        return tf.where(flip, tf.reverse(x, axis=[self.axis]), x)


class Compose(Augmentation):
    """See `compose`."""

    def __init__(self, augmentations):
        self.augmentations = list(augmentations)
        for a in self.augmentations:
            if not isinstance(a, Augmentation):
                raise TypeError(
                    "`compose` takes `kd.augment` augmentations. Received: "
                    f"{a!r} of type {type(a).__name__}"
                )
        self.mixes = any(a.mixes for a in self.augmentations)

    def apply(self, x, seed):
        import tensorflow as tf

        if not self.augmentations:
            return x
        seeds = tf.random.experimental.stateless_split(seed, len(self.augmentations))
        for i, augmentation in enumerate(self.augmentations):
            x = augmentation.apply(x, seeds[i])
        return x


def mixup(alpha: float = 1.0) -> Augmentation:
    """Mixup within the batch: `lam * x_i + (1 - lam) * x_partner(i)`.

    `lam ~ Beta(alpha, alpha)`, drawn per example; partners are a random
    permutation of the batch (Zhang, Cisse, Dauphin and Lopez-Paz, "mixup:
    Beyond Empirical Risk Minimization", ICLR 2018). Beyer et al. (2022)
    use it for function matching: the teacher labels the mixed input.

    Args:
        alpha: The Beta distribution's parameter, > 0 (1.0 is uniform).
            Defaults to `1.0`.

    Example:

    ```python
    train_ds = kd.augment.function_matching_dataset(x, 64, kd.augment.mixup())
    ```
    """
    return Mixup(alpha)


def shift(max_shift: int, axis: int = 1, mode: str = "roll") -> Augmentation:
    """Shifts each example by a random whole number of steps along `axis`.

    Args:
        max_shift: Shifts are drawn uniformly from `[-max_shift, max_shift]`.
        axis: The axis to shift (1: time for `(batch, length, channels)`
            signals). Defaults to `1`.
        mode: `"roll"` (circular) or `"zeros"` (vacated steps are 0).
            Defaults to `"roll"`.
    """
    return Shift(max_shift, axis, mode)


def scale(low: float = 0.8, high: float = 1.2) -> Augmentation:
    """Multiplies each example by a factor drawn uniformly from `[low, high]`."""
    return Scale(low, high)


def noise(stddev: float) -> Augmentation:
    """Adds Gaussian noise of standard deviation `stddev` to every value."""
    return Noise(stddev)


def flip(axis: int = 2, probability: float = 0.5) -> Augmentation:
    """Mirrors each example along `axis` with `probability` (label-preserving
    only where a mirrored image is still of its class: clothes, not digits).

    `axis=2` is the width of `(batch, height, width, channels)` images: a
    horizontal flip.
    """
    return Flip(axis, probability)


def compose(*augmentations) -> Augmentation:
    """Applies `augmentations` in order, each with its own seed."""
    return Compose(augmentations)


def signal_augmentation(
    max_shift: int = 4, scale_range=(0.8, 1.2), stddev: float = 0.1, mix=True
) -> Augmentation:
    """The 1-D signal recipe used by `benchmarks/quality.py` on MNIST-1D.

    Random circular shift, per-example scaling, Gaussian noise, then (with
    `mix`) mixup with `alpha=1`.
    """
    parts = [shift(max_shift), scale(*scale_range), noise(stddev)]
    if mix:
        parts.append(mixup(1.0))
    return compose(*parts)


def augment_dataset(dataset, augmentation, seed: int = 0, labels: str = "keep"):
    """Applies `augmentation` to the inputs of every batch of `dataset`.

    A fresh stateless seed is drawn for every batch, different in every
    epoch (every iteration of the dataset) and repeatable for a given
    `seed`. Teacher and student then see the same augmented batch, because
    the `Distiller` runs both on the batch it receives.

    Args:
        dataset: A batched `tf.data.Dataset` of `x`, `(x, y)` or
            `(x, y, sample_weight)` with float inputs `x`. Batches carrying
            precomputed teacher outputs are refused (see the module
            docstring: the cache cannot serve augmented inputs).
        augmentation: An `Augmentation` (e.g. from `compose`).
        seed: Seed of the augmentations. Defaults to `0`.
        labels: `"keep"` keeps `y` (and sample weights) with the augmented
            `x` (only for label-preserving augmentations); `"drop"` yields
            the augmented `x` alone, so the `Distiller` trains on the KD term
            only (function matching). Defaults to `"keep"`.

    Returns:
        A `tf.data.Dataset`.
    """
    import tensorflow as tf

    if not isinstance(augmentation, Augmentation):
        raise TypeError(
            "`augmentation` must be a `kd.augment` augmentation. Received: "
            f"{augmentation!r} of type {type(augmentation).__name__}"
        )
    if labels not in LABEL_MODES:
        raise ValueError(
            f"`labels` must be one of {LABEL_MODES}. Received: labels={labels!r}"
        )
    spec = dataset.element_spec
    if isinstance(spec, tuple) and spec and isinstance(spec[-1], dict):
        raise ValueError(
            "These batches carry precomputed teacher outputs (the teacher-output "
            "cache): they belong to the unaugmented inputs, so augmenting the "
            "inputs would train the student on mismatched targets. Distill "
            "online (without the cache) when you augment."
        )
    has_labels = isinstance(spec, tuple) and len(spec) > 1
    if augmentation.mixes and has_labels and labels == "keep":
        raise ValueError(
            f"{augmentation!r} mixes examples, so the labels no longer match the "
            "inputs. Pass labels='drop' (function matching: the teacher's "
            "outputs on the mixed inputs are the only target)."
        )
    seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
    seeds = seeds.batch(2, drop_remainder=True)

    # Plain Python structure checks only: nothing for AutoGraph to convert.
    @tf.autograph.experimental.do_not_convert
    def apply(batch, pair):
        if isinstance(batch, tuple):
            x, rest = batch[0], batch[1:]
        else:
            x, rest = batch, ()
        if isinstance(x, dict | tuple | list):
            raise ValueError(
                "`augment_dataset` needs a single input tensor per batch. Received "
                f"inputs of structure {keras.tree.map_structure(lambda t: t.shape, x)}."
            )
        x = augmentation(x, pair)
        if labels == "drop" or not rest:
            return x
        return (x, *rest)

    zipped = tf.data.Dataset.zip((dataset, seeds))
    return zipped.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def function_matching_dataset(
    x, batch_size: int, augmentation, seed: int = 0, shuffle: bool = True
):
    """x-only batches of augmented inputs for function matching, from arrays.

    Shuffles `x` every epoch, batches it, and applies `augmentation` to each
    batch (`augment_dataset(..., labels="drop")`). A `Distiller` trained on
    it optimises the KD term alone, on inputs the teacher labels online:
    Beyer et al.'s function matching (use `temperature=1.0` and a long
    schedule, as they do).

    Args:
        x: Input array, `(n, ...)`.
        batch_size: Examples per batch.
        augmentation: An `Augmentation`.
        seed: Seed of the shuffles and augmentations. Defaults to `0`.
        shuffle: Reshuffle every epoch. Defaults to `True`.

    Returns:
        A `tf.data.Dataset` of input batches.
    """
    import numpy as np
    import tensorflow as tf

    x = np.asarray(x, dtype="float32")
    if len(x) == 0:
        raise ValueError("`x` holds no examples.")
    ds = tf.data.Dataset.from_tensor_slices(x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    return augment_dataset(ds, augmentation, seed=seed, labels="drop")


__all__ = [
    "Augmentation",
    "LABEL_MODES",
    "augment_dataset",
    "compose",
    "function_matching_dataset",
    "mixup",
    "noise",
    "scale",
    "shift",
    "signal_augmentation",
]
