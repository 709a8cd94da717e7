"""The chunked per-token pass: closed forms, in-place gradients, masking."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill.distiller import chunked, tokens
from tests.tokens_test import VOCAB, _batch, _gradients, _lm


def _reference(kinds, teacher, student, labels, temperature):
    rows = {
        "forward_kl": lambda: kd.losses.kd_loss(
            teacher, student, temperature, closed_form_gradient=False
        ),
        "cross_entropy": lambda: keras.losses.sparse_categorical_crossentropy(
            labels, student, from_logits=True
        ),
    }
    return tf.stack([rows[kind]() for kind in kinds])


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize(
    "kinds",
    [
        ["forward_kl", "cross_entropy"],
        ["forward_kl"],
        ["cross_entropy"],
        ["cross_entropy", "forward_kl", "forward_kl"],
    ],
)
def test_closed_forms_give_the_values_and_gradients_of_the_formulas(kinds, temperature):
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(23, 17)).astype("float32") * 3
    student = tf.constant(rng.normal(size=(23, 17)) * 3, "float32")
    labels = tf.constant(rng.integers(0, 17, 23))
    weights = tf.constant(rng.random((len(kinds), 23)), "float32")

    @tf.function
    def run(closed):
        t = tf.constant(teacher)
        with tf.GradientTape() as tape:
            tape.watch(student)
            if closed:  # 23 tokens: 4 chunks of 5 and one of 3
                values = chunked.closed_form_values(
                    kinds, t, student, labels, temperature, 5
                )
            else:
                values = _reference(kinds, t, student, labels, temperature)
            loss = tf.reduce_sum(values * weights)
        return values, tape.gradient(loss, student)

    (values, gradient), (expected, expected_gradient) = run(True), run(False)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-6)


def test_the_teacher_logits_stay_intact_where_something_else_reads_them():
    # The gradient is written where the teacher's logits were only when
    # nothing else holds them; here the teacher is read after the pass.
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(12, 9)).astype("float32")
    student = tf.constant(rng.normal(size=(12, 9)), "float32")
    labels = tf.constant(rng.integers(0, 9, 12))
    source = tf.Variable(teacher)

    @tf.function
    def run():
        t = source * 2.0
        with tf.GradientTape() as tape:
            tape.watch(student)
            values = chunked.closed_form_values(
                ["forward_kl", "cross_entropy"], t, student, labels, 1.0, 4
            )
            general = chunked.chunked_values(
                [lambda a, b, y: kd.terms.make("reverse_kl").compute(a, b)],
                t,
                student,
                labels,
                4,
            )
            loss = tf.reduce_sum(values) + tf.reduce_sum(general)
        gradient = tape.gradient(loss, student)
        with tf.control_dependencies([gradient]):
            return tf.identity(t)

    np.testing.assert_array_equal(run(), teacher * 2.0)


def test_closed_forms_refuse_unknown_kinds_and_missing_labels():
    t = tf.zeros((3, 5))
    with pytest.raises(ValueError, match="reverse_kl"):
        chunked.closed_form_values(["reverse_kl"], t, t, None, 1.0, 2)
    with pytest.raises(ValueError, match="labels=None"):
        chunked.closed_form_values(["cross_entropy"], t, t, None, 1.0, 2)


def test_only_the_plain_kd_term_declares_the_forward_kl_closed_form():
    assert kd.terms.make("kd").closed_form == "forward_kl"
    assert kd.losses.KDTerm(standardize=True).closed_form is None
    assert kd.losses.KDTerm().for_learned_temperature().closed_form is None
    assert kd.losses.KDTerm(dtype="float16").closed_form is None

    class Scaled(kd.losses.KDTerm):
        def call(self, teacher, student, labels=None, temperature=None):
            return 2.0 * super().call(teacher, student, labels, temperature)

    assert Scaled().closed_form is None
    for name in ("reverse_kl", "jsd", "tvd", "mse", "dkd"):
        assert kd.terms.make(name).closed_form is None


def _chunk_everything(monkeypatch):
    monkeypatch.setattr(tokens, "CHUNK_VOCAB", 1)
    monkeypatch.setattr(tokens, "CHUNK_FLOATS", 4 * VOCAB)  # 4 tokens a chunk


@pytest.mark.parametrize("term", ["kd", "reverse_kl", "jsd", "skew_kl", "tvd"])
def test_chunked_passes_give_padded_tokens_no_gradient_bit_for_bit(term, monkeypatch):
    _chunk_everything(monkeypatch)
    calls = []
    for name in ("closed_form_values", "chunked_values"):
        original = getattr(tokens, name)
        monkeypatch.setattr(
            tokens,
            name,
            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k),
        )
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    distiller = kd.Distiller(student, teacher, alpha=0.3, distillation_loss=term)
    ids, labels, mask = _batch()
    report, reference = _gradients(distiller, ids, labels, mask)
    assert calls == ["closed_form_values" if term == "kd" else "chunked_values"]
    rng = np.random.default_rng(5)
    other_ids = np.where(mask > 0, ids, rng.integers(1, VOCAB, ids.shape))
    other_labels = np.where(mask > 0, labels, rng.integers(0, VOCAB, labels.shape))
    other, gradients = _gradients(distiller, other_ids, other_labels, mask)
    assert float(report.total) == float(other.total)
    for a, b in zip(reference, gradients):
        np.testing.assert_array_equal(tf.convert_to_tensor(a), tf.convert_to_tensor(b))


@pytest.mark.parametrize("term", ["kd", "jsd"])
def test_chunked_fit_steps_match_the_unchunked_ones(term, monkeypatch):
    ids, labels, mask = _batch()
    weights = []
    for chunk in (False, True):
        if chunk:
            _chunk_everything(monkeypatch)
        student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
        distiller = kd.Distiller(
            student, teacher, alpha=0.4, temperature=2.0, distillation_loss=term
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        distiller.fit(ids, labels, sample_weight=mask, epochs=2, verbose=0)
        weights.append(student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_general_pass_computes_a_declared_cross_entropy_in_closed_form():
    rng = np.random.default_rng(6)
    teacher = tf.constant(rng.normal(size=(23, 17)) * 3, "float32")
    student = tf.constant(rng.normal(size=(23, 17)) * 3, "float32")
    labels = tf.constant(rng.integers(0, 17, 23))
    weights = tf.constant(rng.random((2, 23)), "float32")
    reverse = kd.terms.make("reverse_kl")
    cross_entropy = tokens._SparseCrossEntropy(from_logits=True)
    assert cross_entropy.closed_form == "cross_entropy"
    assert tokens._SparseCrossEntropy(from_logits=False).closed_form is None
    results = []
    for chunk in (None, 5):
        with tf.GradientTape() as tape:
            tape.watch(student)
            functions = [lambda t, s, y: reverse.compute(t, s, y), cross_entropy]
            if chunk is None:
                values = tf.stack([f(teacher, student, labels) for f in functions])
            else:
                values = chunked.chunked_values(
                    functions, teacher, student, labels, chunk
                )
            loss = tf.reduce_sum(values * weights)
        results.append((values.numpy(), tape.gradient(loss, student).numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)
