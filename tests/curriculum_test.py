import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import callbacks, curriculum
from tests import helpers


def unique_digits(n):
    """`n` training digits with pairwise different images, and their labels."""
    x, y = helpers.digits()["train"]
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)[:n]
    return x[keep], y[keep]


def test_teacher_difficulty_is_the_teachers_loss_on_the_label():
    x, y = helpers.digits_subset(n=64)
    teacher = helpers.trained_teacher()
    scores = curriculum.teacher_difficulty(teacher, x, y, batch_size=16, verbose=0)
    logits = teacher.predict(x, verbose=0).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(scores, -log_probs[np.arange(64), y], rtol=1e-4)
    one_hot = np.eye(10)[y]
    np.testing.assert_allclose(
        curriculum.teacher_difficulty(teacher, x, one_hot, verbose=0), scores, rtol=1e-6
    )


def test_teacher_difficulty_without_labels_is_one_minus_confidence():
    x, _ = helpers.digits_subset(n=32)
    teacher = helpers.trained_teacher()
    scores = curriculum.teacher_difficulty(teacher, x, verbose=0)
    logits = teacher.predict(x, verbose=0).astype("float64")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, 1.0 - probs.max(-1), atol=1e-5)
    assert scores.min() >= 0.0 and scores.max() < 0.9


def test_teacher_difficulty_bad_labels():
    x, y = helpers.digits_subset(n=8)
    teacher = helpers.trained_teacher()
    with pytest.raises(ValueError, match=r"8 inputs and 7 labels"):
        curriculum.teacher_difficulty(teacher, x, y[:7], verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 10\).*from \d to 12"):
        curriculum.teacher_difficulty(teacher, x, np.r_[y[:7], 12], verbose=0)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("linear", [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]),
        ("root", [0.25, 0.25**0.5 * 1.0897247, 0.7288690, 0.875, 1.0, 1.0]),
        ("exponential", [0.25, 0.25**0.75, 0.5, 0.25**0.25, 1.0, 1.0]),
        ("step", [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]),
    ],
)
def test_pacing_known_points(kind, expected):
    schedule = curriculum.pacing(kind, 0.25, 4)
    assert [schedule(e) for e in range(6)] == pytest.approx(expected, rel=1e-6)


def test_root_pacing_formula():
    # sqrt(f0^2 + (1 - f0^2) * t) at f0 = 0.25, t = 1/4.
    assert curriculum.pacing("root", 0.25, 4)(1) == pytest.approx(
        (0.0625 + 0.9375 * 0.25) ** 0.5
    )


def test_step_pacing_holds_levels():
    schedule = curriculum.pacing("step", 0.2, 6, num_steps=2)
    assert [schedule(e) for e in range(7)] == pytest.approx(
        [0.2, 0.2, 0.2, 0.6, 0.6, 0.6, 1.0]
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (("linear", 0.0, 4), r"min_fraction.*\(0, 1\].*0\.0"),
        (("linear", 1.5, 4), r"min_fraction.*\(0, 1\].*1\.5"),
        (("cubic", 0.5, 4), r"kind.*'cubic'"),
        (("step", 0.5, 4, 0), r"num_steps.*>= 1"),
    ],
)
def test_pacing_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        curriculum.pacing(*args)


def test_dataset_reads_the_fraction_each_pass_and_shuffles_within():
    n = 20
    x = np.arange(n, dtype="float32")[:, None]
    difficulty = (np.arange(n) * 7) % n  # A known permutation of 0..19.
    data = curriculum.Curriculum(x, np.zeros(n), difficulty=difficulty, seed=1)
    dataset = data.dataset(batch_size=6)
    easiest = np.argsort(difficulty)
    assert int(dataset.cardinality()) == 4

    def one_pass():
        return [int(v) for batch, _ in dataset for v in batch.numpy().ravel()]

    for fraction, count in ((0.25, 5), (0.5, 10), (1.0, 20), (0.1, 2)):
        assert data.set_fraction(fraction) == count
        first, second = one_pass(), one_pass()
        assert len(first) == n  # Fixed-length epochs.
        assert set(first) == set(easiest[:count].tolist())
        assert set(second) == set(first)
        if count > 2:
            assert first != second  # Reshuffled between passes.


