"""Data from the user's own files: `.npz` arrays and folders of images.

Both are checked before training: pixel ranges and NaN, labels, the
hold-out's size, and the image files a folder holds.
"""

import os

import numpy as np

from keras_distill.data.splits import Splits, batched

# The largest value of an 8-bit image, for integer arrays of a wider type.
_EIGHT_BIT_MAX = 255


def _npz_images(x, key, path):
    """`x` as float32 in [0, 1] (integers scaled), with a channel axis for 3-D.

    `uint8` is divided by 255 and `uint16` by 65535 (their full range). Any
    other integer type (`int64` arrays often hold 8-bit pixels) is divided by
    255 when its values are in [0, 255], and refused otherwise: its range
    says nothing about the image's. Floats are kept as they are, bools
    become 0 and 1.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "buif":
        raise ValueError(
            f"{path!r}: `{key}` must hold numbers (images), but its dtype is "
            f"{x.dtype}. Save the images as uint8, uint16 or float32 in [0, 1]."
        )
    if x.dtype in (np.uint8, np.uint16):
        x = x.astype("float32") / float(np.iinfo(x.dtype).max)
    elif x.dtype.kind in "ui":
        low, high = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if low < 0 or high > _EIGHT_BIT_MAX:
            raise ValueError(
                f"{path!r}: `{key}` is {x.dtype} with values in [{low}, {high}], "
                "so its scale is unknown (inputs must be in [0, 1]). Save it as "
                "uint8 (0-255), uint16 (0-65535) or float32 already in [0, 1]."
            )
        x = x.astype("float32") / float(_EIGHT_BIT_MAX)
    else:
        x = x.astype("float32")  # floats as they are; bools as 0 and 1
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else [True]
        if not np.all(finite):
            raise ValueError(
                f"{path!r}: `{key}` holds NaN or infinite values (the first in "
                f"example {int(np.argmin(finite))}). Fix or drop those examples."
            )
    return x[..., None] if x.ndim == 3 else x


def _npz_labels(y, key, path):
    """`y` as int32 class ids: whole numbers >= 0, or one-hot rows (argmax)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        one_hot = (
            y.shape[1] > 1
            and y.dtype.kind in "buif"
            and np.all((y == 0) | (y == 1))
            and np.all(y.sum(axis=1) == 1)
        )
        if not one_hot:
            raise ValueError(
                f"{path!r}: `{key}` has shape {y.shape}, but its rows are not "
                "one-hot (exactly one 1, the rest 0). Labels must be class ids "
                "shaped (n,) or one-hot rows shaped (n, classes)."
            )
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(
            f"{path!r}: `{key}` must be class ids shaped (n,) (or one-hot rows "
            f"shaped (n, classes)). Received shape {y.shape}."
        )
    if y.dtype.kind not in "buif":
        raise ValueError(
            f"{path!r}: `{key}` must hold integer class ids, but its dtype is "
            f"{y.dtype}."
        )
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if np.any(bad):
            raise ValueError(
                f"{path!r}: `{key}` must hold whole class ids, but "
                f"{key}[{int(np.argmax(bad))}] = {y[np.argmax(bad)].item()!r} "
                f"({int(bad.sum())} of {len(y)} labels are fractional or not "
                "finite). Round or fix the labels; they are never truncated."
            )
    if y.size and y.min() < 0:
        raise ValueError(
            f"{path!r}: `{key}` must hold class ids >= 0, but "
            f"{key}[{int(np.argmin(y))}] = {y.min().item()!r}."
        )
    # Class ids count the classes (the student's outputs): one far above the
    # others makes a model of that many outputs (or wraps past int32).
    if y.size and y.max() >= max(_MAX_CLASSES, len(y)):
        raise ValueError(
            f"{path!r}: `{key}` holds the class id {y.max().item()!r} "
            f"({key}[{int(np.argmax(y))}]), which would make a model of that many "
            f"outputs for {len(y)} labels. Class ids must be 0, 1, ..., "
            "classes - 1; renumber them (e.g. `np.unique(y, return_inverse=True)`)."
        )
    return y.astype("int32")


