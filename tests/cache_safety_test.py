"""The teacher-output cache can be neither misaligned nor destructive."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill.cache import CacheCorruptError, CacheMismatchError, TeacherCache
from tests.helpers import digits_subset, tiny_student, trained_teacher


@pytest.fixture(scope="module")
def teacher():
    return trained_teacher()


@pytest.fixture(scope="module")
def data():
    return digits_subset(n=300)


def build(teacher, x, path, **kwargs):
    return TeacherCache.build(teacher, x, path, verbose=0, batch_size=64, **kwargs)


def test_permuted_arrays_are_refused_before_training(teacher, data, tmp_path):
    x, y = data
    cache = build(teacher, x, tmp_path / "c")
    perm = np.random.default_rng(0).permutation(len(x))
    with pytest.raises(CacheMismatchError, match=r"Example 0 of the data given.*order"):
        cache.dataset(x[perm], y[perm])
    cache.dataset(x, y)  # the cached order is fine


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_filtered_dataset_of_unknown_size_fails_instead_of_misaligning(
    teacher, data, tmp_path, in_memory
):
    x, y = data
    cache = build(teacher, x, tmp_path / "c")
    filtered = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b != 3)
    assert int(filtered.cardinality()) < 0  # unknown: the count cannot tell
    distiller = kd.Distiller(tiny_student(), teacher)
    distiller.compile(optimizer="adam")
    ds = cache.dataset(filtered, batch_size=32, in_memory=in_memory)
    with pytest.raises(ValueError, match="not the examples the teacher cache"):
        distiller.fit(ds, epochs=1, verbose=0)
    # The same data, unfiltered, trains.
    whole = tf.data.Dataset.from_tensor_slices((x, y))
    distiller.fit(cache.dataset(whole, batch_size=32, in_memory=in_memory), verbose=0)


def test_a_cache_of_another_teacher_is_refused_when_the_teacher_is_known(
    teacher, data, tmp_path
):
    x, y = data
    cache = build(teacher, x, tmp_path / "c")
    other = trained_teacher(epochs=1)
    with pytest.raises(CacheMismatchError, match="another teacher"):
        cache.dataset(x, y, teacher=other)
    cache.dataset(x, y, teacher=teacher)


def test_bytes_rewritten_after_opening_are_caught_when_read(teacher, data, tmp_path):
    x, y = data
    cache = build(teacher, x, tmp_path / "c")
    shard = os.path.join(
        cache.directory, cache.manifest["parts"]["logits"]["shards"][0]["file"]
    )
    content = bytearray(open(shard, "rb").read())
    content[7] ^= 0xFF  # same size, different bytes
    open(shard, "wb").write(bytes(content))
    with pytest.raises(CacheCorruptError, match="checksum"):
        cache.load()
    with pytest.raises(tf.errors.OpError, match="checksum"):
        list(cache.dataset(x, y, in_memory=False, verify_alignment=False))


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda m: m["parts"]["logits"]["shards"][0].update(file="../../secret.bin"),
            "outside the cache folder.*secret",
        ),
        (
            lambda m: m["parts"]["logits"]["shards"][0].update(file="/etc/passwd"),
            "outside the cache folder",
        ),
        (
            lambda m: m["parts"]["logits"]["shards"][0].pop("sha256"),
            r"manifest\.json.*corrupt or incomplete.*sha256",
        ),
        (lambda m: m.pop("parts"), r"manifest\.json.*corrupt or incomplete"),
    ],
)
def test_bad_manifests_are_refused_naming_the_file(
    teacher, data, tmp_path, edit, match
):
    x, _ = data
    cache = build(teacher, x[:64], tmp_path / "c")
    path = os.path.join(cache.directory, "manifest.json")
    manifest = json.load(open(path))
    edit(manifest)
    json.dump(manifest, open(path, "w"))
    with pytest.raises(CacheCorruptError, match=match):
        TeacherCache(cache.directory)


def test_a_manifest_that_is_not_json_names_the_file(teacher, data, tmp_path):
    x, _ = data
    cache = build(teacher, x[:64], tmp_path / "c")
    open(os.path.join(cache.directory, "manifest.json"), "w").write("{not json")
    with pytest.raises(CacheCorruptError, match=r"manifest\.json.*corrupt"):
        TeacherCache(cache.directory)


def test_overwrite_never_deletes_files_it_did_not_write(teacher, data, tmp_path):
    x, _ = data
    folder = tmp_path / "c"
    first = build(teacher, x, folder)
    old_shards = {
        s["file"] for p in first.manifest["parts"].values() for s in p["shards"]
    }
    (folder / "notes.txt").write_text("my notes")
    second = build(teacher, x[:128], folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "my notes"
    assert second.num_examples == 128
    left = set(os.listdir(folder))
    assert not old_shards & left  # the old cache's own files are gone
    assert left == {"notes.txt", "manifest.json"} | {
        s["file"] for p in second.manifest["parts"].values() for s in p["shards"]
    }


def test_overwrite_keeps_user_files_named_like_shards(teacher, data, tmp_path):
    # Only shards of a build whose journal is left (a killed build) are
    # removed; a file that merely looks like a shard is the user's.
    x, _ = data
    folder = tmp_path / "c"
    build(teacher, x, folder)
    lookalikes = ["b0123abcd-shard-00000.npy", ".b0123abcd-manifest.json"]
    for name in lookalikes:
        (folder / name).write_text("mine")
    build(teacher, x[:64], folder, overwrite=True)
    for name in lookalikes:
        assert (folder / name).read_text() == "mine"
    assert not [n for n in os.listdir(folder) if n.endswith("-building")]


_KILLED_BUILD = """
import sys, time
import numpy as np
import keras
from keras_distill.cache import TeacherCache, _ShardWriter
write = _ShardWriter.write
def slow_write(self, array):
    write(self, array)
    print("wrote", flush=True)
    time.sleep(0.5)
