"""Data sources: the bundled digits, tensorflow-datasets names, .npz arrays
and image folders, all as batched `tf.data` pipelines."""

import dataclasses
import os
import subprocess
import sys

import numpy as np

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


def _normalise(image, label):
    import tensorflow as tf

    image = tf.cast(image, tf.float32) / 255.0
    if image.shape.rank == 2:
        image = image[..., None]
    return image, tf.cast(label, tf.int32)


def _batched(ds, batch_size, shuffle, seed):
    import tensorflow as tf

    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_tfds(
    name,
    batch_size=64,
    val_fraction=0.1,
    data_dir=None,
    download=True,
    download_timeout=30.0,
    seed=0,
):
    """Loads a `tensorflow-datasets` image classification dataset.

    Images are scaled to [0, 1] float32, labels are int32, and `val_fraction`
    of the train split is held out for validation. A dataset that is not yet
    prepared in `data_dir` is downloaded in a separate process bounded by
    `download_timeout` seconds, so an offline machine fails fast with a
    clear message (tfds itself retries for minutes).

    Args:
        name: A tfds name, e.g. `"mnist"` or `"cifar10"`.
        batch_size: Defaults to `64`.
        val_fraction: Fraction of the train split used for validation.
            Defaults to `0.1`.
        data_dir: tfds data folder. Defaults to `None` (tfds's default,
            `~/tensorflow_datasets`).
        download: Download when not prepared. Defaults to `True`.
        download_timeout: Seconds allowed for the download. Defaults to `30`.
        seed: Shuffle seed. Defaults to `0`.

    Returns:
        `Splits`.

    Example:

    ```python
    splits = kd.data.load_tfds("mnist", batch_size=128)
    ```
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading 'tfds:' data needs tensorflow-datasets: "
            "`pip install keras-distill[tfds]`."
        ) from error
    percent = int(round(100 * (1 - val_fraction)))
    split = [f"train[:{percent}%]", f"train[{percent}%:]", "test"]

    def attempt():
        return tfds.load(
            name,
            split=split,
            as_supervised=True,
            with_info=True,
            download=False,
            data_dir=data_dir,
        )

    try:
        (train, val, test), info = attempt()
    except (AssertionError, FileNotFoundError) as error:
        if not download:
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared in "
                f"{data_dir or '~/tensorflow_datasets'} and download=False."
            ) from error
        _download_bounded(name, data_dir, download_timeout)
        (train, val, test), info = attempt()
    num_classes = info.features["label"].num_classes
    input_shape = tuple(info.features["image"].shape)
    train = train.map(_normalise)
    val, test = val.map(_normalise), test.map(_normalise)
    return Splits(
        _batched(train, batch_size, True, seed),
        _batched(val, batch_size, False, seed),
        _batched(test, batch_size, False, seed),
        num_classes,
        input_shape if len(input_shape) == 3 else (*input_shape, 1),
        f"tfds:{name}",
    )


def _download_bounded(name, data_dir, timeout):
    code = (
        "import sys, tensorflow_datasets as tfds\n"
        "builder = tfds.builder(sys.argv[1], data_dir=sys.argv[2] or None)\n"
        "builder.download_and_prepare()\n"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", code, name, data_dir or ""],
            timeout=timeout,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(
            f"tfds dataset {name!r} is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'} and downloading it did not "
            f"finish within {timeout:.0f} s (is this machine offline?). Prepare it "
            f"where there is internet (`tfds build {name}`) and copy the data "
            "folder here, or pass `data_dir=` pointing at prepared data."
        ) from None
    except subprocess.CalledProcessError as error:
        last = (error.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(
            f"Downloading tfds dataset {name!r} failed: {last[0]}"
        ) from None


def load_npz(path, batch_size=64, val_fraction=0.1, seed=0):
    """Loads arrays from an `.npz` file with `x_train`, `y_train` (and
    optionally `x_val`, `y_val`, `x_test`, `y_test`).

    Integer images are scaled to [0, 1]; without `x_val`, `val_fraction` of
    the training arrays is held out. Returns `Splits`.
    """
    import tensorflow as tf

    with np.load(path) as archive:
        arrays = dict(archive)
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise KeyError(
            f"{path!r} must contain arrays {missing}; it has {sorted(arrays)}."
        )

    def prepare(x):
        x = np.asarray(x)
        x = x.astype("float32") / 255.0 if x.dtype.kind in "ui" else x.astype("float32")
        return x[..., None] if x.ndim == 3 else x

    x, y = prepare(arrays["x_train"]), arrays["y_train"].astype("int32")
    if "x_val" in arrays:
        val = (prepare(arrays["x_val"]), arrays["y_val"].astype("int32"))
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(len(x) * (1 - val_fraction))
        val = (x[order[cut:]], y[order[cut:]])
        x, y = x[order[:cut]], y[order[:cut]]
    test = None
    if "x_test" in arrays:
        test = (prepare(arrays["x_test"]), arrays["y_test"].astype("int32"))
    make = tf.data.Dataset.from_tensor_slices
    return Splits(
        _batched(make((x, y)), batch_size, True, seed),
        _batched(make(val), batch_size, False, seed),
        None if test is None else _batched(make(test), batch_size, False, seed),
        int(max(y.max(), val[1].max()) + 1),
        tuple(x.shape[1:]),
        f"npz:{path}",
    )


def load_image_folder(
    directory, batch_size=64, image_size=(64, 64), val_fraction=0.1, seed=0
):
    """Loads `directory/<class>/*.png|jpg` (or `train/`, `val/`, `test/` sub-folders).

    Uses `keras.utils.image_dataset_from_directory`; images are resized to
    `image_size` and scaled to [0, 1]. Returns `Splits`.
    """
    import keras

    def folder(path, **kwargs):
        return keras.utils.image_dataset_from_directory(
            path, batch_size=batch_size, image_size=image_size, seed=seed, **kwargs
        )

    if os.path.isdir(os.path.join(directory, "train")):
        train = folder(os.path.join(directory, "train"))
        val_dir = os.path.join(directory, "val")
        val = folder(val_dir, shuffle=False) if os.path.isdir(val_dir) else None
        test_dir = os.path.join(directory, "test")
        test = folder(test_dir, shuffle=False) if os.path.isdir(test_dir) else None
    else:
        train = folder(directory, validation_split=val_fraction, subset="training")
        val = folder(directory, validation_split=val_fraction, subset="validation")
        test = None
    num_classes = len(train.class_names)
    scale = keras.layers.Rescaling(1.0 / 255)

    def prepare(ds):
        return None if ds is None else ds.map(lambda x, y: (scale(x), y))

    channels = train.element_spec[0].shape[-1]
    return Splits(
        prepare(train),
        prepare(val),
        prepare(test),
        num_classes,
        (*image_size, channels),
        f"images:{directory}",
    )


def load(source="digits", batch_size=64, seed=0, **kwargs):
    """Loads data by name: `"digits"`, `"tfds:NAME"`, `"npz:PATH"` or `"images:DIR"`.

    Args:
        source: The data source. Defaults to `"digits"` (bundled with
            scikit-learn, works offline).
        batch_size: Defaults to `64`.
        seed: Split and shuffle seed. Defaults to `0`.
        **kwargs: Passed to the loader (`load_tfds`, `load_npz`,
            `load_image_folder`).

    Returns:
        `Splits`.

    Example:

    ```python
    splits = kd.data.load("tfds:mnist", batch_size=128)
    distiller.fit(splits.train, validation_data=splits.val, epochs=5)
    ```
    """
    import tensorflow as tf

    if not isinstance(source, str):
        raise TypeError(f"`source` must be a string. Received: source={source!r}")
    kind, _, rest = source.partition(":")
    if source == "digits":
        d = load_digits(seed=seed)
        make = tf.data.Dataset.from_tensor_slices
        return Splits(
            _batched(make(d["train"]), batch_size, True, seed),
            _batched(make(d["val"]), batch_size, False, seed),
            _batched(make(d["test"]), batch_size, False, seed),
            NUM_DIGIT_CLASSES,
            DIGITS_SHAPE,
            "digits",
        )
    if kind == "tfds" and rest:
        return load_tfds(rest, batch_size=batch_size, seed=seed, **kwargs)
    if kind == "npz" and rest:
        return load_npz(rest, batch_size=batch_size, seed=seed, **kwargs)
    if kind == "images" and rest:
        return load_image_folder(rest, batch_size=batch_size, seed=seed, **kwargs)
    raise ValueError(
        "`source` must be 'digits', 'tfds:NAME', 'npz:PATH' or 'images:DIR'. "
        f"Received: source={source!r}"
    )
