"""MNIST and Fashion-MNIST: the IDX file format and where to find the files.

Both sets are 70,000 28x28 grey images in 10 classes (60,000 for training,
10,000 for testing), stored as four IDX files (LeCun et al.'s format: a
big-endian header, then the raw bytes). `load_image_set(name)` finds them,
in this order:

1. the Keras cache (`~/.keras/datasets`, or `$KERAS_HOME/datasets`), where
   `keras.datasets.<name>.load_data()` keeps them (`fashion-mnist/*.gz`,
   `mnist.npz`): read here, without a network;
2. a folder of IDX files (`.gz` or raw): the `directory` argument, else the
   sub-folder `fashion_mnist/` (or `fashion-mnist/`) or `mnist/` of the
   folder in the `KERAS_DISTILL_DATA` environment variable;
3. the folder the Debian package installs (`apt-get install
   dataset-fashion-mnist`: `/usr/share/datasets/fashion-mnist`);
4. `keras.datasets.<name>.load_data()` downloading into the cache, in a
   separate process bounded by `download_timeout` seconds (an offline
   machine fails fast instead of hanging).

When none has them, one error says where to get them. `read_idx` parses a
file with NumPy and checks its magic number, its dimensions and its size
(a truncated or padded file is refused, naming it).
"""

import functools
import gzip
import os
import subprocess
import sys

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
DATA_ENV = "KERAS_DISTILL_DATA"

