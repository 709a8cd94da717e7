"""MNIST and Fashion-MNIST (`kd.data.idx`): IDX files written by the tests."""

import gzip
import os
import struct

import numpy as np
import pytest

from keras_distill import data
from keras_distill.data import idx
from tests.helpers import load_file

# Tiny sets: 20 training images per class, 2 test images per class.
N_TRAIN, N_TEST = 200, 20


def idx_bytes(array):
    """`array` (uint8) as an IDX file's bytes."""
    array = np.asarray(array, dtype="uint8")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def write_set(folder, gz=True, dotted=False, seed=0):
    """Writes the four IDX files of a tiny set; returns its arrays."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = np.arange(n) % 10
        x = rng.integers(0, 256, size=(n, 28, 28))
        x[:, 0, 0] = 255  # the largest value, to check the scaling
        arrays[split] = (x.astype("uint8"), y.astype("uint8"))
        for kind, array, ndim in (("images", x, 3), ("labels", y, 1)):
            sep = "." if dotted else "-"
            name = f"{split}-{kind}{sep}idx{ndim}-ubyte" + (".gz" if gz else "")
            raw = idx_bytes(array)
            with (gzip.open if gz else open)(os.path.join(folder, name), "wb") as f:
                f.write(raw)
    return arrays


@pytest.fixture
def no_defaults(tmp_path, monkeypatch):
    """No Keras cache, no `KERAS_DISTILL_DATA`, no Debian folder."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(idx.DATA_ENV, raising=False)
    monkeypatch.setitem(
        idx._SETS,
        "fashion_mnist",
        (*idx._SETS["fashion_mnist"][:2], str(tmp_path / "debian"))
        + idx._SETS["fashion_mnist"][3:],
    )
    idx._arrays.cache_clear()
    yield tmp_path
    idx._arrays.cache_clear()


@pytest.mark.parametrize("gz,dotted", [(True, False), (False, True)])
def test_idx_files_load_scaled_split_and_shaped(no_defaults, gz, dotted):
    folder = no_defaults / "files"
    written = write_set(folder, gz=gz, dotted=dotted)
    splits = data.load_arrays("fashion_mnist", directory=folder, download=False)
    x, y = splits["train"]
    assert x.shape == (180, 28, 28, 1) and x.dtype == np.float32
    assert splits["val"][0].shape == (20, 28, 28, 1)
    assert 0.0 <= x.min() and x.max() == 1.0
    x_test, y_test = splits["test"]
    np.testing.assert_array_equal(y_test, written["t10k"][1])
    np.testing.assert_allclose(x_test[..., 0], written["t10k"][0] / 255.0, rtol=1e-6)
    assert y.dtype == np.int32 and splits["num_classes"] == 10
    assert splits["shape"] == (28, 28, 1)
    assert str(folder) in splits["source"]


def test_the_environment_folder_is_read_from_the_sets_sub_folder(
    no_defaults, monkeypatch
):
    write_set(no_defaults / "root" / "fashion-mnist", seed=1)
    write_set(no_defaults / "root" / "mnist", seed=2)
    monkeypatch.setenv(idx.DATA_ENV, str(no_defaults / "root"))
    fashion = idx.load_image_set("fashion_mnist", download=False)
    digits = idx.load_image_set("mnist", download=False)
    assert "fashion-mnist" in fashion["source"] and idx.DATA_ENV in fashion["source"]
    assert not np.array_equal(fashion["test"][0], digits["test"][0])


def test_the_debian_folder_is_the_fallback(no_defaults):
    write_set(no_defaults / "debian")
    splits = idx.load_image_set("fashion_mnist", download=False)
    assert "Debian" in splits["source"]


