import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill.transfer import GroupedTeacher
from tests.helpers import digits_subset, load_file, tiny_student, trained_teacher


def test_grouped_probabilities_sum_source_classes():
    teacher = trained_teacher()
    x, _ = digits_subset(n=16)
    grouped = GroupedTeacher(teacher, [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]])
    p = keras.ops.softmax(teacher(x)).numpy()
    expected = np.stack([p[:, ::2].sum(-1), p[:, 1::2].sum(-1)], -1)
    np.testing.assert_allclose(np.exp(grouped(x)), expected, rtol=1e-5)


def test_subset_target_space_is_renormalised():
    teacher = trained_teacher()
    x, _ = digits_subset(n=16)
    p = keras.ops.softmax(teacher(x)).numpy()[:, [3, 8]]
    grouped = GroupedTeacher(teacher, [[3], [8]])
    np.testing.assert_allclose(
        np.exp(grouped(x)), p / p.sum(-1, keepdims=True), rtol=1e-4
    )


def test_distill_into_target_space_and_save(tmp_path):
    teacher = trained_teacher()
    x, y = digits_subset(n=128)
    grouped = GroupedTeacher(teacher, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    student = tiny_student(num_classes=2)
    d = kd.Distiller(student, grouped, alpha=0.5, temperature=2.0)
    d.compile(optimizer="adam", metrics=["accuracy"])
    history = d.fit(x, (y >= 5).astype("int32"), epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    d.save(tmp_path / "t.keras")
    loaded = keras.models.load_model(tmp_path / "t.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize(
    "groups, message",
    [
        ([[0, 1], [12]], r"Target class 1 references source classes \[12\]"),
        ([[0, 1], [1, 2]], "Source class 1 is in the groups of target classes 0 and 1"),
        ([[0], []], "Target class 1 has an empty group"),
    ],
)
def test_bad_mapping(groups, message):
    with pytest.raises(ValueError, match=message):
        GroupedTeacher(trained_teacher(), groups)


@pytest.mark.slow
def test_transfer_example_beats_scratch_student():
    results = load_file("examples/transfer.py", "transfer_example").run()
    assert results["student (transfer-distilled)"] > results["student (scratch)"], (
        results
    )
