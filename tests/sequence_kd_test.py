"""Sequence-level KD (Kim and Rush 2016): the teacher's continuations as data."""

import os

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import decoding, sequence_kd, text

LENGTH = 16


def _teacher(seed=0):
    keras.utils.set_random_seed(seed)
    return kd.models.causal_lm(text.VOCAB_SIZE, LENGTH, width=16, layers=1, heads=1)


def _prompts():
    ids, _, _ = text.encode(["a fine", "the plot", "bad", "a very long film"], LENGTH)
    lengths = np.asarray([1 + len(s) for s in ("a fine", "the plot", "bad", "a very")])
    return ids, lengths


def test_the_set_is_the_teachers_greedy_continuation_shifted(tmp_path):
    teacher = _teacher()
    ids, lengths = _prompts()
    x, y, w = sequence_kd.transfer_set(teacher, ids, lengths, batch_size=3)
    expected = decoding.greedy_continue(teacher, ids, lengths).numpy()
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y[:, :-1], expected[:, 1:])
    # Trained on the generated tokens only: position i predicts token i + 1.
    for row, n in enumerate(lengths):
        assert w[row, : n - 1].sum() == 0 and w[row, n - 1 : -1].all()
        assert w[row, -1] == 0
    _, _, all_w = sequence_kd.transfer_set(teacher, ids, lengths, train_on_prompts=True)
    assert all_w[:, :-1].all()


def test_a_stored_set_is_read_again_and_another_teacher_refused(tmp_path):
    teacher, path = _teacher(), tmp_path / "transfer.npz"
    ids, lengths = _prompts()
    first = sequence_kd.transfer_set(teacher, ids, lengths, path)
    stamp = os.stat(path).st_mtime_ns
    again = sequence_kd.transfer_set(teacher, ids, lengths, path)
    assert os.stat(path).st_mtime_ns == stamp  # read, not written again
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Tokens past the prompts are not part of them.
    noisy = ids.copy()
    noisy[:, -1] = 7
    sequence_kd.transfer_set(teacher, noisy, lengths, path)
    assert os.stat(path).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="another teacher"):
        sequence_kd.transfer_set(_teacher(seed=1), ids, lengths, path)
    with pytest.raises(ValueError, match="another prompts"):
        sequence_kd.transfer_set(teacher, ids, lengths - 1, path)
    other = sequence_kd.transfer_set(
        _teacher(seed=1), ids, lengths, path, overwrite=True
    )
    assert os.stat(path).st_mtime_ns != stamp and other[0].shape == first[0].shape
    assert sorted(os.listdir(tmp_path)) == ["transfer.npz"]  # no partial file left


def test_a_damaged_or_foreign_file_is_refused(tmp_path):
    teacher = _teacher()
    ids, lengths = _prompts()
    path = tmp_path / "t.npz"
    sequence_kd.transfer_set(teacher, ids, lengths, path)
    with np.load(path) as stored:
        continued, meta = stored["continued"].copy(), stored["meta"]
    continued[0, -1] += 1
    np.savez(path, continued=continued, meta=meta)
    with pytest.raises(ValueError, match="damaged"):
        sequence_kd.transfer_set(teacher, ids, lengths, path)
    path.write_text("not an npz")
    with pytest.raises(ValueError, match="cannot be read"):
        sequence_kd.transfer_set(teacher, ids, lengths, path)


@pytest.mark.parametrize(
    "ids, lengths, message",
    [
        (np.zeros((2, 4), "float32"), [1, 1], "integer array"),
        (np.zeros((2, 4), "int32"), [1], "one length per prompt"),
        (np.zeros((2, 4), "int32"), [1, 5], r"prompt_lengths\[1\]=5"),
        (np.zeros((2, 4), "int32"), [0, 1], r"prompt_lengths\[0\]=0"),
    ],
)
def test_bad_prompts_are_refused(ids, lengths, message):
    with pytest.raises(ValueError, match=message):
        sequence_kd.transfer_set(_teacher(), ids, lengths)


def test_a_student_trains_on_the_set_alone_and_with_token_kd():
    teacher = _teacher()
    ids, lengths = _prompts()
    x, y, w = sequence_kd.transfer_set(teacher, ids, lengths)
    student = kd.models.causal_lm(text.VOCAB_SIZE, LENGTH, width=8, layers=1, heads=1)
    student.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = student.fit(x, y, sample_weight=w, epochs=20, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    distiller = kd.Distiller(student, teacher, alpha=0.5)
    distiller.compile(optimizer="adam")
    logs = distiller.fit(x, y, sample_weight=w, epochs=1, verbose=0).history
    assert np.isfinite(logs["distillation_loss"][-1])
