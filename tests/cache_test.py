import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import losses
from keras_distill.cache import CacheCorruptError, CacheMismatchError, TeacherCache
from tests.helpers import digits_subset, random_logits, tiny_student, trained_teacher


@pytest.fixture(scope="module")
def teacher():
    return trained_teacher()


@pytest.fixture(scope="module")
def data():
    return digits_subset(n=300)


def build(teacher, x, path, **kwargs):
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("rows_per_shard", 128)
    return TeacherCache.build(teacher, x, path, verbose=0, **kwargs)


def online_and_cached(teacher, x, y, cache, in_memory="auto"):
    distiller = kd.Distiller(tiny_student(), teacher, alpha=0.2, temperature=3.0)
    distiller.compile(optimizer="sgd")
    online = distiller.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)
    cached = distiller.evaluate(
        cache.dataset(x, y, batch_size=100, in_memory=in_memory),
        verbose=0,
        return_dict=True,
    )
    return online, cached


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize(
    "k, dtype, rtol",
    [(None, "float32", 1e-6), (None, "float16", 1e-3), (10, "float32", 1e-6)],
)
def test_cached_loss_equals_online_loss(
    teacher, data, tmp_path, k, dtype, rtol, in_memory
):
    x, y = data
    cache = build(teacher, x, tmp_path / "c", k=k, dtype=dtype)
    online, cached = online_and_cached(teacher, x, y, cache, in_memory)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(cached[key], online[key], rtol=rtol)


def numpy_topk_kd(t, s, k, temperature):
    """Independent reference for the (k + 1)-bucket KD term."""
    n, c = t.shape
    out = []
    for tl, sl in zip(t.astype("float64"), s.astype("float64")):
        order = np.argsort(-tl)
        top, rest = order[:k], order[k:]
        m = np.log(np.exp(tl[rest]).sum() / len(rest)) if len(rest) else None
        t_buckets = list(tl[top] / temperature)
        if m is not None:
            t_buckets.append(m / temperature + np.log(len(rest)))
        t_buckets = np.array(t_buckets)
        p = np.exp(t_buckets - np.logaddexp.reduce(t_buckets))
        sz = sl / temperature
        q_all = np.exp(sz - np.logaddexp.reduce(sz))
        q = list(q_all[top]) + ([q_all[rest].sum()] if len(rest) else [])
        out.append(temperature**2 * np.sum(p * (np.log(p) - np.log(np.array(q)))))
    return np.array(out)


@pytest.mark.parametrize("k, temperature", [(5, 1.0), (2, 3.0), (1, 2.0), (5, 4.0)])
def test_topk_kd_loss_matches_numpy(k, temperature):
    t, s = random_logits(seed=1), random_logits(seed=2)
    values, indices = tf.math.top_k(t, k=k)
    rest = tf.where(tf.reduce_any(tf.one_hot(indices, 5) > 0, axis=1), -np.inf, t)
    rest_lse = tf.reduce_logsumexp(rest, axis=-1)
    got = losses.topk_kd_loss(values, indices, rest_lse, s, temperature)
    np.testing.assert_allclose(
        np.asarray(got), numpy_topk_kd(t, s, k, temperature), rtol=1e-4, atol=1e-6
    )
    if k == 5:
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(losses.kd_loss(t, s, temperature)), rtol=1e-5
        )


def test_small_k_stays_close_on_a_peaked_teacher(data, tmp_path):
    x, y = data
    keras.utils.set_random_seed(3)
    teacher = trained_teacher()
    peaked = keras.Sequential([teacher, keras.layers.Rescaling(5.0)])
    peaked.build((None, 8, 8, 1))
    distiller = kd.Distiller(tiny_student(), peaked, alpha=0.0, temperature=1.0)
    distiller.compile(optimizer="sgd")
    full = distiller.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)
    for k in (3, 1):
        cache = build(peaked, x, tmp_path / f"k{k}", k=k)
        got = distiller.evaluate(
            cache.dataset(x, y, batch_size=100), verbose=0, return_dict=True
        )
        # Coarser buckets can only lose KL; on a peaked teacher little is lost.
        assert got["distillation_loss"] <= full["distillation_loss"] + 1e-5
        assert got["distillation_loss"] >= 0.9 * full["distillation_loss"], (
            k,
            got,
            full,
        )


