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


def _reference_kd(t, s, temperature):
    log_p = tf.nn.log_softmax(t / temperature)
    log_q = tf.nn.log_softmax(s / temperature)
    return temperature**2 * tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)


@pytest.mark.parametrize("mean", [False, True])
def test_kd_closed_form_gradients_match_autodiff(mean):
    # kd_loss and its fused mean kd_mean_loss have closed-form gradients;
    # compare with autodiff of the formula (weighted sum, or 3 * mean).
    rng = np.random.default_rng(3)
    teacher = tf.Variable(rng.normal(size=(6, 5)) * 3, dtype="float32")
    student = tf.Variable(rng.normal(size=(6, 5)) * 3, dtype="float32")
    weights = tf.constant(rng.random(6), "float32")

    def reduce(values):
        return 3.0 * tf.reduce_mean(values) if mean else tf.reduce_sum(weights * values)

    for temperature in (0.5, 1.0, 4.0):
        with tf.GradientTape(persistent=True) as tape:
            if mean:
                ours = 3.0 * losses.kd_mean_loss(teacher, student, temperature)
            else:
                ours = reduce(losses.kd_loss(teacher, student, temperature))
            ref = reduce(_reference_kd(teacher, student, temperature))
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
        for a, b in zip(
            tape.gradient(ours, [teacher, student]),
            tape.gradient(ref, [teacher, student]),
        ):
            np.testing.assert_allclose(a, b, atol=1e-6)
    if mean:  # bit for bit the mean of `kd_loss` (what the distiller logged)
        assert float(losses.kd_mean_loss(teacher, student, 2.0)) == float(
            tf.reduce_mean(losses.kd_loss(teacher, student, 2.0))
        )


def test_kd_term_reduced_takes_the_fused_mean_only_where_it_is_the_same():
    rng = np.random.default_rng(6)
    t = tf.constant(rng.normal(size=(8, 4)), "float32")
    s = tf.constant(rng.normal(size=(8, 4)), "float32")
    w = tf.constant(rng.random(8), "float32")
    for term in (losses.KDTerm(), losses.KDTerm(standardize=True)):
        for weights in (None, w):
            expected = losses.reduce_per_example(term.compute(t, s, None, 2.0), weights)
            np.testing.assert_allclose(
                term.reduced(t, s, None, 2.0, weights), expected, rtol=1e-6
            )

    # A subclass with its own `call` is called, not bypassed by the fused mean.
    class Halved(losses.KDTerm):
        def call(self, teacher, student, labels=None, temperature=None):
            return 0.5 * super().call(teacher, student, labels, temperature)

    np.testing.assert_allclose(
        Halved().reduced(t, s, None, 2.0),
        0.5 * losses.KDTerm().reduced(t, s, None, 2.0),
        rtol=1e-6,
    )


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


# -- Terms: independent NumPy versions of the papers' formulas -------------------


def numpy_kd(t, s, temperature):
    pt, ps = softmax(t / temperature), softmax(s / temperature)
    return temperature**2 * kl(pt, ps)


def numpy_standardize(z):
    # Sun et al. 2024, eq. 7: (z - mean) / std, population std, + their 1e-7.
    z = z.astype("float64")
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, keepdims=True) + 1e-7)


def huber(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def numpy_rkd_distance(t, s):
    def psi(x):
        x = x.reshape(len(x), -1).astype("float64")
        b = len(x)
        d = np.array(
            [[np.linalg.norm(x[i] - x[j]) for j in range(b)] for i in range(b)]
        )
        return d / d[~np.eye(b, dtype=bool)].mean()

    return huber(psi(s) - psi(t)).mean(axis=1)


def numpy_rkd_angle(t, s):
    def psi(x):
        x = x.reshape(len(x), -1).astype("float64")
        b = len(x)
        a = np.zeros((b, b, b))
        for j in range(b):
            for i in range(b):
                for k in range(b):
                    if i == j or k == j:
                        continue
                    e_ij = (x[i] - x[j]) / np.linalg.norm(x[i] - x[j])
                    e_kj = (x[k] - x[j]) / np.linalg.norm(x[k] - x[j])
                    a[j, i, k] = e_ij @ e_kj
        return a

    return huber(psi(s) - psi(t)).reshape(len(t), -1).mean(axis=1)


def numpy_pkt(t, s):
    def conditional(x):
        x = x.reshape(len(x), -1).astype("float64")
        b = len(x)
        k = np.array(
            [
                [
                    0.5
                    * (x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) + 1)
                    for j in range(b)
                ]
                for i in range(b)
            ]
        )
        p = np.zeros((b, b))
        for i in range(b):
            others = [j for j in range(b) if j != i]
            p[i, others] = k[i, others] / k[i, others].sum()
        return p

    p, q = conditional(t), conditional(s)
    off = ~np.eye(len(t), dtype=bool)
    return np.array(
        [
            np.sum(p[i][off[i]] * np.log(p[i][off[i]] / q[i][off[i]]))
            for i in range(len(t))
        ]
    )