# A label space larger than this (and than the number of labels) is a mistake.
_MAX_CLASSES = 100_000


def _npz_split(arrays, name, path):
    """The `(x, y)` of split `name` ("train", "val", "test"), checked, or None."""
    x_key, y_key = f"x_{name}", f"y_{name}"
    if x_key not in arrays and y_key not in arrays:
        return None
    for have, need in ((x_key, y_key), (y_key, x_key)):
        if have in arrays and need not in arrays:
            raise ValueError(
                f"{path!r} has `{have}` but no `{need}`: a split needs both its "
                f"inputs and its labels. The file has {sorted(arrays)}."
            )
    x = _npz_images(arrays[x_key], x_key, path)
    y = _npz_labels(arrays[y_key], y_key, path)
    if len(x) != len(y):
        raise ValueError(
            f"{path!r}: `{x_key}` has {len(x)} examples but `{y_key}` has "
            f"{len(y)} labels; they must have one label per example."
        )
    return x, y


def npz_arrays(path, val_fraction=0.1, seed=0):
    """Reads an `.npz` file with `x_train`, `y_train` (and optionally `x_val`,
    `y_val`, `x_test`, `y_test`) into split arrays.

    Images are scaled to [0, 1]: `uint8` by 255, `uint16` by 65535, other
    integer types by 255 when their values are in [0, 255] (refused
    otherwise); floats are kept. 3-D image arrays get a channel axis. Labels
    are whole class ids >= 0 (fractional labels are refused, never
    truncated) or one-hot rows (turned into ids). Each split needs both its
    arrays, of the same length. Without `x_val`, `val_fraction` of the
    training arrays (a random subset fixed by `seed`) is held out.

    Returns:
        A dict with `"train"`, `"val"` and `"test"` (`None` when absent)
        `(x, y)` tuples of float32 inputs and int32 labels.

    Example:

    ```python
    arrays = kd.data.npz_arrays("mnist.npz")
    x_train, y_train = arrays["train"]
    ```
    """
    with np.load(path) as archive:
        arrays = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as error:  # an object array: loading runs pickle
                raise ValueError(
                    f"{path!r}: `{key}` is an array of Python objects, which is "
                    "never unpickled (it could run code). Save numbers: images as "
                    "uint8, uint16 or float32 and labels as integers."
                ) from error
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise KeyError(
            f"{path!r} must contain arrays {missing}; it has {sorted(arrays)}."
        )
    x, y = _npz_split(arrays, "train", path)
    val = _npz_split(arrays, "val", path)
    if val is None:
        if (
            isinstance(val_fraction, bool)
            or not isinstance(val_fraction, int | float)
            or not 0 <= val_fraction < 1
        ):
            raise ValueError(
                "`val_fraction` must be a number in [0, 1) (the share of x_train "
                f"held out). Received: val_fraction={val_fraction!r}"
            )
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(len(x) * (1 - val_fraction))
        if cut == 0:
            raise ValueError(
                f"{path!r}: holding out val_fraction={val_fraction} of its "
                f"{len(x)} training examples leaves none to train on. Add "
                "examples, lower `val_fraction`, or save `x_val`/`y_val`."
            )
        val = (x[order[cut:]], y[order[cut:]])
        x, y = x[order[:cut]], y[order[:cut]]
    test = _npz_split(arrays, "test", path)
    for name, split in (("val", val), ("test", test)):
        if split is not None and split[0].shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{path!r}: `x_{name}` examples have shape {split[0].shape[1:]}, "
                f"but `x_train`'s have {x.shape[1:]}; every split must hold "
                "inputs of one shape."
            )
        if split is not None and len(split[1]) and len(y) and split[1].max() > y.max():
            # The class count is read from the training labels: a larger
            # label is a class the student never trains on (a test label
            # failed only after training; a val label added a class).
            raise ValueError(
                f"{path!r}: `y_{name}` holds the label {int(split[1].max())}, but "
                f"`y_train`'s labels are 0..{int(y.max())}, so the student would "
                "have no training example of it. Give every class training "
                "examples, or drop those examples."
            )
    return {"train": (x, y), "val": val, "test": test}


