"""The language-model divergences (reverse KL, JSD, skew KL, TVD) against NumPy."""

import numpy as np
import pytest

import keras_distill as kd
from keras_distill.terms.jsd import jsd_loss
from keras_distill.terms.reverse_kl import reverse_kl_loss
from keras_distill.terms.skew_kl import skew_kl_loss
from keras_distill.terms.tvd import tvd_loss


def _softmax(z, t):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):
    return np.sum(np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0), -1)


RNG = np.random.default_rng(0)
TEACHER = RNG.normal(size=(3, 5, 11)).astype("float32") * 3
STUDENT = RNG.normal(size=(3, 5, 11)).astype("float32") * 3


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_divergence_matches_its_numpy_definition_per_token(temperature):
    p, q = _softmax(TEACHER, temperature), _softmax(STUDENT, temperature)
    t2 = temperature**2
    beta, skew = 0.3, 0.1
    m = beta * p + (1 - beta) * q
    expected = {
        "reverse_kl": t2 * _kl(q, p),
        "jsd": t2 * (beta * _kl(p, m) + (1 - beta) * _kl(q, m)),
        "skew_kl": t2 * _kl(p, skew * p + (1 - skew) * q),
        "skew_reverse_kl": t2 * _kl(q, skew * q + (1 - skew) * p),
        "tvd": t2 * 0.5 * np.abs(p - q).sum(-1),
    }
    got = {
        "reverse_kl": reverse_kl_loss(TEACHER, STUDENT, temperature),
        "jsd": jsd_loss(TEACHER, STUDENT, temperature, beta),
        "skew_kl": skew_kl_loss(TEACHER, STUDENT, temperature, skew),
        "skew_reverse_kl": skew_kl_loss(
            TEACHER, STUDENT, temperature, skew, reverse=True
        ),
        "tvd": tvd_loss(TEACHER, STUDENT, temperature),
    }
    for name, value in got.items():
        value = np.asarray(value)
        assert value.shape == (3, 5), name  # one value per token
        np.testing.assert_allclose(value, expected[name], rtol=2e-4, atol=1e-6)


def test_jsd_tends_to_the_two_kl_directions_and_equals_them_at_the_ends():
    p, q = _softmax(TEACHER, 1.0), _softmax(STUDENT, 1.0)
    forward, reverse = _kl(p, q), _kl(q, p)
    # The limits: the relative error shrinks with beta (resp. 1 - beta).
    # Milder logits converge at larger beta (the mixture's convergence is
    # slow where p / q is huge).
    mild_t, mild_s = TEACHER / 3, STUDENT / 3
    mp, mq = _softmax(mild_t, 1.0), _softmax(mild_s, 1.0)
    errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        small = np.asarray(jsd_loss(mild_t, mild_s, beta=eps)) / eps
        large = np.asarray(jsd_loss(mild_t, mild_s, beta=1 - eps)) / eps
        errors.append(
            (
                np.max(np.abs(small / _kl(mp, mq) - 1)),
                np.max(np.abs(large / _kl(mq, mp) - 1)),
            )
        )
    assert errors[0][0] > errors[1][0] > errors[2][0] and errors[2][0] < 0.02
    assert errors[0][1] > errors[1][1] > errors[2][1] and errors[2][1] < 0.02
    np.testing.assert_allclose(jsd_loss(TEACHER, STUDENT, beta=0.0), forward, rtol=1e-4)
    np.testing.assert_allclose(jsd_loss(TEACHER, STUDENT, beta=1.0), reverse, rtol=1e-4)
    # The forward limit is Hinton's KD term.
    np.testing.assert_allclose(
        jsd_loss(TEACHER[0], STUDENT[0], 2.0, beta=0.0),
        kd.losses.kd_loss(TEACHER[0], STUDENT[0], 2.0),
        rtol=1e-5,
    )


def test_skew_zero_is_the_plain_kl_and_skew_one_is_zero():
    p, q = _softmax(TEACHER, 1.0), _softmax(STUDENT, 1.0)
    np.testing.assert_allclose(
        skew_kl_loss(TEACHER, STUDENT, skew=0.0), _kl(p, q), rtol=1e-4
    )
    np.testing.assert_allclose(
        skew_kl_loss(TEACHER, STUDENT, skew=0.0, reverse=True), _kl(q, p), rtol=1e-4
    )
    assert np.all(np.asarray(skew_kl_loss(TEACHER, STUDENT, skew=1.0)) == 0.0)


def test_the_divergences_stay_finite_where_one_distribution_underflows():
    # A teacher certain of one class: p is 0 (in float32) elsewhere.
    teacher = np.array([[200.0, 0.0, 0.0]], "float32")
    student = np.array([[0.0, 200.0, 0.0]], "float32")
    for fn in (reverse_kl_loss, jsd_loss, skew_kl_loss, tvd_loss):
        value = np.asarray(fn(teacher, student))
        assert np.all(np.isfinite(value)), fn.__name__
    # Bounded ones stay within their bounds.
    assert np.asarray(jsd_loss(teacher, student))[0] <= np.log(2) + 1e-5
    assert abs(np.asarray(tvd_loss(teacher, student))[0] - 1.0) < 1e-5


@pytest.mark.parametrize(
    "cls, option", [(kd.terms.JSDTerm, "beta"), (kd.terms.SkewKLTerm, "skew")]
)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_mixture_weight_outside_zero_one_is_refused_naming_it(cls, option, bad):
    with pytest.raises(ValueError, match=option):
        cls(**{option: bad})


def test_each_divergence_distills_by_name_and_lowers_its_loss():
    import keras

    x = RNG.normal(size=(64, 6)).astype("float32")
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    for name in ("reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"):
        student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
        distiller = kd.Distiller(
            student, teacher, temperature=1.0, distillation_loss=name
        )
        distiller.compile(optimizer=keras.optimizers.Adam(0.05))
        history = distiller.fit(x, epochs=15, batch_size=64, verbose=0).history
        losses = history["distillation_loss"]
        assert losses[-1] < 0.5 * losses[0], (name, losses)
