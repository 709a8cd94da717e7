"""Data sources: the bundled scikit-learn digits (and, later, tfds names)."""

DIGITS_SHAPE = (8, 8, 1)
NUM_DIGIT_CLASSES = 10


def load_digits(seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2):
    """Loads scikit-learn's bundled handwritten digits as a fixed split.

    Images are 8x8 grey levels scaled to [0, 1], shaped `(n, 8, 8, 1)`,
    labels are integers 0-9. The split is stratified and fixed by `seed`, so
    every run (and every test) sees the same examples.

    Args:
        seed: Seed of the split. Defaults to `0`.
        val_fraction: Fraction of all examples used for validation.
            Defaults to `0.15`.
        test_fraction: Fraction of all examples used for testing.
            Defaults to `0.2`.

    Returns:
        A dict with keys `"train"`, `"val"`, `"test"`, each an `(x, y)` tuple
        of float32 images and int32 labels.

    Example:

    >>> splits = load_digits()
    >>> splits["train"][0].shape[1:]
    (8, 8, 1)
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    for name, value in (
        ("val_fraction", val_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 < value < 1.0:
            raise ValueError(f"`{name}` must be in (0, 1). Received: {name}={value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            "`val_fraction + test_fraction` must be < 1. Received: "
            f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r}"
        )
    x, y = sk_load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape((-1,) + DIGITS_SHAPE)
    y = y.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        random_state=seed,
        stratify=y_rest,
    )
    return {
        "train": (x_train, y_train),
        "val": (x_val, y_val),
        "test": (x_test, y_test),
    }


def as_dataset(x, y=None, batch_size: int = 64, shuffle: bool = False, seed: int = 0):
    """Wraps arrays in a batched, prefetched `tf.data.Dataset`."""
    import tensorflow as tf

    data = x if y is None else (x, y)
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


__all__ = ["load_digits", "as_dataset", "DIGITS_SHAPE", "NUM_DIGIT_CLASSES"]
