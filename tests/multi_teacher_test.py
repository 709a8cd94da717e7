import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import models
from tests.helpers import digits_subset, tiny_student, trained_teacher


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def teachers():
    keras.utils.set_random_seed(7)
    other = models.teacher_cnn(name="other")
    return trained_teacher(), other


def kd_value(distiller, x, y):
    return distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)


def test_identical_teachers_equal_a_single_teacher(teachers):
    x, y = digits_subset(n=64)
    teacher, _ = teachers
    twin = models.teacher_cnn(name="twin")
    twin.set_weights(teacher.get_weights())
    student = tiny_student()
    single = kd.Distiller(student, teacher, alpha=0.2, temperature=3.0)
    double = kd.Distiller(
        student, [teacher, twin], teacher_weights=[0.3, 0.7], alpha=0.2, temperature=3.0
    )
    for d in (single, double):
        d.compile(optimizer="sgd")
    a, b = kd_value(single, x, y), kd_value(double, x, y)
    for key in ("loss", "distillation_loss"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5)


def test_soft_targets_are_averaged_in_probability_space(teachers):
    x, y = digits_subset(n=64)
    t1, t2 = teachers
    student = tiny_student()
    d = kd.Distiller(
        student,
        [t1, t2],
        teacher_weights=[1, 3],
        teacher_temperatures=[None, 2.0],
        alpha=0.0,
        temperature=4.0,
    )
    d.compile(optimizer="sgd")
    z1, z2 = t1.predict(x, verbose=0), t2.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    p = 0.25 * softmax(z1 / 4.0) + 0.75 * softmax(z2 / 2.0)
    q = softmax(s / 4.0)
    expected = (16.0 * np.sum(p * (np.log(p) - np.log(q)), -1)).mean()
    np.testing.assert_allclose(
        kd_value(d, x, y)["distillation_loss"], expected, rtol=1e-4
    )


def test_multi_teacher_fit_save_load(teachers, tmp_path):
    x, y = digits_subset(n=128)
    t1, t2 = teachers
    before = [w.copy() for w in t2.get_weights()]
    d = kd.Distiller(tiny_student(), [t1, t2], teacher_weights=[0.5, 0.5])
    d.compile(optimizer="adam")
    history = d.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(before, t2.get_weights()))
    d.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert len(loaded.teachers) == 2
    np.testing.assert_allclose(
        kd_value(loaded, x, y)["loss"], kd_value(d, x, y)["loss"], rtol=1e-5
    )


def test_teachers_with_different_class_counts(teachers):
    t1, _ = teachers
    t3 = models.teacher_cnn(num_classes=5, name="five")
    with pytest.raises(
        ValueError, match=r"teacher\[0\] \(None, 10\), teacher\[1\] \(None, 5\)"
    ):
        kd.Distiller(tiny_student(), [t1, t3])


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0, 0]])
def test_bad_teacher_weights(teachers, weights):
    with pytest.raises(ValueError, match="teacher_weights"):
        kd.Distiller(tiny_student(), list(teachers), teacher_weights=weights)


class _Subclassed(keras.Model):
    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(classes)

    def call(self, x):
        return self.dense(self.flat(x))


def test_an_ensemble_teacher_with_another_class_count_is_named(teachers):
    x, y = digits_subset(n=32)
    wide = _Subclassed(12, name="wide")
    wide(x[:1])  # built (unbuilt teachers are refused)
    distiller = kd.Distiller(tiny_student(), [teachers[0], wide])
    distiller.compile(optimizer="sgd")
    with pytest.raises(
        ValueError, match=r"teacher\[1\] \(wide\) predicts 12 classes, the student 10"
    ):
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