def load_npz(path, batch_size=64, val_fraction=0.1, seed=0):
    """Loads an `.npz` file (see `npz_arrays`) as batched `Splits`."""
    import tensorflow as tf

    arrays = npz_arrays(path, val_fraction=val_fraction, seed=seed)
    (x, y), val, test = arrays["train"], arrays["val"], arrays["test"]
    make = tf.data.Dataset.from_tensor_slices
    return Splits(
        batched(make((x, y)), batch_size, True, seed),
        batched(make(val), batch_size, False, seed),
        None if test is None else batched(make(test), batch_size, False, seed),
        int(max(y.max(), val[1].max()) + 1),
        tuple(x.shape[1:]),
        f"npz:{path}",
    )


# The files `image_dataset_from_directory` reads, by extension, and how each
# format's files begin.
_IMAGE_SIGNATURES = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".bmp": (b"BM",),
}


# How much of a file's end `_complete` reads.
_TAIL_BYTES = 1024


def _complete(kind, head, tail, size):
    """Whether an image file ends as its format ends (not truncated).

    PNG ends with its `IEND` chunk, JPEG with the end-of-image marker (some
    writers add a few bytes after it, so the last KiB is searched), GIF with
    its `;` trailer; a BMP is at least the size its header gives.
    """
    if kind == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    if kind in ("JPG", "JPEG"):
        return b"\xff\xd9" in tail
    if kind == "GIF":
        return tail.rstrip(b"\x00").endswith(b";")
    if kind == "BMP" and len(head) >= 6:
        return size >= int.from_bytes(head[2:6], "little")
    return True


def _count_images(directory):
    """The image files Keras reads under `directory` (its extensions)."""
    return sum(
        name.lower().endswith(tuple(_IMAGE_SIGNATURES))
        for _, _, files in os.walk(directory)
        for name in files
    )