def test_the_keras_cache_comes_first(no_defaults, monkeypatch):
    # keras.datasets' cache is read without a network; files there win over
    # `KERAS_DISTILL_DATA`. MNIST's is one .npz file.
    cache = no_defaults / "keras_home" / "datasets" / "fashion-mnist"
    write_set(cache, seed=3)
    write_set(no_defaults / "root" / "fashion_mnist", seed=4)
    monkeypatch.setenv(idx.DATA_ENV, str(no_defaults / "root"))
    splits = idx.load_image_set("fashion_mnist", download=False)
    assert splits["source"].startswith("keras.datasets.fashion_mnist")
    written = write_set(no_defaults / "npz", seed=5)
    np.savez(
        no_defaults / "keras_home" / "datasets" / "mnist.npz",
        x_train=written["train"][0],
        y_train=written["train"][1],
        x_test=written["t10k"][0],
        y_test=written["t10k"][1],
    )
    splits = idx.load_image_set("mnist", download=False)
    assert splits["source"].startswith("keras.datasets.mnist")
    np.testing.assert_array_equal(splits["test"][1], written["t10k"][1])


def test_nothing_found_is_one_error_saying_where_to_get_the_files(no_defaults):
    with pytest.raises(FileNotFoundError) as error:
        idx.load_image_set("fashion_mnist", download=False)
    message = str(error.value)
    for text in (
        idx.DATA_ENV,
        "apt-get install dataset-fashion-mnist",
        "fashion_mnist/",
    ):
        assert text in message, message
    with pytest.raises(FileNotFoundError, match="No MNIST IDX files"):
        idx.load_image_set("mnist", directory=no_defaults / "empty")


def test_a_folder_missing_one_file_names_it(no_defaults):
    folder = no_defaults / "files"
    write_set(folder)
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        idx.load_image_set("mnist", directory=folder)


def test_a_truncated_or_padded_file_is_refused(tmp_path):
    raw = idx_bytes(np.zeros((3, 28, 28)))
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        idx.read_idx(path, ndim=3)
    path.write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="longer than its header"):
        idx.read_idx(path, ndim=3)
    path.write_bytes(raw[:9])  # shorter than the header
    with pytest.raises(ValueError, match="truncated"):
        idx.read_idx(path)
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw)[:-20])  # a cut-off download
    with pytest.raises(ValueError, match="damaged or truncated"):
        idx.read_idx(gz)


def test_a_file_that_is_not_idx_or_not_images_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(path)
    path.write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(ValueError, match="has 1 dimensions; expected 3"):
        idx.read_idx(path, ndim=3)


def test_load_gives_batched_splits(no_defaults):
    write_set(no_defaults / "files")
    splits = data.load(
        "mnist", batch_size=8, directory=no_defaults / "files", download=False
    )
    x, y = next(iter(splits.train))
    assert tuple(x.shape) == (8, 28, 28, 1) and splits.input_shape == (28, 28, 1)
    assert splits.num_classes == 10 and splits.test is not None


def test_the_config_accepts_the_image_sets(tmp_path):
    from keras_distill.app import config

    for name in ("fashion_mnist", "mnist"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"data: {name}\noutput: {tmp_path / 'out'}\n")
        assert config.load(str(path))["data"] == name


@pytest.mark.slow
def test_the_cli_trains_on_fashion_mnist_files(no_defaults, monkeypatch):
    from keras_distill.app import cli

    write_set(no_defaults / "root" / "fashion_mnist")
    monkeypatch.setenv(idx.DATA_ENV, str(no_defaults / "root"))
    out = no_defaults / "run"
    cfg = no_defaults / "run.yaml"
    cfg.write_text(
        f"data: fashion_mnist\noutput: {out}\n"
        "teacher: {model: teacher_cnn, epochs: 1}\n"
        "student: {model: student_mlp, hidden: 8}\n"
        "distill: {epochs: 1}\n"
    )
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 0
    assert (out / "student.keras").stat().st_size > 0


