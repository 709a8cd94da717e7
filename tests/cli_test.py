import json
import os

import pytest
import tensorflow as tf

from keras_distill.app import cli

QUICK = """\
data: digits
output: {out}
teacher: {{model: teacher_cnn, epochs: 1}}
student: {{model: student_mlp, hidden: 8}}
distill: {{epochs: 2}}
schedules:
  temperature: {{kind: linear, start: 8.0, end: 2.0, steps: 1}}
"""


def tensorboard_tags(folder):
    tags = set()
    for root, _, files in os.walk(folder):
        for name in files:
            if "tfevents" not in name:
                continue
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.mark.slow
def test_train_writes_a_complete_run_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(QUICK.format(out=out))
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 0
    for name in (
        "distiller.keras",
        "student.keras",
        "report.png",
        "summary.md",
        "run.json",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.png").stat().st_size > 20_000
    assert os.listdir(out / "serving") == ["1"]
    history = json.loads((out / "history.json").read_text())
    assert history["temperature"] == [8.0, 2.0]
    tags = tensorboard_tags(out / "tensorboard")
    assert {"epoch_distillation_loss", "epoch_temperature", "epoch_alpha"} <= tags, tags
    assert "| student (distilled) |" in (out / "summary.md").read_text()
    capsys.readouterr()
    # A second run of a finished run is refused unless --overwrite.
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out / "student.keras")]) == 0
    assert "accuracy" in capsys.readouterr().out
    # A distiller is reported beside its teacher, with the serving columns.
    assert cli.main(["evaluate", str(out / "distiller.keras"), "--int8"]) == 0
    printed = capsys.readouterr().out
    for text in ("| teacher |", "| student |", "| student, int8 TFLite |"):
        assert text in printed, printed
    assert "latency_p50_ms" in printed


@pytest.mark.slow
def test_train_with_a_curriculum_logs_and_plots_the_fraction(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        QUICK.format(out=out).replace("epochs: 2}", "epochs: 3}")
        + "curriculum: {pacing: linear, min_fraction: 0.5, epochs: 2}\nexport: false\n"
    )
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["curriculum_fraction"] == [0.5, 0.75, 1.0]
    examples = history["curriculum_examples"]
    assert examples[0] < examples[1] < examples[2]
    assert "epoch_curriculum_fraction" in tensorboard_tags(out / "tensorboard")
    assert (out / "report.png").stat().st_size > 20_000


def test_train_config_error_is_reported(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("output: x\ndistill: {alpah: 0.3}\n")
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2: unknown key 'alpah' in distill. Did you mean 'alpha'?" in err
    assert err.startswith("keras-distill: error: ") and err.count("\n") == 1


def test_missing_model_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output: {tmp_path / 'o'}\nteacher: {{model: nothere.keras}}\n")
    assert cli.main(["train", str(cfg)]) == 2
    assert "no such file 'nothere.keras'" in capsys.readouterr().err


def test_tune_refuses_keras_tuner_distributed_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(f"data: digits\noutput: {tmp_path / 'o'}\n")
    assert cli.main(["tune", str(cfg)]) == 2
    assert "call `kd.tune` from a script" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tune_writes_plot_table_and_best_model(tmp_path):
    out = tmp_path / "tune"
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(
        f"data: digits\noutput: {out}\nteacher: {{epochs: 1}}\n"
        "tune: {max_trials: 2, epochs: 1}\n"
    )
    assert cli.main(["tune", str(cfg)]) == 0
    assert not out.exists()  # `tune` has its own folder: <output>_tune
    out = tmp_path / "tune_tune"
    assert (out / "tuning.png").stat().st_size > 10_000
    table = (out / "tuning.md").read_text()
    assert table.count("\n| ") >= 3 and "temperature" in table
    assert (out / "best_distiller.keras").stat().st_size > 0
    assert json.loads((out / "run.json").read_text())["trials"] == 2


def _weights(path):
    import keras

    return [w.numpy() for w in keras.models.load_model(path).weights]


@pytest.mark.slow
def test_tune_distils_from_the_teacher_train_trained(tmp_path, capsys):
    out = tmp_path / "run"
    text = (
        f"data: digits\noutput: {out}\nteacher: {{epochs: 1}}\n"
        "distill: {epochs: 1}\nexport: false\n"
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text + "tune: {max_trials: 1, epochs: 1}\n")
    assert cli.main(["train", str(cfg)]) == 0
    # Another search (not another teacher): the same teacher is reused.
    cfg.write_text(text + "tune: {max_trials: 2, epochs: 1}\n")
    capsys.readouterr()
    assert cli.main(["tune", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "(the `train` run's)" in printed and "training the teacher" not in printed
    tuned = tmp_path / "run_tune" / "teacher.keras"
    for a, b in zip(_weights(out / "teacher.keras"), _weights(tuned), strict=True):
        assert (a == b).all()
    # Another teacher setting: that teacher is trained, not the run's reused.
    other = tmp_path / "other.yaml"
    other.write_text(
        text.replace("teacher: {epochs: 1}", "teacher: {epochs: 2}")
        + f"tune: {{max_trials: 1, epochs: 1, output: {tmp_path / 'other_tune'}}}\n"
    )
    capsys.readouterr()
    assert cli.main(["tune", str(other)]) == 0
    assert "training the teacher (2 epochs)" in capsys.readouterr().out
    # A second search of a finished one is refused, naming its folder and key.
    assert cli.main(["tune", str(other)]) == 2
    error = capsys.readouterr().err
    assert "other_tune" in error and "another `tune.output`" in error
