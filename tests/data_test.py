import numpy as np
import pytest

from keras_distill import data


def test_digits_split_is_fixed_and_stratified():
    a, b = data.load_digits(seed=0), data.load_digits(seed=0)
    assert {k: len(v[0]) for k, v in a.items()} == {
        "train": 1167,
        "val": 270,
        "test": 360,
    }
    np.testing.assert_array_equal(a["test"][1], b["test"][1])
    assert a["train"][0].min() >= 0 and a["train"][0].max() <= 1
    assert set(np.unique(a["val"][1])) == set(range(10))


def test_load_digits_by_name():
    splits = data.load("digits", batch_size=50)
    x, y = next(iter(splits.train))
    assert x.shape == (50, 8, 8, 1) and splits.num_classes == 10
    assert sum(int(b[1].shape[0]) for b in splits.test) == 360


def test_tfds_with_mock_data_normalises_and_batches():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        splits = data.load("tfds:mnist", batch_size=8)
        x, y = next(iter(splits.train))
    assert splits.num_classes == 10 and splits.input_shape == (28, 28, 1)
    assert x.shape == (8, 28, 28, 1) and x.dtype == "float32"
    assert float(np.max(x)) <= 1.0 and y.dtype == "int32"


def test_tfds_offline_not_prepared_fails_fast_and_leaves_nothing(tmp_path, monkeypatch):
    # The download runs in a subprocess bounded by `download_timeout`; here a
    # stand-in for it times out after leaving what tfds leaves (no network).
    import subprocess

    (tmp_path / "mine.tmp").write_text("a user's file from before")

    def offline_download(command, timeout, **kwargs):
        (tmp_path / "mnist" / "incomplete.ABC123").mkdir(parents=True)
        (tmp_path / "downloads").mkdir()
        (tmp_path / "downloads" / "mnist.zip.tmp").write_text("partial")
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(data.subprocess, "run", offline_download)
    with pytest.raises(
        TimeoutError, match=r"'mnist' is not prepared.*within 8 s.*tfds build mnist"
    ):
        data.load("tfds:mnist", data_dir=str(tmp_path), download_timeout=8)
    assert not (tmp_path / "mnist" / "incomplete.ABC123").exists()
    assert not (tmp_path / "downloads" / "mnist.zip.tmp").exists()
    assert (tmp_path / "mine.tmp").read_text() == "a user's file from before"


def test_an_unknown_tfds_name_is_one_line_with_a_suggestion(tmp_path):
    with pytest.raises(
        ValueError, match=r"no dataset 'mnistt'\. Did you mean 'mnist'"
    ) as info:
        data.load("tfds:mnistt", data_dir=str(tmp_path))
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_tfds_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared.*download=False"):
        data.load("tfds:mnist", data_dir=str(tmp_path), download=False)


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (50, 6, 6), dtype="uint8"),
        y_train=rng.integers(0, 3, 50),
    )
    splits = data.load(f"npz:{path}", batch_size=10)
    assert splits.input_shape == (6, 6, 1) and splits.num_classes == 3
    assert sum(int(b[0].shape[0]) for b in splits.val) == 5
    x, _ = next(iter(splits.train))
    assert float(np.max(x)) <= 1.0
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(KeyError, match=r"\['x_train', 'y_train'\]"):
        data.load(f"npz:{tmp_path / 'bad.npz'}")


def test_image_folder(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            keras.utils.save_img(
                tmp_path / label / f"{i}.png", rng.integers(0, 255, (12, 12, 3))
            )
    splits = data.load(
        f"images:{tmp_path}", batch_size=4, image_size=(10, 10), val_fraction=0.2
    )
    assert splits.num_classes == 2 and splits.input_shape == (10, 10, 3)
    x, _ = next(iter(splits.train))
    assert x.shape[1:] == (10, 10, 3) and float(np.max(x)) <= 1.0


def test_bad_source():
    # "mnist" is a source now (`kd.data.idx`); "cifar10" without "tfds:" is not.
    with pytest.raises(ValueError, match="source='cifar10'"):
        data.load("cifar10")


def test_mnist1d_is_generated_offline_with_a_fixed_split():
    splits = data.load_mnist1d(seed=0)
    (x_train, y_train), (x_val, y_val) = splits["train"], splits["val"]
    x_test, y_test = splits["test"]
    assert x_train.shape == (3600, 40, 1) and x_val.shape == (400, 40, 1)
    assert x_test.shape == (1000, 40, 1) and x_train.dtype == np.float32
    assert set(np.unique(y_train)) == set(range(10))
    # Stratified: every class keeps its share in the validation split.
    assert np.bincount(y_val, minlength=10).min() >= 30
    again = data.load_mnist1d(seed=0)
    np.testing.assert_array_equal(again["val"][0], x_val)
    other = data.load_mnist1d(seed=1)
    assert not np.array_equal(other["val"][1], y_val)
    with pytest.raises(ValueError, match="val_fraction"):
        data.load_mnist1d(val_fraction=1.0)


def test_load_by_name_mnist1d():
    splits = data.load("mnist1d", batch_size=32)
    assert splits.num_classes == 10 and splits.input_shape == (40, 1)
    x, y = next(iter(splits.train))
    assert tuple(x.shape) == (32, 40, 1) and tuple(y.shape) == (32,)