def _real_folder():
    for folder in (
        os.path.join(os.environ.get(idx.DATA_ENV, ""), "fashion_mnist"),
        os.path.join(os.environ.get(idx.DATA_ENV, ""), "fashion-mnist"),
        "/usr/share/datasets/fashion-mnist",
    ):
        if os.path.isfile(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")):
            return folder
    return None


@pytest.mark.skipif(_real_folder() is None, reason="Fashion-MNIST is not installed")
def test_the_real_fashion_mnist_files_load():
    idx._arrays.cache_clear()
    splits = idx.load_image_set("fashion_mnist", directory=_real_folder())
    assert splits["train"][0].shape == (54_000, 28, 28, 1)
    assert splits["test"][0].shape == (10_000, 28, 28, 1)
    assert np.bincount(splits["test"][1]).tolist() == [1000] * 10


def test_flip_mirrors_with_its_probability_and_checks_its_arguments():
    import tensorflow as tf

    from keras_distill import augment

    x = tf.reshape(tf.range(2 * 2 * 3, dtype=tf.float32), (2, 2, 3, 1))
    seed = tf.constant([1, 2])
    mirrored = augment.flip(axis=2, probability=1.0)(x, seed).numpy()
    np.testing.assert_array_equal(mirrored, x.numpy()[:, :, ::-1])
    kept = augment.flip(axis=2, probability=0.0)(x, seed).numpy()
    np.testing.assert_array_equal(kept, x.numpy())
    with pytest.raises(ValueError, match="batch axis"):
        augment.flip(axis=0)
    with pytest.raises(ValueError, match="probability"):
        augment.flip(probability=2.0)


def test_the_image_setups_name_their_student():
    from keras_distill.app import quality

    assert quality.default_setup("fashion_mnist").student == "mlp"
    cnn = quality.default_setup("fashion_mnist/cnn")
    assert cnn.name == "fashion_mnist" and cnn.student == "cnn"
    assert cnn.shape() == (28, 28, 1)
    with pytest.raises(ValueError, match="fashion_mnist"):
        quality.default_setup("fashion_mnist/vit")


def _benchmark():
    return load_file("benchmarks/quality.py", "quality_benchmark")


def test_the_paired_interval_judges_a_row_against_the_control():
    bench = _benchmark()
    control = {"seed": [0, 1, 2], "accuracy": [0.80, 0.82, 0.81]}
    ahead = {"seed": [0, 1, 2], "accuracy": [0.83, 0.851, 0.839]}
    text, verdict = bench.paired(ahead, control)
    assert verdict == "better" and text.startswith("+0.0300 [")
    assert bench.paired(control, ahead)[1] == "worse"
    noisy = {"seed": [0, 1, 2], "accuracy": [0.85, 0.80, 0.81]}
    assert bench.paired(noisy, control)[1] == "no clear difference"
    # Only the seeds both rows have are compared.
    assert bench.paired({"seed": [5], "accuracy": [0.9]}, control)[0] == "n/a"


def test_a_stopped_image_run_resumes_from_its_progress_file(no_defaults, monkeypatch):
    from keras_distill.app import quality

    bench = _benchmark()
    write_set(no_defaults / "root" / "fashion_mnist")
    monkeypatch.setenv(idx.DATA_ENV, str(no_defaults / "root"))
    progress = no_defaults / "progress.jsonl"
    seen = []
    common = dict(
        quick=True,
        epochs={"fashion_mnist": 1},
        log=lambda *_: None,
        teacher_dir=str(no_defaults / "teachers"),
        progress=str(progress),
        on_record=lambda results: seen.append(1),
    )
    first = bench.run(["fashion_mnist"], ["scratch"], [0], **common)
    assert len(progress.read_text().splitlines()) == 1 and seen == [1]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(quality, "train", no_training)
    again = bench.run(["fashion_mnist"], ["scratch"], [0], **common)
    rows = again["data"]["fashion_mnist"]["rows"]
    assert rows == first["data"]["fashion_mnist"]["rows"]
    assert len(progress.read_text().splitlines()) == 1
    text = bench.tables(again)
    assert "vs scratch_aug" not in text  # no control row in this table
