"""Token-level distillation: sequence outputs, masks, reductions, vocabularies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd

VOCAB, LENGTH = 24, 9


def _lm(width, name, vocab=VOCAB, seed=0):
    """Token ids -> per-token logits, each position on its own."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(vocab, width)(ids)
    h = keras.layers.Dense(width, activation="tanh")(h)
    return keras.Model(ids, keras.layers.Dense(vocab)(h), name=name)


def _batch(seed=0, batch=6):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, LENGTH)).astype("int32")
    lengths = rng.integers(2, LENGTH, (batch, 1))
    mask = (np.arange(LENGTH)[None] < lengths).astype("float32")
    labels = rng.integers(0, VOCAB, (batch, LENGTH)).astype("int32")
    return ids, labels, mask


def _gradients(distiller, x, y, w):
    with tf.GradientTape() as tape:
        y_pred = distiller(x, training=True)
        report = distiller.compute_loss_report(x, y, y_pred, w)
    return report, tape.gradient(report.total, distiller.trainable_variables)


@pytest.mark.parametrize("term", ["kd", "reverse_kl", "jsd", "tvd", "dkd"])
def test_padded_tokens_change_no_gradient_bit_for_bit(term):
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    distiller = kd.Distiller(student, teacher, alpha=0.3, distillation_loss=term)
    ids, labels, mask = _batch()
    report, reference = _gradients(distiller, ids, labels, mask)
    # Other tokens and labels wherever the mask is 0: teacher and student see
    # other inputs there, and the labels differ.
    rng = np.random.default_rng(5)
    other_ids = np.where(mask > 0, ids, rng.integers(1, VOCAB, ids.shape))
    other_labels = np.where(mask > 0, labels, rng.integers(0, VOCAB, labels.shape))
    assert (other_ids != ids).any() and (other_labels != labels).any()
    other, gradients = _gradients(distiller, other_ids, other_labels, mask)
    assert float(report.total) == float(other.total)
    for a, b in zip(reference, gradients):
        np.testing.assert_array_equal(tf.convert_to_tensor(a), tf.convert_to_tensor(b))


def test_the_reductions_match_numpy_token_and_sequence_means():
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    ids, labels, mask = _batch(seed=2)
    per_token = np.asarray(
        kd.losses.kd_loss(teacher(ids), student(ids), temperature=2.0)
    )
    ce = np.asarray(
        keras.losses.sparse_categorical_crossentropy(
            labels, student(ids), from_logits=True
        )
    )
    for reduction in ("tokens", "sequences"):
        distiller = kd.Distiller(
            student, teacher, temperature=2.0, token_reduction=reduction
        )
        report = distiller.compute_loss_report(ids, labels, student(ids), mask)
        if reduction == "tokens":
            kd_expected = (per_token * mask).sum() / mask.sum()
            ce_expected = (ce * mask).sum() / mask.sum()
        else:
            kd_expected = np.mean((per_token * mask).sum(1) / mask.sum(1))
            ce_expected = np.mean((ce * mask).sum(1) / mask.sum(1))
        np.testing.assert_allclose(
            float(report.distillation_loss), kd_expected, rtol=1e-5
        )
        np.testing.assert_allclose(float(report.student_loss), ce_expected, rtol=1e-5)


def test_an_all_padding_batch_gives_zero_loss_not_nan():
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    ids, labels, mask = _batch()
    for reduction in ("tokens", "sequences"):
        distiller = kd.Distiller(student, teacher, token_reduction=reduction)
        report, gradients = _gradients(distiller, ids, labels, np.zeros_like(mask))
        assert float(report.total) == 0.0
        assert all(np.all(tf.convert_to_tensor(g) == 0) for g in gradients)