def test_same_shuffle_key_gives_the_same_epoch():
    x = np.arange(12, dtype="float32")[:, None]
    data = curriculum.Curriculum(x, difficulty=np.arange(12), seed=3)
    dataset = data.dataset(batch_size=12)
    data.set_fraction(0.5, shuffle_key=4)
    first = next(iter(dataset)).numpy().ravel().tolist()
    data.set_fraction(0.5, shuffle_key=4)
    assert next(iter(dataset)).numpy().ravel().tolist() == first


def test_curriculum_bad_input():
    x = np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match=r"same number of examples.*\[3, 4\]"):
        curriculum.Curriculum(x, np.zeros(4), difficulty=np.zeros(3))
    with pytest.raises(ValueError, match=r"finite.*nan.*example 2"):
        curriculum.Curriculum(x, difficulty=[0, 1, np.nan, 3])
    with pytest.raises(ValueError, match="difficulty.*required"):
        curriculum.Curriculum(x)
    data = curriculum.Curriculum(x, difficulty=np.arange(4))
    with pytest.raises(ValueError, match=r"\(0, 1\].*1\.2"):
        data.set_fraction(1.2)


class RecordingDistiller(kd.Distiller):
    """Records the images of every training batch (through `tf.py_function`)."""

    def __init__(self, record, **kwargs):
        super().__init__(**kwargs)
        self.record = record

    def train_step(self, data):
        import tensorflow as tf

        tf.py_function(lambda x: self.record(x.numpy()), [data[0]], [])
        return super().train_step(data)


def test_fit_feeds_only_the_easiest_examples_per_epoch():
    n = 120
    x, y = unique_digits(n)
    teacher = helpers.trained_teacher()
    seen = []
    distiller = RecordingDistiller(
        lambda batch: seen[-1].append(batch),
        student=helpers.tiny_student(),
        teacher=teacher,
    )
    distiller.compile(optimizer="adam")
    data = curriculum.Curriculum.from_teacher(teacher, x, y, verbose=0, seed=0)
    pacing = curriculum.pacing("linear", 0.25, 3)

    class NewEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append([])

    history = distiller.fit(
        data.dataset(batch_size=32),
        epochs=4,
        verbose=0,
        callbacks=[NewEpoch(), callbacks.CurriculumScheduler(data, pacing)],
    )
    id_of = {image.tobytes(): i for i, image in enumerate(x)}
    hardness_rank = np.argsort(np.argsort(data.difficulty, kind="stable"))
    for epoch, batches in enumerate(seen):
        ids = [id_of[image.tobytes()] for batch in batches for image in batch]
        count = curriculum.count_for_fraction(pacing(epoch), n)
        assert len(ids) == n
        assert set(ids) == set(data.order[:count].tolist())
        assert hardness_rank[ids].max() == count - 1
    assert history.history["curriculum_fraction"] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0]
    )
    assert history.history["curriculum_examples"] == [30, 60, 90, 120]


def test_bad_pacing_value_raises_before_training():
    x, y = helpers.digits_subset(n=32)
    distiller = kd.Distiller(
        student=helpers.tiny_student(), teacher=helpers.trained_teacher()
    )
    distiller.compile(optimizer="adam")
    data = curriculum.Curriculum(x, y, difficulty=np.arange(32))
    scheduler = callbacks.CurriculumScheduler(
        data, lambda epoch: 1.5 if epoch == 2 else 0.5
    )
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=r"epoch 2.*\(0, 1\].*1\.5"):
        distiller.fit(data.dataset(), epochs=3, verbose=0, callbacks=[scheduler])
    assert helpers.weights_equal(before, distiller.student.get_weights())
    with pytest.raises(ValueError, match=r"\(0, 1\].*0"):
        callbacks.CurriculumScheduler(data, 0)
    with pytest.raises(TypeError, match="Curriculum"):
        callbacks.CurriculumScheduler((x, y), 0.5)