_ShardWriter.write = slow_write
teacher = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
TeacherCache.build(teacher, x, sys.argv[3], overwrite=True, verbose=0, batch_size=16)
"""


def test_kill_9_during_an_overwrite_leaves_the_old_cache_usable(
    teacher, data, tmp_path
):
    x, y = data
    folder = tmp_path / "c"
    old = build(teacher, x, folder)
    expected = old.load()["teacher_logits"]
    teacher_path, x_path = str(tmp_path / "t.keras"), str(tmp_path / "x.npy")
    teacher.save(teacher_path)
    np.save(x_path, x[:200])
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, teacher_path, x_path, str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    lines = 0
    deadline = time.time() + 120
    while lines < 4 and time.time() < deadline:
        if proc.stdout.readline().startswith("wrote"):
            lines += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lines >= 4  # killed in the middle of writing the new shards
    # The killed build left its journal, which marks its shards as ours.
    assert [n for n in os.listdir(folder) if n.endswith("-building")]
    reopened = TeacherCache(folder)  # verifies every shard
    assert reopened.num_examples == 300
    np.testing.assert_array_equal(reopened.load()["teacher_logits"], expected)
    # overwrite=True recovers the folder and removes the killed build's shards.
    new = build(teacher, x[:100], folder, overwrite=True)
    listed = {s["file"] for p in new.manifest["parts"].values() for s in p["shards"]}
    assert set(os.listdir(folder)) == listed | {"manifest.json"}


@pytest.mark.parametrize("scale", [1e7, 1e12])
def test_a_large_constant_feature_does_not_hide_a_permutation(
    teacher, data, tmp_path, scale
):
    x, y = data
    x = x.copy()
    x.reshape(len(x), -1)[:, 0] = scale  # relative tolerances saw only this
    cache = build(teacher, x, tmp_path / "c", dtype="float32")
    perm = np.random.default_rng(0).permutation(len(x))
    with pytest.raises(CacheMismatchError, match=r"examples differ"):
        cache.dataset(x[perm], y[perm])
    shuffled = tf.data.Dataset.from_tensor_slices(x[perm])
    with pytest.raises(tf.errors.InvalidArgumentError, match="fingerprint mismatch"):
        list(cache.dataset(shuffled, batch_size=100, in_memory=True))
    # The cached order passes, from arrays and from a dataset (exact in both).
    cache.dataset(x, y)
    assert len(list(cache.dataset(tf.data.Dataset.from_tensor_slices(x)))) == 10


@pytest.mark.parametrize("shape", [(5, 8, 8, 1), (3, 3000), (2, 224, 224, 3)])
def test_exact_fingerprints_agree_in_numpy_and_tf_in_any_batching(shape):
    from keras_distill import cache as kd_cache

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(
        "float32"
    )
    whole = kd_cache.bit_fingerprints(x)
    assert np.array_equal(whole, kd_cache.bit_fingerprints(x, chunk=1))
    assert np.array_equal(whole, kd_cache._bit_fingerprints_tf(tf.constant(x)).numpy())
    assert np.array_equal(whole[1:], kd_cache.bit_fingerprints(x[1:]))
    y = x.copy()
    y.reshape(len(y), -1)[0, -1] = np.nextafter(y.reshape(len(y), -1)[0, -1], np.inf)
    assert not np.array_equal(kd_cache.bit_fingerprints(y)[0], whole[0])
