import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import losses
from tests.helpers import digits_subset, random_logits, tiny_student, trained_teacher


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def numpy_dkd(t, s, y, temperature, alpha, beta):
    """Independent reference following the paper's definitions."""
    pt, ps = softmax(t / temperature), softmax(s / temperature)
    out = []
    for i, label in enumerate(y):
        bt = np.array([pt[i, label], 1 - pt[i, label]])
        bs = np.array([ps[i, label], 1 - ps[i, label]])
        others = [c for c in range(t.shape[1]) if c != label]
        nt = pt[i, others] / pt[i, others].sum()
        ns = ps[i, others] / ps[i, others].sum()
        out.append(temperature**2 * (alpha * kl(bt, bs) + beta * kl(nt, ns)))
    return np.array(out)


def test_logit_mse_matches_numpy():
    t, s = random_logits(seed=1), random_logits(seed=2)
    np.testing.assert_allclose(
        np.asarray(losses.logit_mse_loss(t, s)), ((t - s) ** 2).mean(-1), rtol=1e-6
    )
    assert float(losses.LogitMSE()(t, s)) == pytest.approx(((t - s) ** 2).mean(), 1e-6)


@pytest.mark.parametrize("temperature, alpha, beta", [(1.0, 1.0, 8.0), (4.0, 0.5, 2.0)])
def test_dkd_matches_numpy(temperature, alpha, beta):
    t, s = random_logits(seed=3).astype("float64"), random_logits(seed=4)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    got = losses.dkd_loss(t, s, y, temperature, alpha, beta)
    np.testing.assert_allclose(
        np.asarray(got), numpy_dkd(t, s, y, temperature, alpha, beta), rtol=1e-4
    )
    loss = losses.DecoupledKD(temperature, alpha, beta)
    value = loss({"teacher_logits": t, "labels": y}, s)
    np.testing.assert_allclose(
        float(value), numpy_dkd(t, s, y, temperature, alpha, beta).mean(), rtol=1e-4
    )
    assert losses.DecoupledKD.from_config(loss.get_config()).beta == beta


def test_dkd_decomposes_kd():
    # Zhao et al., eq. 4: KD = TCKD + (1 - p_target) * NCKD (teacher's p at T).
    t = np.array([[3.0, 1.0, 0.0, -1.0]])
    s = np.array([[2.0, 0.0, 1.0, -1.0]])
    p_target = softmax(t / 2.0)[0, 0]
    np.testing.assert_allclose(
        np.asarray(losses.dkd_loss(t, s, [0], 2.0, 1.0, 1.0 - p_target)),
        np.asarray(losses.kd_loss(t, s, 2.0)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", ["mse", "dkd", losses.DecoupledKD(beta=2.0)])
def test_distiller_trains_and_saves_with_other_soft_terms(name, tmp_path):
    x, y = digits_subset(n=128)
    distiller = kd.Distiller(tiny_student(), trained_teacher(), distillation_loss=name)
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), distiller.evaluate(x, y, verbose=0), rtol=1e-5
    )


def test_distiller_soft_term_values():
    x, y = digits_subset(n=64)
    teacher, student = trained_teacher(), tiny_student()
    t = teacher.predict(x, verbose=0)
    s = student.predict(x, verbose=0)
    for name, expected in (
        ("mse", ((t - s) ** 2).mean(-1).mean()),
        ("dkd", numpy_dkd(t, s, y, 4.0, 1.0, 8.0).mean()),
    ):
        d = kd.Distiller(student, teacher, alpha=0.0, distillation_loss=name)
        d.compile(optimizer="sgd")
        got = d.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        np.testing.assert_allclose(got["distillation_loss"], expected, rtol=1e-4)


def test_bad_distillation_loss():
    with pytest.raises(ValueError, match="distillation_loss='kl'"):
        kd.Distiller(tiny_student(), trained_teacher(), distillation_loss="kl")


def test_kd_loss_gradients_match_autodiff():
    # kd_loss has closed-form gradients; compare with autodiff of the formula.
    rng = np.random.default_rng(3)
    teacher = tf.Variable(rng.normal(size=(6, 5)) * 3, dtype="float32")
    student = tf.Variable(rng.normal(size=(6, 5)) * 3, dtype="float32")
    weights = tf.constant(rng.random(6), "float32")

    def reference(t, s, temperature):
        log_p = tf.nn.log_softmax(t / temperature)
        log_q = tf.nn.log_softmax(s / temperature)
        return temperature**2 * tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)

    for temperature in (0.5, 1.0, 4.0):
        with tf.GradientTape(persistent=True) as tape:
            ours = tf.reduce_sum(
                weights * losses.kd_loss(teacher, student, temperature)
            )
            ref = tf.reduce_sum(weights * reference(teacher, student, temperature))
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
        for a, b in zip(
            tape.gradient(ours, [teacher, student]),
            tape.gradient(ref, [teacher, student]),
        ):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_hint_loss_matches_numpy():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    s = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    expected = np.array([((s[i] - t[i]) ** 2).sum() / 18 for i in range(4)])
    np.testing.assert_allclose(np.asarray(losses.hint_loss(t, s)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(losses.hint_loss(t[:, 0, 0], s[:, 0, 0])),
        ((s[:, 0, 0] - t[:, 0, 0]) ** 2).mean(-1),
        rtol=1e-6,
    )
    weights = np.array([1.0, 0.0, 2.0, 0.0], "float32")
    np.testing.assert_allclose(
        float(losses.reduce_per_example(losses.hint_loss(t, s), weights)),
        (expected * weights).sum() / 4,
        rtol=1e-6,
    )
    loss = losses.HintLoss()
    np.testing.assert_allclose(float(loss(t, s)), expected.mean(), rtol=1e-6)
    assert isinstance(losses.HintLoss.from_config(loss.get_config()), losses.HintLoss)
    with pytest.raises(ValueError, match=r"teacher features of shape \(4, 3, 3, 2\)"):
        losses.hint_loss(t, s[..., :1])