# The IDX element types (third byte of the magic number) -> NumPy dtype
# (big-endian, as the format stores them).
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# name -> (title, sub-folder names, Debian folder, keras.datasets module,
# where to download the IDX files by hand).
_SETS = {
    "fashion_mnist": (
        "Fashion-MNIST",
        ("fashion_mnist", "fashion-mnist"),
        "/usr/share/datasets/fashion-mnist",
        "fashion_mnist",
        "https://github.com/zalandoresearch/fashion-mnist#get-the-data",
    ),
    "mnist": (
        "MNIST",
        ("mnist",),
        None,
        "mnist",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
}
NAMES = tuple(_SETS)

# The four files of a set: (role, file stem, IDX dimensions).
_FILES = (
    ("x_train", "train-images", 3),
    ("y_train", "train-labels", 1),
    ("x_test", "t10k-images", 3),
    ("y_test", "t10k-labels", 1),
)


def _spellings(stem, ndim):
    """The names a file goes by: `train-images-idx3-ubyte` or `…images.idx3…`."""
    names = (f"{stem}-idx{ndim}-ubyte", f"{stem}.idx{ndim}-ubyte")
    return [name + ext for name in names for ext in (".gz", "")]


def read_idx(path, ndim=None):
    """Reads one IDX file (`.gz` or raw) into a NumPy array.

    The header is checked: two zero bytes, a known element type, the number
    of dimensions (`ndim`, when given), then one big-endian 32-bit size per
    dimension; the data must hold exactly that many elements.

    Args:
        path: The file; a name ending in `.gz` is decompressed.
        ndim: The number of dimensions expected (`3` for images, `1` for
            labels). Defaults to `None` (any).

    Returns:
        The array, in the file's element type (native byte order).

    Example:

    ```python
    x = kd.data.idx.read_idx("train-images-idx3-ubyte.gz", ndim=3)
    ```
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, OSError) as error:
        raise ValueError(
            f"IDX file {path!r} cannot be read ({error}); it is damaged or "
            "truncated. Download it again."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: its magic number is "
            f"{raw[:4].hex() or 'empty'} (expected 0000, a type byte 08-0e, "
            "then the number of dimensions)."
        )
    dtype, dims = _IDX_TYPES[raw[2]], raw[3]
    if ndim is not None and dims != ndim:
        raise ValueError(
            f"IDX file {path!r} has {dims} dimensions; expected {ndim} "
            f"({'images' if ndim == 3 else 'labels'}). Is it the right file?"
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(
            f"IDX file {path!r} is truncated: {len(raw)} bytes, shorter than its "
            f"{header}-byte header. Download it again."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", dims, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {path!r} is {what}: {len(raw)} bytes, but its header "
            f"(shape {shape}, {dtype.name}) needs {expected}. Download it again."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_files(folder):
    """`{role: path}` of the IDX files in `folder`, `{}` if it has none.

    Raises a `FileNotFoundError` naming the missing files when the folder
    holds some of the four but not all.
    """
    if not folder or not os.path.isdir(folder):
        return {}
    found, missing = {}, []
    for role, stem, ndim in _FILES:
        names = _spellings(stem, ndim)
        paths = [os.path.join(folder, n) for n in names]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            missing.append(names[0])
        else:
            found[role] = path
    if found and missing:
        raise FileNotFoundError(
            f"{folder!r} holds some IDX files but not {missing} (a set needs "
            "all four: train-images, train-labels, t10k-images, t10k-labels)."
        )
    return found


def _keras_cache():
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return os.path.join(home, "datasets")


def _from_keras_cache(name, cache):
    """The arrays `keras.datasets` keeps in its cache folder, or `None`.

    Read here rather than through `load_data()`, which would go to the
    network for a missing file.
    """
    if name == "mnist":
        path = os.path.join(cache, "mnist.npz")
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {role: archive[role] for role, _, _ in _FILES}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"The Keras cache's {path!r} cannot be read ({error}). Delete it "
                "to download it again."
            ) from None
    files = _find_files(os.path.join(cache, "fashion-mnist"))
    if not files:
        return None
    return {role: read_idx(files[role], ndim) for role, _, ndim in _FILES}


def _download_with_keras(module, timeout):
    """`keras.datasets.<module>.load_data()` in a bounded process; `None` or why not."""
    code = f"import keras\nkeras.datasets.{module}.load_data()\n"
    try:
        subprocess.run(
            [sys.executable, "-c", code],
            timeout=timeout,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        return f"it did not finish within {timeout:.0f} s"
    except subprocess.CalledProcessError as error:
        last = (error.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
        return f"it failed: {last[0][:200]}"
    return None


def _candidate_folders(name, directory, root):
    """The folders to look in, in order, as `(folder, how it was chosen)`."""
    _, subfolders, debian, *_ = _SETS[name]
    if directory is not None:
        directory = os.fspath(directory)
        return [(directory, "directory")] + [
            (os.path.join(directory, s), "directory") for s in subfolders
        ]
    folders = []
    if root:
        folders += [(os.path.join(root, s), DATA_ENV) for s in subfolders]
    if debian:
        folders.append((debian, "the Debian package"))
    return folders


@functools.cache
def _arrays(name, directory, download, download_timeout, root, cache):
    """The set's uint8 arrays and where they came from (cached per process)."""
    title, subfolders, debian, module, url = _SETS[name]
    if directory is None:
        arrays = _from_keras_cache(name, cache)
        if arrays is not None:
            return arrays, f"keras.datasets.{module}'s cache ({cache})"
    for folder, how in _candidate_folders(name, directory, root):
        files = _find_files(folder)
        if files:
            arrays = {role: read_idx(files[role], ndim) for role, _, ndim in _FILES}
            return arrays, f"IDX files in {folder} ({how})"
    if directory is not None:
        raise FileNotFoundError(
            f"No {title} IDX files (train-images-idx3-ubyte[.gz] and the other "
            f"three) in directory={directory!r} or its sub-folders "
            f"{list(subfolders)}. Get them from {url}."
        )
    why = "download=False"
    if download:
        why = _download_with_keras(module, download_timeout)
        arrays = None if why else _from_keras_cache(name, cache)
        if arrays is not None:
            return arrays, f"keras.datasets.{module} (downloaded into {cache})"
        why = why or f"it did not write its files into {cache}"
    looked = f"{DATA_ENV}={root!r}" if root else f"{DATA_ENV} (not set)"
    debian_hint = (
        f", or `apt-get install dataset-{name.replace('_', '-')}` (Debian/Ubuntu, "
        f"installs {debian})"
        if debian
        else ""
    )
    raise FileNotFoundError(
        f"{title} not found: keras.datasets.{module}.load_data() could not get it "
        f"({why}), and no IDX files are in the sub-folder {subfolders[0]}/ of "
        f"{looked}" + (f" or in {debian}" if debian else "") + ". Put the four "
        f"files (train-images-idx3-ubyte.gz, ...) from {url} in "
        f"$KERAS_DISTILL_DATA/{subfolders[0]}/{debian_hint}."
    )


def load_image_set(
    name,
    seed=0,
    val_fraction=0.1,
    directory=None,
    download=True,
    download_timeout=20.0,
):
    """Loads MNIST or Fashion-MNIST as a fixed train/val/test split.

    Images are float32 in [0, 1] shaped `(n, 28, 28, 1)`, labels int32 0-9.
    The test split is the set's own 10,000 images; `val_fraction` of its
    60,000 training images is held out for validation, stratified and fixed
    by `seed`. Where the files are looked for: see the module's docstring.

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        seed: Seed of the train/validation split. Defaults to `0`.
        val_fraction: Fraction of the training images used for validation.
            Defaults to `0.1`.
        directory: A folder of the four IDX files (`.gz` or raw), or with
            them in a sub-folder named for the set; only it is read.
            Defaults to `None` (the Keras cache, `$KERAS_DISTILL_DATA`, the
            Debian package's folder, then a bounded Keras download).
        download: Let `keras.datasets` download the set when no files are
            found. Defaults to `True`.
        download_timeout: Seconds allowed for that download. Defaults to
            `20`.

    Returns:
        A dict with keys `"train"`, `"val"`, `"test"`, each an `(x, y)`
        tuple, and `"source"`: where the files were read from.

    Example:

    ```python
    splits = kd.data.load_arrays("fashion_mnist")
    x_train, y_train = splits["train"]
    ```
    """
    from sklearn.model_selection import train_test_split

    if name not in _SETS:
        raise ValueError(f"`name` must be one of {NAMES}. Received: name={name!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"`val_fraction` must be in (0, 1). Received: val_fraction={val_fraction!r}"
        )
    key = None if directory is None else os.path.abspath(os.fspath(directory))
    arrays, source = _arrays(
        name,
        key,
        bool(download),
        float(download_timeout),
        os.environ.get(DATA_ENV) or None,
        _keras_cache(),
    )
    images, labels = {}, {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or len(x) != len(y):
            raise ValueError(
                f"{source}: the {split} images have shape {x.shape} and the labels "
                f"{y.shape}; expected (n, 28, 28) images with one label each."
            )
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise ValueError(
                f"{source}: {split} labels must be 0-{NUM_CLASSES - 1}; found "
                f"{int(y.min())}-{int(y.max())}."
            )
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        images[split] = (x.astype("float32") / scale)[..., None]
        labels[split] = y.astype("int32")
    x_train, x_val, y_train, y_val = train_test_split(
        images["train"],
        labels["train"],
        test_size=val_fraction,
        random_state=seed,
        stratify=labels["train"],
    )
    return {
        "train": (x_train, y_train),
        "val": (x_val, y_val),
        "test": (images["test"], labels["test"]),
        "source": source,
    }