def test_fit_masks_with_sample_weight_or_padding_mask_and_logs_kd_metrics():
    ids, labels, mask = _batch(batch=32)

    def lm_with_mask(width, name, seed):
        keras.utils.set_random_seed(seed)
        token_ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
        padding = keras.Input((LENGTH,), dtype="int32", name="padding_mask")
        h = keras.layers.Embedding(VOCAB, width)(token_ids)
        h = h * keras.ops.expand_dims(keras.ops.cast(padding, "float32"), -1)
        logits = keras.layers.Dense(VOCAB)(keras.layers.Dense(width, "tanh")(h))
        return keras.Model({"token_ids": token_ids, "padding_mask": padding}, logits)

    x = {"token_ids": ids, "padding_mask": mask.astype("int32")}
    histories = {}
    for given in ("sample_weight", "padding_mask"):
        distiller = kd.Distiller(
            lm_with_mask(6, "student", 0), lm_with_mask(12, "teacher", 1)
        )
        distiller.compile(optimizer="adam", metrics=["accuracy"])
        weights = mask if given == "sample_weight" else None
        histories[given] = distiller.fit(
            x, labels, sample_weight=weights, epochs=2, batch_size=8, verbose=0
        ).history
    assert set(histories["padding_mask"]) >= {
        "loss",
        "student_loss",
        "distillation_loss",
    }
    # The padding mask alone masks the loss exactly as the same sample weights.
    np.testing.assert_allclose(
        histories["padding_mask"]["loss"], histories["sample_weight"]["loss"], rtol=1e-5
    )


def test_one_weight_per_sequence_weights_each_of_its_tokens():
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    ids, labels, _ = _batch()
    distiller = kd.Distiller(student, teacher)
    per_sequence = np.array([1, 0, 1, 1, 0, 2], "float32")
    weights = distiller.check_batch(ids, labels, per_sequence, "x")[2]
    report = distiller.compute_loss_report(ids, labels, student(ids), weights)
    tokens = np.repeat(per_sequence[:, None], LENGTH, 1)
    expected = distiller.compute_loss_report(ids, labels, student(ids), tokens)
    np.testing.assert_allclose(float(report.total), float(expected.total), rtol=1e-6)


def test_vocabularies_that_differ_are_refused_with_both_sizes_unless_truncated():
    student, teacher = _lm(6, "student"), _lm(12, "teacher", vocab=VOCAB + 8, seed=1)
    ids, labels, mask = _batch()
    # Refused at construction, before any training.
    with pytest.raises(ValueError, match=rf"teacher predicts {VOCAB + 8}.*{VOCAB}"):
        kd.Distiller(student, teacher)
    truncated = kd.Distiller(student, teacher, teacher_vocabulary="truncate")
    report = truncated.compute_loss_report(ids, labels, student(ids), mask)
    first = keras.ops.convert_to_numpy(teacher(ids))[..., :VOCAB]
    per_token = np.asarray(kd.losses.kd_loss(first, student(ids), 4.0))
    np.testing.assert_allclose(
        float(report.distillation_loss),
        (per_token * mask).sum() / mask.sum(),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="teacher_vocabulary"):
        kd.Distiller(student, teacher, teacher_vocabulary="first")
    with pytest.raises(ValueError, match="token_reduction"):
        kd.Distiller(student, teacher, token_reduction="mean")