def streaming_source(x, y):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y))


def test_streaming_curriculum_scores_like_teacher_difficulty_and_stages():
    x, y = unique_digits(60)
    teacher = helpers.trained_teacher()
    staged = curriculum.StreamingCurriculum.from_teacher(
        teacher,
        streaming_source(x, y),
        batch_size=16,
        verbose=0,
        seed=0,
        shuffle_buffer=8,
    )
    expected = curriculum.teacher_difficulty(teacher, x, y, verbose=0)
    np.testing.assert_allclose(staged.difficulty, expected, rtol=1e-4, atol=1e-5)
    order = np.argsort(expected, kind="stable")
    staged.set_fraction(0.25, shuffle_key=0)  # the easiest 15
    ds = staged.dataset(batch_size=7)
    assert int(ds.cardinality()) == 9  # ceil(60 / 7): every epoch is n examples
    labels_seen, images = [], []
    for xb, yb in ds:
        images.append(xb.numpy())
        labels_seen.append(yb.numpy())
    images = np.concatenate(images)
    assert len(images) == 60
    index = {x[i].tobytes(): i for i in range(len(x))}
    ids = [index[image.tobytes()] for image in images]
    assert set(ids) == set(order[:15].tolist())  # each easy one, only those
    first = ids
    staged.set_fraction(0.25, shuffle_key=0)
    again = [index[b.tobytes()] for xb, _ in ds for b in xb.numpy()]
    assert again == first  # same key, same epoch (resumable)
    staged.set_fraction(1.0, shuffle_key=1)
    full = [index[b.tobytes()] for xb, _ in ds for b in xb.numpy()]
    assert sorted(full) == list(range(60)) and full != list(range(60))
    # Shuffled in blocks of 8 examples: example i stays in block i // 8.
    assert all(i // 8 == p // 8 for p, i in enumerate(full))


def test_streaming_curriculum_trains_with_the_scheduler_and_checks_the_order():
    import tensorflow as tf

    x, y = unique_digits(48)
    teacher = helpers.trained_teacher()
    staged = curriculum.StreamingCurriculum.from_teacher(
        teacher, streaming_source(x, y), verbose=0, seed=0
    )
    distiller = kd.Distiller(helpers.tiny_student(), teacher)
    distiller.compile(optimizer="adam")
    history = distiller.fit(
        staged.dataset(batch_size=16),
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[callbacks.CurriculumScheduler(staged, 0.5)],
    )
    assert history.history["curriculum_examples"] == [24.0, 24.0]
    # A source in another order than when it was scored fails, naming why.
    reordered = curriculum.StreamingCurriculum(
        streaming_source(x[::-1].copy(), y[::-1].copy()),
        staged.difficulty,
        fingerprints=staged.fingerprints,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same order"):
        for _ in reordered.dataset(batch_size=16):
            pass


def test_streaming_curriculum_bad_input():
    import tensorflow as tf

    x, y = unique_digits(8)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        curriculum.StreamingCurriculum(x, np.zeros(8))
    with pytest.raises(ValueError, match="8 examples but `difficulty` has 5"):
        curriculum.StreamingCurriculum(streaming_source(x, y), np.zeros(5))
    with pytest.raises(ValueError, match="shuffle_buffer=0"):
        curriculum.StreamingCurriculum(
            streaming_source(x, y), np.zeros(8), shuffle_buffer=0
        )
    with pytest.raises(ValueError, match=r"shape \(examples, 2\)"):
        curriculum.StreamingCurriculum(
            streaming_source(x, y), np.zeros(8), fingerprints=np.zeros((8, 3))
        )
    with pytest.raises(ValueError, match="no examples"):
        curriculum.StreamingCurriculum.from_teacher(
            helpers.trained_teacher(),
            tf.data.Dataset.from_tensor_slices(x[:0]),
            verbose=0,
        )