def numpy_sp(t, s):
    def g(x):
        q = x.reshape(len(x), -1).astype("float64")
        gram = q @ q.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    b = len(t)
    total = np.sum((g(t) - g(s)) ** 2) / b**2
    return total, ((g(t) - g(s)) ** 2).sum(axis=1) / b


def numpy_at(t, s):
    def q(x):
        energy = (np.abs(x.astype("float64")) ** 2).sum(axis=-1).reshape(len(x), -1)
        return energy / np.linalg.norm(energy, axis=1, keepdims=True)

    return np.linalg.norm(q(s) - q(t), axis=1)


def features(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_logit_standardization_composes_with_kd_and_dkd():
    t, s = random_logits(seed=11), random_logits(seed=12, scale=0.5)
    np.testing.assert_allclose(
        np.asarray(losses.standardize_logits(t)), numpy_standardize(t), atol=1e-5
    )
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    zt, zs = numpy_standardize(t), numpy_standardize(s)
    for term, expected in (
        (losses.KDTerm(standardize=True), numpy_kd(zt, zs, 2.0)),
        (
            losses.DKDTerm(beta=2.0, standardize=True),
            numpy_dkd(zt, zs, y, 2.0, 1.0, 2.0),
        ),
        (losses.KDTerm(), numpy_kd(t, s, 2.0)),
    ):
        got = term.compute(t, s, y, 2.0)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6)
    # With CTKD: the standardized KD term at the learned temperature.
    ctkd = losses.CTKDTerm(losses.KDTerm(standardize=True))
    np.testing.assert_allclose(
        np.asarray(ctkd.compute(t, s, None, 2.0)),
        numpy_kd(zt, zs, 1 + 20 / (1 + np.exp(-1.0))),
        rtol=1e-4,
        atol=1e-6,
    )
    # Standardized logits ignore the scale and shift of the student's logits.
    a = losses.KDTerm(standardize=True).compute(t, s, None, 2.0)
    b = losses.KDTerm(standardize=True).compute(t, 7.0 * s + 3.0, None, 2.0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4)


def test_feature_distances_match_numpy():
    t, s = features((4, 3, 3, 2), 1), features((4, 3, 3, 2), 2)
    ft, fs = t.reshape(4, -1), s.reshape(4, -1)
    cos = (ft * fs).sum(1) / np.linalg.norm(ft, axis=1) / np.linalg.norm(fs, axis=1)
    for distance, expected in (
        ("mse", ((fs - ft) ** 2).mean(1)),
        ("mae", np.abs(fs - ft).mean(1)),
        ("cosine", 1 - cos),
    ):
        got = losses.FeatureDistanceTerm(distance).compute(t, s)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"distance='l3'"):
        losses.FeatureDistanceTerm("l3")


def test_relational_terms_match_the_papers_formulas():
    t, s = features((6, 5), 3), features((6, 3), 4)  # different widths
    for function, reference in (
        (losses.rkd_distance_loss, numpy_rkd_distance),
        (losses.rkd_angle_loss, numpy_rkd_angle),
        (losses.pkt_loss, numpy_pkt),
    ):
        np.testing.assert_allclose(
            np.asarray(function(t, s)), reference(t, s), rtol=1e-4, atol=1e-6
        )
    total, per_example = numpy_sp(t, s)
    got = np.asarray(losses.similarity_preserving_loss(t, s))
    np.testing.assert_allclose(got, per_example, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.mean(), total, rtol=1e-4)
    # Relational terms are zero when the student reproduces the teacher's
    # structure, whatever its width: a scaled rotation of the features.
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))[0]
    same = 3.0 * t @ rotation.astype("float32")
    for function in (losses.rkd_distance_loss, losses.rkd_angle_loss, losses.pkt_loss):
        assert float(np.max(np.abs(function(t, same)))) < 1e-4


