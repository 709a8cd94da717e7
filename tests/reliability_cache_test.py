"""Issue 29, the teacher cache: no silent wrong result, no file lost, clear errors.

- a cache of another teacher is refused by the `Distiller` it feeds (silent 13);
- a dataset of unknown size longer or shorter than the cache fails (silent 14);
- `overwrite=True` never deletes a file a manifest lists but the tool did not
  write (data lost 5-6);
- a shard corrupted between epochs ends `fit()` with a one-line
  `CacheCorruptError` naming the shard (unclear).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill.cache import CacheCorruptError, CacheMismatchError, TeacherCache

N = 64


def dense(name, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name=name)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, 4)).astype("float32"), rng.integers(0, 3, N)


def build(teacher, x, path, **kwargs):
    return TeacherCache.build(
        teacher, x, path, verbose=0, dtype="float32", rows_per_shard=16, **kwargs
    )


def distiller(teacher):
    model = kd.Distiller(student=dense("student", 3), teacher=teacher)
    model.compile(optimizer="sgd")
    return model


# -- Silent 13: a cache built from teacher A feeds Distiller(teacher=B) --------


@pytest.mark.parametrize("source", ["arrays", "dataset", "derived"])
def test_a_cache_of_another_teacher_is_refused_by_the_distiller(data, tmp_path, source):
    x, y = data
    cache = build(dense("teacher_a", 1), x, tmp_path / "c")
    if source == "arrays":
        ds = cache.dataset(x, y, batch_size=16)
    else:
        ds = cache.dataset(tf.data.Dataset.from_tensor_slices((x, y)), batch_size=16)
        if source == "derived":  # a pipeline made from the cache's dataset
            ds = ds.take(3).repeat(2)
    other = distiller(dense("teacher_b", 2))
    before = [w.copy() for w in other.student.get_weights()]
    with pytest.raises(CacheMismatchError, match=r"'teacher_a'.*'teacher_b'"):
        other.fit(ds, epochs=1, verbose=0)
    with pytest.raises(CacheMismatchError, match="teacher_b"):
        other.evaluate(ds, verbose=0)
    with pytest.raises(CacheMismatchError, match="teacher_b"):
        other.fit(x, y, validation_data=ds, epochs=1, verbose=0)
    # Refused before the first step.
    assert all(
        np.array_equal(a, b) for a, b in zip(before, other.student.get_weights())
    )


def test_the_multi_worker_loop_refuses_a_cache_of_another_teacher(data, tmp_path):
    from keras_distill import distribute

    x, y = data
    cache = build(dense("teacher_a", 1), x, tmp_path / "c")
    other = distiller(dense("teacher_b", 2))
    # The loop's checks come first in its `fit()`: no cluster is needed to
    # reach them (a real one is tested in a subprocess in distribute_test).
    loop = object.__new__(distribute._MultiWorkerLoop)
    loop.distiller, loop.strategy = other, tf.distribute.get_strategy()
    with pytest.raises(CacheMismatchError, match=r"'teacher_a'.*'teacher_b'"):
        loop.fit(
            cache.dataset(x, y, batch_size=16),
            epochs=1,
            validation_data=None,
            callbacks=None,
            checkpoint_dir=None,
            steps_per_epoch=None,
            validation_steps=None,
            verbose=0,
        )


def test_the_cache_of_the_distillers_own_teacher_trains(data, tmp_path):
    x, y = data
    teacher = dense("teacher_a", 1)
    cache = build(teacher, x, tmp_path / "c")
    model = distiller(teacher)  # freezes the teacher: still the same teacher
    history = model.fit(cache.dataset(x, y, batch_size=16), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    cache.dataset(x, y, teacher=teacher)
    TeacherCache(cache.directory, teacher=teacher)


# -- Silent 14: a dataset of unknown size longer or shorter than the cache -----


def unknown_size(x, y):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda *_: True)
    assert int(ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return ds


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_longer_dataset_of_unknown_size_is_refused(data, tmp_path, in_memory):
    x, y = data
    teacher = dense("teacher", 1)
    cache = build(teacher, x, tmp_path / "c")
    extra = np.random.default_rng(1).normal(size=(N // 2, 4)).astype("float32")
    longer = unknown_size(np.concatenate([x, extra]), np.concatenate([y, y[: N // 2]]))
    ds = cache.dataset(longer, batch_size=16, in_memory=in_memory)
    with pytest.raises(CacheMismatchError, match=rf"more than the {N} examples"):
        distiller(teacher).fit(ds, verbose=0)
    # Iterated directly, the pipeline fails too (never yields only N examples).
    with pytest.raises(tf.errors.OpError, match=f"contain {N} elements"):
        list(ds)


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_shorter_dataset_of_unknown_size_is_refused(data, tmp_path, in_memory):
    x, y = data
    teacher = dense("teacher", 1)
    cache = build(teacher, x, tmp_path / "c")
    shorter = unknown_size(x[: N - 10], y[: N - 10])
    ds = cache.dataset(shorter, batch_size=16, in_memory=in_memory)
    with pytest.raises(CacheMismatchError, match=rf"only {N - 10} examples.*holds {N}"):
        distiller(teacher).fit(ds, verbose=0)


def test_an_unknown_size_dataset_of_the_right_length_passes(data, tmp_path):
    x, y = data
    teacher = dense("teacher", 1)
    cache = build(teacher, x, tmp_path / "c")
    for in_memory in (False, True):
        ds = cache.dataset(unknown_size(x, y), batch_size=16, in_memory=in_memory)
        batches = list(ds)
        assert sum(len(b[0]) for b in batches) == N
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
        np.testing.assert_allclose(
            np.concatenate([b[2]["teacher_logits"] for b in batches]),
            teacher(x),
            rtol=1e-5,
            atol=1e-6,
        )


# -- Data lost 5-6: a manifest listing a user file (or itself) as a shard ------


@pytest.mark.parametrize(
    "listed", ["notes.txt", "manifest.json", ".b1234abcd-building"]
)
def test_overwrite_never_deletes_a_file_the_manifest_names_but_the_tool_did_not_write(
    data, tmp_path, listed
):
    x, _ = data
    teacher = dense("teacher", 1)
    folder = tmp_path / "c"
    build(teacher, x, folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    if listed != "manifest.json":
        (folder / listed).write_text("mine")
    manifest["parts"]["logits"]["shards"][0]["file"] = listed
    path.write_text(json.dumps(manifest))
    saved = {n: (folder / n).read_bytes() for n in os.listdir(folder)}
    with pytest.raises(CacheCorruptError, match=rf"{listed!r}.*not a shard"):
        build(teacher, x, folder, overwrite=True)
    # Nothing deleted, nothing changed, nothing added.
    assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == saved
    with pytest.raises(CacheCorruptError, match=rf"{listed!r}.*not a shard"):
        TeacherCache(folder)


def test_shards_of_other_names_or_places_are_refused_when_opening(data, tmp_path):
    x, _ = data
    folder = tmp_path / "c"
    build(dense("teacher", 1), x, folder)
    path = folder / "manifest.json"
    good = json.loads(path.read_text())
    for name in ["../c/x.logits", "shard-00000.txt", "bzzzzzzzz-shard-00000.logits"]:
        manifest = json.loads(json.dumps(good))
        manifest["parts"]["logits"]["shards"][0]["file"] = name
        path.write_text(json.dumps(manifest))
        with pytest.raises(CacheCorruptError, match="not a shard"):
            TeacherCache(folder)
    path.write_text(json.dumps(good))
    TeacherCache(folder)  # the tool's own names open


# -- Unclear: a shard corrupted mid-stream --------------------------------------


class _CorruptAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raw = bytearray(open(self.path, "rb").read())
            raw[0] ^= 0xFF  # same size: only the checksum can tell
            open(self.path, "wb").write(bytes(raw))


def test_a_shard_corrupted_between_epochs_ends_fit_with_a_clear_error(data, tmp_path):
    x, y = data
    teacher = dense("teacher", 1)
    cache = build(teacher, x, tmp_path / "c")
    shard = cache.manifest["parts"]["logits"]["shards"][1]["file"]
    ds = cache.dataset(x, y, batch_size=16, in_memory=False)
    callback = _CorruptAfterFirstEpoch(os.path.join(cache.directory, shard))
    with pytest.raises(CacheCorruptError) as error:
        distiller(teacher).fit(ds, epochs=2, verbose=0, callbacks=[callback])
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    assert shard in message and "overwrite=True" in message


def test_a_language_model_teacher_is_refused_with_its_shape(tmp_path):
    from keras_distill import models, text

    teacher = models.causal_lm(text.VOCAB_SIZE, 16, width=32, layers=1)
    ids = np.ones((8, 16), "int32")
    with pytest.raises(ValueError, match=r"\(None, 16, 258\).*distill them online"):
        kd.cache.TeacherCache.build(teacher, ids, tmp_path / "cache", verbose=0)
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")