def test_cached_training_never_calls_the_teacher(teacher, data, tmp_path):
    x, y = data
    cache = build(teacher, x, tmp_path / "c", k=4)
    student = tiny_student()
    before = [w.copy() for w in student.get_weights()]
    distiller = kd.Distiller(student, teacher, alpha=0.2)
    distiller.compile(optimizer="adam")
    calls = []
    original = distiller.teacher.call
    distiller.teacher.call = lambda *a, **k: calls.append(1) or original(*a, **k)
    history = distiller.fit(
        cache.dataset(x, y, batch_size=32, shuffle=True, seed=0), epochs=2, verbose=0
    )
    assert calls == []
    assert history.history["loss"][1] < history.history["loss"][0]
    assert not all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


@pytest.mark.parametrize("in_memory", [True, False])
def test_shuffling_keeps_examples_and_targets_aligned(tmp_path, in_memory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype("float32")
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    cache = build(teacher, x, tmp_path / "c", dtype="float32", rows_per_shard=37)
    ds = cache.dataset(
        x, np.arange(200), batch_size=16, shuffle=True, seed=1, in_memory=in_memory
    )
    seen = []
    for xb, yb, targets in ds:
        np.testing.assert_allclose(
            targets["teacher_logits"], teacher(xb), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(xb, x[yb.numpy()])
        seen.extend(yb.numpy().tolist())
    assert sorted(seen) == list(range(200)) and seen != list(range(200))


def test_unlabeled_cached_batches(teacher, data, tmp_path):
    x, _ = data
    cache = build(teacher, x, tmp_path / "c")
    distiller = kd.Distiller(tiny_student(), teacher)
    distiller.compile(optimizer="adam")
    history = distiller.fit(cache.dataset(x, batch_size=64), epochs=1, verbose=0)
    np.testing.assert_allclose(
        history.history["loss"], history.history["distillation_loss"]
    )


def test_reopen_checks_teacher_and_data(teacher, data, tmp_path):
    x, _ = data
    build(teacher, x, tmp_path / "c")
    assert TeacherCache(tmp_path / "c", teacher=teacher, x=x).num_examples == 300
    other = trained_teacher(epochs=1)
    with pytest.raises(CacheMismatchError, match="another teacher"):
        TeacherCache(tmp_path / "c", teacher=other)
    x_other = x.copy()
    x_other[0, 0, 0, 0] += 1.0
    with pytest.raises(CacheMismatchError, match="another dataset"):
        TeacherCache(tmp_path / "c", x=x_other)
    with pytest.raises(
        CacheMismatchError, match="300 examples but the data given has 299"
    ):
        TeacherCache(tmp_path / "c").dataset(x[:299])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build(teacher, x, tmp_path / "c")


def test_truncated_and_corrupt_shards_are_named(teacher, data, tmp_path):
    x, _ = data
    cache = build(teacher, x, tmp_path / "c")
    shard = os.path.join(
        cache.directory, cache.manifest["parts"]["logits"]["shards"][1]["file"]
    )
    content = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(content[:-7])
    with pytest.raises(CacheCorruptError, match=r"shard-00001\.logits.*truncated"):
        TeacherCache(tmp_path / "c")
    with open(shard, "wb") as f:
        f.write(content[:-2] + bytes([content[-2] ^ 0xFF, content[-1]]))
    with pytest.raises(CacheCorruptError, match=r"shard-00001\.logits.*checksum"):
        TeacherCache(tmp_path / "c")


def test_shard_truncated_after_opening_is_caught(teacher, data, tmp_path):
    x, y = data
    cache = build(teacher, x, tmp_path / "c")
    streamed = cache.dataset(x, y, batch_size=100, in_memory=False)
    shard = os.path.join(
        cache.directory, cache.manifest["parts"]["logits"]["shards"][0]["file"]
    )
    content = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(content[:-20])
    # Checked again at the start of every epoch of a streamed dataset.
    with pytest.raises(tf.errors.OpError, match=r"shard-00000\.logits.*truncated"):
        list(streamed)
    with pytest.raises(CacheCorruptError, match=r"shard-00000\.logits.*truncated"):
        cache.dataset(x, y)
    # Reading into memory checks the bytes it reads against their checksum.
    with pytest.raises(CacheCorruptError, match=r"shard-00000\.logits.*checksum"):
        cache.load()


def test_in_memory_choice(teacher, data, tmp_path):
    x, y = data
    cache = build(teacher, x, tmp_path / "c", k=3)
    targets = cache.load()
    assert targets["teacher_topk_logits"].shape == (300, 3)
    assert targets["teacher_topk_indices"].shape == (300, 3)
    assert targets["teacher_rest_logsumexp"].shape == (300,)
    with pytest.raises(ValueError, match="in_memory='yes'"):
        cache.dataset(x, y, in_memory="yes")


@pytest.mark.parametrize("k", [0, -1, 11, 2.5])
def test_bad_k(teacher, data, tmp_path, k):
    x, _ = data
    with pytest.raises(ValueError, match=f"k={k!r}"):
        build(teacher, x[:10], tmp_path / "c", k=k)
    assert not os.path.exists(tmp_path / "c")


def test_tfdata_input_and_dataset_pairing(teacher, data, tmp_path):
    x, y = data
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    cache = build(teacher, batches, tmp_path / "c", k=10)
    assert cache.num_examples == 300
    TeacherCache(tmp_path / "c", x=batches)
    ds = cache.dataset(tf.data.Dataset.from_tensor_slices((x, y)), batch_size=100)
    distiller = kd.Distiller(tiny_student(), teacher, alpha=0.2, temperature=3.0)
    distiller.compile(optimizer="sgd")
    cached = distiller.evaluate(ds, verbose=0, return_dict=True)
    online = distiller.evaluate(x, y, batch_size=100, verbose=0, return_dict=True)
    np.testing.assert_allclose(cached["loss"], online["loss"], rtol=1e-5)


def test_a_dataset_source_is_shuffled_in_a_bounded_buffer(tmp_path, monkeypatch):
    # Data from files may not fit in memory: by default a dataset source is
    # shuffled in at most STREAM_SHUFFLE_BUFFER examples, never all of them.
    from keras_distill.cache import reader

    monkeypatch.setattr(reader, "STREAM_SHUFFLE_BUFFER", 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    cache = build(teacher, x, tmp_path / "c", dtype="float32", rows_per_shard=16)
    source = tf.data.Dataset.from_tensor_slices((x, np.arange(64)))
    seen = []
    for xb, yb, targets in cache.dataset(source, batch_size=8, shuffle=True, seed=2):
        np.testing.assert_allclose(
            targets["teacher_logits"], teacher(xb), rtol=1e-5, atol=1e-6
        )
        seen.extend(yb.numpy().tolist())
    assert sorted(seen) == list(range(64)) and seen != list(range(64))
    # With a buffer of 4, output position i holds one of examples 0 .. i + 3.
    assert all(index <= position + 3 for position, index in enumerate(seen))
    # Arrays are still shuffled as a whole (they are in memory anyway).
    ds = cache.dataset(x, np.arange(64), batch_size=64, shuffle=True, seed=2)
    order = next(iter(ds))[1].numpy()
    assert any(index > position + 3 for position, index in enumerate(order))


class SoftmaxTeacher(keras.Model):
    """A subclassed teacher (no known last activation) returning probabilities."""

    def __init__(self, teacher):
        super().__init__(name="softmax_teacher")
        self.teacher = teacher

    def call(self, x, training=False):
        return keras.ops.softmax(self.teacher(x, training=training))


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_build_refuses_probabilities_declared_as_logits(teacher, data, tmp_path, kind):
    x, _ = data
    if kind == "sequential":
        probabilities = keras.Sequential([teacher, keras.layers.Softmax()])
    else:
        probabilities = SoftmaxTeacher(teacher)
    with pytest.raises(
        ValueError, match="returns probabilities, but teacher_outputs='logits'"
    ):
        build(probabilities, x[:64], tmp_path / "c")
    assert not (tmp_path / "c" / "manifest.json").exists()
    # Declared as what they are, they are cached as their logits.
    cache = build(
        probabilities, x[:64], tmp_path / "c", teacher_outputs="probabilities"
    )
    stored = cache.load()["teacher_logits"]
    expected = keras.ops.convert_to_numpy(keras.ops.log_softmax(teacher(x[:64])))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.log_softmax(stored)), expected, atol=1e-2
    )


def test_all_zero_sample_weights_warn_when_paired_with_the_cache(
    teacher, data, tmp_path
):
    x, y = data
    cache = build(teacher, x[:64], tmp_path / "c")
    with pytest.warns(UserWarning, match="Every `sample_weight` is 0"):
        cache.dataset(x[:64], y[:64], sample_weight=np.zeros(64))


def test_a_teacher_that_outputs_nan_itself_is_not_told_to_use_float32(tmp_path):
    # The advice to cache in float32 is for float16 overflow only; NaN in the
    # teacher's own outputs names the batch's examples instead.
    # (NaN inputs are refused before the teacher runs: reliability_round4_test.)
    x, _ = digits_subset(n=64)
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    kernel, bias = teacher.get_weights()
    kernel[:, 3] = np.nan  # the teacher's own outputs are NaN
    teacher.set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"in batch 0 \(examples 0 to 31\)") as info:
        TeacherCache.build(teacher, x, str(tmp_path / "c"), batch_size=32, verbose=0)
    assert "float32'" not in str(info.value)
