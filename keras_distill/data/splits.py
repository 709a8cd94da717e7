"""What every image source returns: batched `tf.data` splits (`Splits`)."""

import dataclasses


@dataclasses.dataclass
class Splits:
    """Batched `tf.data` train/val/test datasets of `(image, label)` pairs.

    Attributes:
        train, val, test: Batched datasets (`test` may be `None`).
        num_classes: Number of classes.
        input_shape: Shape of one example, e.g. `(28, 28, 1)`.
        name: Where the data came from.
    """

    train: object
    val: object
    test: object
    num_classes: int
    input_shape: tuple
    name: str


def batched(ds, batch_size, shuffle, seed):
    import tensorflow as tf

    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
