"""KerasHub causal language models as teacher and student (built from configs)."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH = 48, 12


def _gpt2(layers, width, name, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=layers,
        num_heads=2,
        hidden_dim=width,
        intermediate_dim=2 * width,
        max_sequence_length=LENGTH,
    )
    return keras_hub.models.GPT2CausalLM(
        backbone=backbone, preprocessor=None, name=name
    )


def _batch(seed=0, batch=16):
    """What a CausalLM preprocessor yields: `(x, y, sample_weight)`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, LENGTH + 1, (batch, 1))
    padding = np.arange(LENGTH)[None] < lengths
    ids = np.where(padding, rng.integers(1, VOCAB, (batch, LENGTH)), 0).astype("int32")
    x = {"token_ids": ids, "padding_mask": padding}
    y = np.concatenate([ids[:, 1:], np.zeros((batch, 1), "int32")], 1)
    weights = np.concatenate([padding[:, 1:], np.zeros((batch, 1), bool)], 1)
    return x, y, weights.astype("float32")


LOAD = """
import sys
import numpy as np
import keras
import keras_distill as kd
import keras_hub
loaded = keras.saving.load_model(sys.argv[1])
data = np.load(sys.argv[2])
x = {"token_ids": data["ids"], "padding_mask": data["padding"]}
print(loaded.evaluate(x, data["y"], sample_weight=data["w"], verbose=0,
                      return_dict=True)["loss"])
"""


def test_gpt2_causal_lms_distill_per_token_and_load_in_a_fresh_process(tmp_path):
    teacher, student = _gpt2(2, 32, "teacher", 0), _gpt2(1, 16, "student", 1)
    x, y, weights = _batch()
    # A trained teacher (its optimizer built), peaked enough to teach.
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss=teacher.loss)
    teacher.fit(x, y, sample_weight=weights, epochs=15, batch_size=16, verbose=0)
    distiller = kd.Distiller(
        student, teacher, temperature=1.0, distillation_loss="reverse_kl"
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    before = distiller.evaluate(
        x, y, sample_weight=weights, verbose=0, return_dict=True
    )
    history = distiller.fit(
        x, y, sample_weight=weights, epochs=6, batch_size=8, verbose=0
    ).history
    assert {"student_loss", "distillation_loss", "accuracy"} <= set(history)
    loss = distiller.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert loss["distillation_loss"] < 0.7 * before["distillation_loss"], (
        before,
        loss,
    )

    path, arrays = tmp_path / "lm.keras", tmp_path / "batch.npz"
    distiller.save(path)
    np.savez(arrays, ids=x["token_ids"], padding=x["padding_mask"], y=y, w=weights)
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), str(arrays)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded_loss = float(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(loaded_loss, loss["loss"], rtol=1e-5)


def test_a_padded_token_changes_no_gradient_of_a_gpt2_student():
    # Causal attention and the padding mask: the padded positions (at the
    # end) reach no real token, and their weight is 0.
    teacher, student = _gpt2(1, 16, "teacher", 0), _gpt2(1, 16, "student", 1)
    distiller = kd.Distiller(student, teacher, alpha=0.5, distillation_loss="jsd")
    x, y, weights = _batch(seed=3, batch=4)
    other = dict(x)
    rng = np.random.default_rng(9)
    other["token_ids"] = np.where(
        x["padding_mask"], x["token_ids"], rng.integers(1, VOCAB, y.shape)
    ).astype("int32")
    other_y = np.where(weights > 0, y, rng.integers(0, VOCAB, y.shape)).astype("int32")

    def gradients(inputs, labels):
        with tf.GradientTape() as tape:
            y_pred = distiller(inputs, training=False)
            report = distiller.compute_loss_report(inputs, labels, y_pred, weights)
        grads = tape.gradient(report.total, distiller.trainable_variables)
        return [tf.convert_to_tensor(g).numpy() for g in grads]

    for a, b in zip(gradients(x, y), gradients(other, other_y)):
        np.testing.assert_array_equal(a, b)