def test_attention_transfer_matches_numpy_and_needs_the_same_spatial_size():
    t, s = features((3, 4, 4, 5), 5), features((3, 4, 4, 2), 6)
    np.testing.assert_allclose(
        np.asarray(losses.AttentionTransferTerm().compute(t, s)),
        numpy_at(t, s),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match=r"same spatial size.*\(3, 2, 2, 2\)"):
        losses.attention_transfer_loss(t, s[:, :2, :2])


def test_ctkd_reverses_the_temperatures_gradient():
    t, s = random_logits(seed=7), random_logits(seed=8)
    term = losses.CTKDTerm("kd")
    term.reversal.assign(0.5)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(term.compute(t, s))

    def reference(theta):  # NumPy: KD at T = 1 + 20 * sigmoid(theta)
        return numpy_kd(t.astype("float64"), s, 1 + 20 / (1 + np.exp(-theta))).mean()

    np.testing.assert_allclose(float(value), reference(1.0), rtol=1e-4)
    assert term.learned_temperature() == pytest.approx(1 + 20 / (1 + np.exp(-1.0)))
    numeric = (reference(1.0 + 1e-4) - reference(1.0 - 1e-4)) / 2e-4
    assert abs(numeric) > 1e-4  # the test can fail: the gradient is not 0
    (gradient,) = tape.gradient(value, [term.theta])
    np.testing.assert_allclose(float(gradient), -0.5 * numeric, rtol=1e-3)
    restored = losses.CTKDTerm.from_config(term.get_config())
    assert isinstance(restored.term, losses.KDTerm) and restored.t_end == 20.0


def test_unknown_term_names_suggest_the_closest():
    with pytest.raises(ValueError, match=r"distillation_loss='kdd'.*Did you mean 'kd'"):
        losses.get_term("kdd")
    with pytest.raises(ValueError, match=r"loss='cosin'.*Did you mean 'cosine'"):
        kd.hints.Hint("a", "b", loss="cosin")
    with pytest.raises(ValueError, match=r"not the class.*pass KDTerm\(\)"):
        losses.get_term(losses.KDTerm)
    with pytest.raises(ValueError, match=r"KLDivergence\(\).*distillation_loss='kd'"):
        losses.get_term(keras.losses.KLDivergence())


def test_sparse_ce_mean_loss_matches_keras_value_and_gradient():
    rng = np.random.default_rng(7)
    logits = tf.Variable(rng.normal(size=(9, 4)) * 2, dtype="float32")
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for labels in (
        rng.integers(0, 4, 9),
        rng.integers(0, 4, (9, 1)).astype("int32"),
    ):
        with tf.GradientTape(persistent=True) as tape:
            ours = 2.0 * losses.sparse_ce_mean_loss(tf.constant(labels), logits)
            ref = 2.0 * keras_loss(labels, logits)
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
        np.testing.assert_allclose(
            tape.gradient(ours, logits), tape.gradient(ref, logits), atol=1e-7
        )


def test_kd_term_reduced_refuses_logits_that_compute_refuses():
    # The fused mean is for (batch, classes) logits only. Other shapes are
    # refused by `compute` ("one value per example"); the fused mean would
    # average them silently, with a gradient scaled for the batch alone.
    rng = np.random.default_rng(8)
    sequence = tf.constant(rng.normal(size=(4, 3, 5)), "float32")
    flat = tf.constant(rng.normal(size=(4, 5)), "float32")
    for t, s in ((sequence, sequence), (sequence[:, :1], flat), (flat[0], flat[0])):
        with pytest.raises(ValueError, match="one value per example"):
            losses.KDTerm().reduced(t, s, None, 2.0)


def test_kd_term_reduced_uses_an_overridden_compute_and_the_dtype_policy():
    rng = np.random.default_rng(9)
    t = tf.constant(rng.normal(size=(8, 4)) * 3, "float32")
    s = tf.constant(rng.normal(size=(8, 4)) * 3, "float32")

    class Doubled(losses.KDTerm):
        def compute(self, teacher, student, labels=None, temperature=1.0):
            return 2.0 * super().compute(teacher, student, labels, temperature)

    np.testing.assert_allclose(
        Doubled().reduced(t, s, None, 2.0),
        2.0 * losses.KDTerm().reduced(t, s, None, 2.0),
        rtol=1e-6,
    )
    # A term computing in float16 (its layer casts the inputs) is the mean
    # of what it computes, not of the float32 term.
    half = losses.KDTerm(dtype="mixed_float16")
    assert float(half.reduced(t, s, None, 2.0)) == float(
        losses.reduce_per_example(half.compute(t, s, None, 2.0))
    )
