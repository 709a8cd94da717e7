import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import models
from tests.helpers import digits_subset


@pytest.fixture
def policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _pair(seed=0):
    keras.utils.set_random_seed(seed)
    return models.teacher_cnn(), models.student_mlp()


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_kd_loss_matches_float32_and_trains(policy, name):
    x, y = digits_subset(n=128)
    teacher32, student32 = _pair()
    reference = kd.Distiller(student32, teacher32, alpha=0.3, temperature=4.0)
    reference.compile(optimizer="sgd")
    expected = reference.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)

    policy(name)
    teacher, student = _pair()
    teacher.set_weights(teacher32.get_weights())
    student.set_weights(student32.get_weights())
    assert student.layers[-1].compute_dtype != "float32"
    distiller = kd.Distiller(student, teacher, alpha=0.3, temperature=4.0)
    distiller.compile(optimizer="adam")
    got = distiller.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)
    tolerance = 2e-2 if name == "mixed_bfloat16" else 5e-3
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(got[key], expected[key], rtol=tolerance)
    if name == "mixed_float16":
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["distillation_loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    assert all(w.dtype == "float32" for w in student.trainable_weights)


def test_kd_loss_is_float32_even_for_float16_logits():
    t = np.random.default_rng(0).normal(size=(4, 10)).astype("float16") * 30
    s = np.random.default_rng(1).normal(size=(4, 10)).astype("float16") * 30
    value = kd.losses.kd_loss(t, s, temperature=0.5)
    assert value.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(value)))


def test_a_loss_scale_overflow_is_skipped_not_an_error(policy):
    # A LossScaleOptimizer skips the updates whose scaled gradients overflow
    # and lowers its scale: the step's check must not stop training there.
    policy("mixed_float16")
    x, y = digits_subset(n=64)
    teacher, student = _pair()
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(1e-3), initial_scale=2.0**40
    )
    distiller = kd.Distiller(student, teacher)
    distiller.compile(optimizer=optimizer)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert float(optimizer.dynamic_scale.numpy()) < 2.0**40
    # A NaN in the inputs still stops training with the step's error.
    x = x.copy()
    x[5] = np.nan
    with pytest.raises(ValueError, match="became NaN or infinite"):
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