def _check_image_folder(directory):
    """Refuses what would make the image pipeline fail mid-training, or read
    outside `directory`: a missing folder, a symbolic link leading out of it
    (or into a loop, or nowhere), an image file that is not the image its name says.
    Files of other extensions are skipped, as Keras skips them.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Image folder {directory!r} does not exist or is not a folder; it "
            "must hold one sub-folder of images per class."
        )
    root = os.path.realpath(directory)
    for folder, subfolders, files in os.walk(directory):
        for name in subfolders + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                inside = os.path.commonpath([root, target]) == root
                loop = os.path.isdir(path) and (
                    os.path.commonpath([target, os.path.realpath(folder)]) == target
                )
                if not os.path.exists(path):
                    raise FileNotFoundError(
                        f"{path!r} is a broken symbolic link (to {target!r}) in the "
                        f"image folder {directory!r}. Remove it or restore its target."
                    )
                if not inside or loop:
                    raise ValueError(
                        f"{path!r} is a symbolic link to {target!r}, "
                        + ("outside" if not inside else "a folder containing it in")
                        + f" the image folder {directory!r}; the loader would "
                        "read those files as training images. Remove the link, or "
                        "copy the images it should add into the folder."
                    )
                if os.path.isdir(path):
                    continue  # os.walk does not follow it; its target is inside.
            if name not in files:
                continue
            signatures = _IMAGE_SIGNATURES.get(os.path.splitext(name)[1].lower())
            if signatures is None:
                continue
            try:
                with open(path, "rb") as f:
                    head = f.read(8)
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - _TAIL_BYTES))
                    tail = f.read()
            except OSError as error:
                raise OSError(f"Cannot read image file {path!r}: {error}") from None
            kind = os.path.splitext(name)[1][1:].upper()
            if not head.startswith(signatures):
                raise ValueError(
                    f"{path!r} is not a {kind} image (its first bytes are "
                    f"{head!r}); the image loader would fail on it mid-training. "
                    "Remove or replace the file."
                )
            if not _complete(kind, head, tail, size):
                raise ValueError(
                    f"{path!r} is a {kind} image cut short ({size} bytes, without "
                    "the end its format writes): decoders fill the missing part "
                    "with grey or fail mid-training. Replace the file with a whole "
                    "copy, or remove it."
                )


def _class_folders(directory):
    """The class sub-folders of one split folder, refusing one without images.

    Keras makes every sub-folder a class: an empty one (or a stray
    `.ipynb_checkpoints`) became a class the student learns to never predict.
    """
    names = sorted(
        name
        for name in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, name))
    )
    for name in names:
        if not _count_images(os.path.join(directory, name)):
            raise ValueError(
                f"The class folder {os.path.join(directory, name)!r} holds no "
                f"images ({', '.join(sorted(_IMAGE_SIGNATURES))}), so it would be "
                "a class without examples. Add its images or remove the folder."
            )
    return names


def load_image_folder(
    directory, batch_size=64, image_size=(64, 64), val_fraction=0.1, seed=0
):
    """Loads `directory/<class>/*.png|jpg` (or `train/`, `val/`, `test/` sub-folders).

    Uses `keras.utils.image_dataset_from_directory`; images are resized to
    `image_size` and scaled to [0, 1]. The folder is checked first: a
    symbolic link that leads out of it (or into a loop) and a `.png`,
    `.jpg`, `.jpeg`, `.gif` or `.bmp` file that is not such an image are
    refused, naming the path. Returns `Splits`.
    """
    import keras

    directory = os.fspath(directory)
    size = tuple(image_size) if isinstance(image_size, list | tuple) else ()
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size
    ):
        raise ValueError(
            "`image_size` must be (height, width), two whole numbers >= 1. "
            f"Received: image_size={image_size!r}"
        )
    _check_image_folder(directory)

    def folder(path, **kwargs):
        return keras.utils.image_dataset_from_directory(
            path, batch_size=batch_size, image_size=image_size, seed=seed, **kwargs
        )

    if os.path.isdir(os.path.join(directory, "train")):
        classes = _class_folders(os.path.join(directory, "train"))
        for split in ("val", "test"):
            split_dir = os.path.join(directory, split)
            if os.path.isdir(split_dir) and _class_folders(split_dir) != classes:
                # Keras numbers each split's folders alone: a missing class
                # would shift the labels of the classes after it.
                raise ValueError(
                    f"{split_dir!r} has the classes {_class_folders(split_dir)}, "
                    f"but 'train' has {classes}; every split needs the same class "
                    "folders (an empty one is refused too), or its labels "
                    "would name other classes."
                )
        train = folder(os.path.join(directory, "train"))
        val_dir = os.path.join(directory, "val")
        val = folder(val_dir, shuffle=False) if os.path.isdir(val_dir) else None
        test_dir = os.path.join(directory, "test")
        test = folder(test_dir, shuffle=False) if os.path.isdir(test_dir) else None
    else:
        _class_folders(directory)
        try:
            train = folder(directory, validation_split=val_fraction, subset="training")
            val = folder(directory, validation_split=val_fraction, subset="validation")
        except ValueError as error:  # Keras: "No images found" (of a split)
            count = _count_images(directory)
            if not count:
                raise
            raise ValueError(
                f"{directory!r}: val_fraction={val_fraction} of its {count} images "
                "leaves a split with none (Keras says 'No images found'). Add "
                "images, change `val_fraction`, or give `train/` and `val/` "
                "sub-folders."
            ) from error
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
