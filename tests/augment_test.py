"""Consistent augmentation: stateless batch augmentations and their pipelines."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import augment

SEED = tf.constant([3, 4], tf.int64)


def ramp_batch(n=6, length=10):
    """Example i is the signal i*100 + t, t = 0..length-1: every value is unique."""
    t = np.arange(length, dtype="float32")
    return (np.arange(n, dtype="float32")[:, None] * 100 + t)[..., None]


def test_mixup_is_a_convex_combination_of_two_batch_examples():
    x = np.repeat(np.arange(8, dtype="float32")[:, None, None], 5, axis=1)
    mixed = augment.mixup(1.0)(x, SEED).numpy()
    assert mixed.shape == x.shape
    # Constant signals stay constant (one lambda per example) and in range.
    assert np.allclose(mixed, mixed[:, :1])
    assert mixed.min() >= 0.0 and mixed.max() <= 7.0
    assert not np.allclose(mixed, x)  # something was mixed
    again = augment.mixup(1.0)(x, SEED).numpy()
    other = augment.mixup(1.0)(x, tf.constant([5, 6], tf.int64)).numpy()
    np.testing.assert_array_equal(mixed, again)  # stateless: same seed, same batch
    assert not np.allclose(mixed, other)


def test_shift_rolls_each_example_by_at_most_max_shift():
    x = ramp_batch()
    moved = augment.shift(3)(x, SEED).numpy()
    for original, shifted in zip(x[..., 0], moved[..., 0]):
        np.testing.assert_array_equal(np.sort(original), np.sort(shifted))
        offsets = [
            s for s in range(-3, 4) if np.array_equal(np.roll(original, s), shifted)
        ]
        assert len(offsets) == 1
    zeros = augment.shift(3, mode="zeros")(x, SEED).numpy()
    # Same shifts, vacated steps zero: nonzero values agree with the roll.
    keep = zeros != 0
    np.testing.assert_array_equal(zeros[keep], moved[keep])


def test_shift_with_zeros_along_the_width_of_images():
    x = np.ones((5, 4, 6, 1), "float32")  # (batch, height, width, channels)
    moved = augment.shift(2, axis=2, mode="zeros")(x, SEED).numpy()
    # Whole columns are zeroed (never rows), at most 2 of them per image.
    columns = moved[..., 0].sum(axis=1)  # (batch, width)
    assert set(np.unique(columns)) <= {0.0, 4.0}
    assert ((columns == 0).sum(axis=1) <= 2).all()
    assert (columns == 0).any()


def test_scale_and_noise():
    x = np.ones((4, 6, 1), "float32")
    scaled = augment.scale(0.5, 2.0)(x, SEED).numpy()
    assert np.allclose(scaled, scaled[:, :1])  # one factor per example
    assert scaled.min() >= 0.5 and scaled.max() <= 2.0
    noisy = augment.noise(0.1)(np.zeros((64, 40, 1), "float32"), SEED).numpy()
    assert 0.08 < noisy.std() < 0.12
    with pytest.raises(ValueError, match="low <= high"):
        augment.scale(2.0, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        augment.mixup(0.0)


def test_augment_dataset_keeps_or_drops_labels_and_changes_every_epoch():
    x, y = ramp_batch(8), np.arange(8, dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    kept = augment.augment_dataset(ds, augment.shift(2), seed=1, labels="keep")
    first = [(bx.numpy(), by.numpy()) for bx, by in kept]
    second = [(bx.numpy(), by.numpy()) for bx, by in kept]
    np.testing.assert_array_equal(first[0][1], y[:4])  # labels untouched
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    again = augment.augment_dataset(ds, augment.shift(2), seed=1)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), first[0][0])
    dropped = augment.augment_dataset(ds, augment.shift(2), labels="drop")
    assert isinstance(dropped.element_spec, tf.TensorSpec)


def test_augment_dataset_refuses_mixed_labels_and_cached_targets():
    x, y = ramp_batch(8), np.arange(8, dtype="int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match="labels='drop'"):
        augment.augment_dataset(ds, augment.compose(augment.mixup()), labels="keep")
    cached = tf.data.Dataset.from_tensor_slices(
        (x, y, {kd.targets.TEACHER_LOGITS_KEY: np.zeros((8, 3), "float32")})
    ).batch(4)
    with pytest.raises(ValueError, match="cache"):
        augment.augment_dataset(cached, augment.shift(1))


def test_teacher_and_student_see_the_same_augmented_batch():
    # A teacher identical to the student gives a zero KD term (T=1) only if
    # both models see the very same augmented inputs in the step.
    keras.utils.set_random_seed(0)
    student = kd.models.student_mlp(input_shape=(10, 1), num_classes=4, hidden=8)
    teacher = keras.models.clone_model(student)
    teacher.set_weights(student.get_weights())
    distiller = kd.Distiller(student, teacher, temperature=1.0)
    distiller.compile(optimizer="sgd")
    x = np.random.default_rng(0).normal(size=(32, 10, 1)).astype("float32")
    strong = augment.compose(augment.shift(3), augment.noise(0.5), augment.mixup())
    ds = augment.function_matching_dataset(x, 8, strong, seed=0)
    logs = distiller.evaluate(ds, verbose=0, return_dict=True)
    assert logs["distillation_loss"] == pytest.approx(0.0, abs=1e-6)
    # The same student against an independently augmented batch is not matched.
    other = augment.function_matching_dataset(x, 8, strong, seed=1)
    student_out = np.concatenate([student(b).numpy() for b in ds.take(1)])
    teacher_out = np.concatenate([teacher(b).numpy() for b in other.take(1)])
    assert not np.allclose(student_out, teacher_out)


def test_distiller_trains_on_function_matching_batches():
    keras.utils.set_random_seed(0)
    teacher = kd.models.student_mlp(input_shape=(10, 1), num_classes=4, hidden=16)
    student = kd.models.student_mlp(input_shape=(10, 1), num_classes=4, hidden=8)
    x = np.random.default_rng(1).normal(size=(64, 10, 1)).astype("float32")
    ds = augment.function_matching_dataset(
        x, 16, augment.signal_augmentation(max_shift=2), seed=0
    )
    distiller = kd.Distiller(student, teacher, temperature=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(ds, epochs=4, shuffle=False, verbose=0).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    assert np.isnan(history["student_loss"][-1])  # x-only: no label term