def test_shapes_that_do_not_match_the_tokens_are_refused_naming_them():
    ids, labels, mask = _batch()
    student = _lm(6, "student")
    # A mask of the wrong length.
    distiller = kd.Distiller(student, _lm(12, "teacher", seed=1))
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"one weight per token.*\(None, 5\)"):
        distiller.fit(ids, labels, sample_weight=mask[:, :5], verbose=0)
    # A teacher with one distribution per example, a student with one per token.
    flat_teacher = keras.Sequential(
        [keras.Input((LENGTH,)), keras.layers.Dense(VOCAB)], name="flat"
    )
    with pytest.raises(ValueError, match=r"same rank.*\(None, 24\).*\(None, 9, 24\)"):
        kd.Distiller(student, flat_teacher)
    # Labels outside the vocabulary.
    distiller = kd.Distiller(student, _lm(12, "teacher", seed=1))
    distiller.compile(optimizer="adam")
    bad = labels.copy()
    bad[0, 0] = VOCAB + 3
    with pytest.raises(ValueError, match=str(VOCAB + 3)):
        distiller.fit(ids, bad, sample_weight=mask, verbose=0)
    # One-hot labels, and labels of another length.
    with pytest.raises(ValueError, match="look one-hot"):
        distiller.fit(ids, keras.utils.to_categorical(labels, VOCAB), verbose=0)
    with pytest.raises(ValueError, match=r"one token id per position.*\(None, 10\)"):
        distiller.fit(ids, np.zeros((6, LENGTH + 1), "int32"), verbose=0)
    # A relational term.
    distiller = kd.Distiller(
        student, _lm(12, "teacher", seed=1), distillation_loss="dist"
    )
    with pytest.raises(ValueError, match="relational"):
        distiller.compute_loss_report(ids, labels, student(ids), mask)


def test_a_distiller_of_sequence_models_saves_and_loads(tmp_path):
    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    ids, labels, mask = _batch()
    distiller = kd.Distiller(
        student, teacher, distillation_loss="jsd", token_reduction="sequences"
    )
    distiller.compile(optimizer="adam")
    distiller.fit(ids, labels, sample_weight=mask, epochs=1, verbose=0)
    path = tmp_path / "lm.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.token_reduction == "sequences"
    before = distiller.evaluate(ids, labels, sample_weight=mask, verbose=0)
    after = loaded.evaluate(ids, labels, sample_weight=mask, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5)


@pytest.mark.parametrize("name", ["kd", "reverse_kl", "jsd", "dkd", "mse"])
def test_chunked_terms_give_the_same_values_and_gradients(name):
    from keras_distill.distiller import tokens

    rng = np.random.default_rng(4)
    teacher = tf.constant(rng.normal(size=(23, 17)) * 3, "float32")
    student = tf.Variable(rng.normal(size=(23, 17)) * 3, dtype="float32")
    labels = tf.constant(rng.integers(0, 17, 23))
    term = kd.terms.make(name)
    weights = tf.constant(rng.random(23), "float32")
    results = []
    for chunk in (None, 5):  # 23 tokens: 4 chunks of 5 and one of 3
        with tf.GradientTape() as tape:
            if chunk is None:
                values = term.compute(teacher, student, labels, 2.0)
            else:
                values = tokens.chunked_values(
                    [lambda t, s, y: term.compute(t, s, y, 2.0)],
                    teacher,
                    student,
                    labels,
                    chunk,
                )[0]
            loss = tf.reduce_sum(values * weights)
        results.append((values.numpy(), tape.gradient(loss, student).numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=1e-7)


def test_large_vocabularies_are_chunked_inside_fit_with_the_same_loss(monkeypatch):
    from keras_distill.distiller import tokens

    student, teacher = _lm(6, "student"), _lm(12, "teacher", seed=1)
    ids, labels, mask = _batch()
    distiller = kd.Distiller(student, teacher, distillation_loss=["kd", "jsd"])
    plain = distiller.compute_loss_report(ids, labels, student(ids), mask)
    monkeypatch.setattr(tokens, "CHUNK_VOCAB", 1)
    monkeypatch.setattr(tokens, "CHUNK_FLOATS", 5 * VOCAB)  # 5 tokens a chunk
    calls = []
    original = tokens.chunked_values
    monkeypatch.setattr(
        tokens,
        "chunked_values",
        lambda *a, **k: calls.append(a[-1]) or original(*a, **k),
    )
    chunked = distiller.compute_loss_report(ids, labels, student(ids), mask)
    assert calls == [5]  # both terms and the cross-entropy in one pass
    np.testing.assert_allclose(float(chunked.total), float(plain.total), rtol=1e-5)
