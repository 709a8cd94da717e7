"""The keras-distill workflow a user can trust: resume, safe overwrite, errors."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_distill.app import cli, run_folder, runs

CONFIG = """\
data: digits
output: {out}
seed: 3
teacher: {{model: teacher_cnn, epochs: 1}}
student: {{model: student_mlp, hidden: 8}}
distill: {{epochs: {epochs}}}
schedules:
  temperature: {{kind: linear, start: 8.0, end: 2.0, steps: {steps}}}
export: false
"""


def write_config(tmp_path, name, epochs=6, **kwargs):
    out = kwargs.pop("out", tmp_path / f"{name}_out")
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(out=out, epochs=epochs, steps=epochs - 1))
    return path, out


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")


def _command(*args):
    return [sys.executable, "-m", "keras_distill", *args]


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_to_the_uninterrupted_result(tmp_path):
    killed_cfg, killed_out = write_config(tmp_path, "killed")
    whole_cfg, whole_out = write_config(tmp_path, "whole")
    assert cli.main(["train", str(whole_cfg), "--verbose", "2"]) == 0
    proc = subprocess.Popen(
        _command("train", str(killed_cfg), "--verbose", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    seen, distilling = [], False
    for line in proc.stdout:
        seen.append(line)
        distilling = distilling or line.startswith("== distilling")
        if distilling and line.startswith("Epoch 4/6"):
            os.kill(proc.pid, signal.SIGKILL)  # in the middle of distillation
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert (killed_out / "teacher.keras").exists()
    rerun = subprocess.run(
        _command("train", str(killed_cfg), "--verbose", "2"),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming the run" in rerun.stdout
    assert "training the teacher" not in rerun.stdout  # the teacher is kept
    # The run's own scheduled temperature comes back: no warning about it.
    assert "Loading weights restored" not in rerun.stdout + rerun.stderr
    assert "Epoch 1/6" not in rerun.stdout and "Epoch 4/6" in rerun.stdout
    resumed = keras.models.load_model(killed_out / "student.keras").get_weights()
    whole = keras.models.load_model(whole_out / "student.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(resumed, whole))
    history = runs.read_history(killed_out / "history.csv")
    assert history["temperature"] == pytest.approx([8.0, 6.8, 5.6, 4.4, 3.2, 2.0])


def test_overwrite_never_deletes_what_the_tool_did_not_write(tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("\\documentclass{article}")
    cfg, _ = write_config(tmp_path, "c", out=out)
    assert cli.main(["train", str(cfg), "--overwrite"]) == 2
    assert "did not write (thesis.tex)" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "\\documentclass{article}"


@pytest.mark.parametrize("where", ["cwd", "home", "config"])
def test_refused_output_folders(tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "conf").mkdir()
    out = {"cwd": ".", "home": str(tmp_path / "home"), "config": str(tmp_path / "conf")}
    cfg = tmp_path / "conf" / "c.yaml"
    cfg.write_text(CONFIG.format(out=out[where], epochs=2, steps=1))
    assert cli.main(["train", str(cfg), "--overwrite"]) == 2
    assert "give it a folder of its own" in capsys.readouterr().err
    assert os.path.exists(cfg)


def test_a_bad_config_leaves_a_finished_run_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".keras-distill-run.json").write_text(
        '{"tool": "keras-distill", "command": "train", "config": "x", "finished": true}'
    )
    (out / "student.keras").write_text("a finished run's student")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output: {out}\nteacher: {{model: teahcer.keras}}\n")
    assert cli.main(["train", str(cfg), "--overwrite"]) == 2
    assert "no such file 'teahcer.keras'" in capsys.readouterr().err
    assert (out / "student.keras").read_text() == "a finished run's student"


def test_a_failed_run_leaves_no_empty_folder(tmp_path, monkeypatch):
    cfg, out = write_config(tmp_path, "c")

    def fail(*args, **kwargs):
        raise ValueError("simulated failure while loading data")

    monkeypatch.setattr(runs.data, "load", fail)
    assert cli.main(["train", str(cfg)]) == 2
    assert not out.exists()


def test_a_yaml_alias_bomb_fails_fast_without_echoing_it(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}] " + f"# {i}" for i in range(1, 9)]
    lines += ["output: *a8"]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    assert cli.main(["train", str(cfg)]) == 2
    assert time.perf_counter() - start < 1.0
    err = capsys.readouterr().err
    assert "anchors and aliases" in err and len(err) < 400


def test_an_oversized_config_is_refused(tmp_path, capsys):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("output: x\n" + "# padding\n" * 10_000)
    assert cli.main(["train", str(cfg)]) == 2
    assert "at most 64 KiB" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ("output: o\ndistill: {alpha: [1\n", r"{cfg}:\d+: not valid YAML"),
        (
            "output: o\ndata: digit\n",
            r"{cfg}:2: data must be .*Did you mean 'digits'\?",
        ),
        ("output: o\ndata: npz:missing.npz\n", r"{cfg}:2: data: no such \.npz file"),
        (
            "output: o\nschedules:\n  temperature: {kind: linear, start: 8.0, steps: 3}\n",
            r"a linear schedule needs start, end, steps; schedules.temperature has no end",
        ),
        (
            "output: o\nschedules:\n  alpha: {kind: constant}\n",
            r"a constant schedule needs value",
        ),
        (
            "output: o\nschedules:\n  alpha: {kind: cosin, start: 0.1, end: 0.5, steps: 2}\n",
            r"{cfg}:3: schedules.alpha.kind must be .*Did you mean 'cosine'\?",
        ),
        ("output: ''\n", r"{cfg}:1: output must name a folder"),
        (
            "output: o\n!!python/name:os.system : 1\n",
            r"{cfg}:2: keys must be plain names",
        ),
        (
            "output: o\nseed: 1\nseed: 2\n",
            r"{cfg}:3: the key 'seed' is given twice .*line 2",
        ),
        ("output: o\nstudent: {model: student_mpl}\n", r"Did you mean 'student_mlp'\?"),
    ],
)
def test_config_mistakes_end_in_one_line(tmp_path, capsys, text, message):
    import re

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-distill: error: ") and err.count("\n") == 1, err
    assert re.search(message.format(cfg=re.escape(str(cfg))), err), err
    assert "Traceback" not in err


def test_an_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output: {target}\n")
    assert cli.main(["train", str(cfg)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_help_and_argument_errors_do_not_import_tensorflow():
    code = (
        "import sys, keras_distill_cli\n"
        "try:\n    keras_distill_cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    keras_distill_cli.main(['trian'])\nexcept SystemExit as e:\n"
        "    assert e.code == 2\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "False False", result.stderr
    assert "keras-distill: error: argument command: invalid choice: 'trian'" in (
        result.stderr
    )


def test_train_with_weighted_terms_options_and_their_schedules(tmp_path):
    out = tmp_path / "terms_out"
    cfg = tmp_path / "terms.yaml"
    cfg.write_text(
        f"data: digits\noutput: {out}\nbatch_size: 256\n"
        "teacher: {model: teacher_cnn, epochs: 1}\n"
        "student: {model: student_mlp, hidden: 8}\n"
        "distill:\n  epochs: 2\n  loss:\n    - kd: {standardize: true}\n"
        "    - ctkd: {term: {dkd: {beta: 2.0}}}\n  loss_weights: [0.7, 0.3]\n"
        "schedules:\n  ctkd_weight: {kind: linear, start: 0.1, end: 0.3, steps: 1}\n"
        "  ctkd_reversal: {kind: linear, start: 0.0, end: 1.0, steps: 1}\n"
        "export: false\n"
    )
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 0
    history = runs.read_history(out / "history.csv")
    assert history["ctkd_weight"] == pytest.approx([0.1, 0.3])
    assert history["kd_weight"] == pytest.approx([0.7, 0.7])
    assert history["ctkd_reversal"] == pytest.approx([0.0, 1.0])
    # Each term is logged; the distillation loss is their weighted sum (the
    # per-epoch means are means of the per-batch sums, so it holds exactly).
    for epoch in range(2):
        mixed = 0.7 * history["kd_loss"][epoch] + (
            history["ctkd_weight"][epoch] * history["ctkd_loss"][epoch]
        )
        assert history["distillation_loss"][epoch] == pytest.approx(mixed, rel=1e-4)
    # CTKD's temperature: still its start after epoch 0 (no reversal), then
    # learned; the CSV log has it.
    temperatures = history["ctkd_temperature"]
    assert temperatures[0] == pytest.approx(1 + 20 / (1 + np.exp(-1.0)), rel=1e-5)
    assert temperatures[1] != pytest.approx(temperatures[0], rel=1e-5)
    distiller = keras.models.load_model(out / "distiller.keras")
    kd_term, ctkd_term = distiller.distillation_loss
    assert kd_term.standardize and ctkd_term.term.beta == 2.0
    assert ctkd_term.learned_temperature() == pytest.approx(temperatures[1], rel=1e-5)


def _fake_run(out, cfg_path):
    """A run's output folder as `train` leaves it, without training."""
    cfg = {"output": str(out), "_source": str(cfg_path), "data": "digits"}
    assert run_folder.prepare_output(str(out), cfg, "train") == "new"
    for name in (
        "student.keras",
        "tensorboard/train/events.out.tfevents.1.host",
        "tensorboard/validation/events.out.tfevents.1.host",
        "serving/1/saved_model.pb",
        "serving/1/variables/variables.index",
        "backup/latest.weights.h5",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("run")
    return cfg


@pytest.mark.parametrize("finished", [True, False])
def test_overwrite_keeps_user_files_inside_serving_and_tensorboard(tmp_path, finished):
    out = tmp_path / "out"
    cfg = _fake_run(out, tmp_path / "c.yaml")
    if finished:
        run_folder.finish(str(out))
    mine = [
        out / "serving" / "mine" / "notes.txt",
        out / "tensorboard" / "my_run" / "notes.txt",
        out / "tensorboard" / "train" / "notes.txt",
    ]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    assert run_folder.prepare_output(str(out), cfg, "train", overwrite=True) == "new"
    assert all(path.read_text() == "keep" for path in mine)
    assert not (out / "student.keras").exists()
    assert not (out / "serving" / "1").exists()
    assert not (out / "backup").exists()
    assert not (out / "tensorboard" / "validation").exists()
    assert os.listdir(out / "tensorboard" / "train") == ["notes.txt"]


def test_overwrite_of_a_finished_run_keeps_a_version_added_after_it(tmp_path):
    out = tmp_path / "out"
    cfg = _fake_run(out, tmp_path / "c.yaml")
    run_folder.finish(str(out))
    (out / "serving" / "7").mkdir()
    (out / "serving" / "7" / "saved_model.pb").write_text("a user's export")
    run_folder.prepare_output(str(out), cfg, "train", overwrite=True)
    assert (out / "serving" / "7" / "saved_model.pb").read_text() == "a user's export"
    assert not (out / "serving" / "1").exists()


@pytest.mark.parametrize("changed", ["data", "teacher"])
def test_a_killed_run_whose_files_changed_is_not_resumed(tmp_path, changed):
    rng = np.random.default_rng(0)
    npz, model = tmp_path / "d.npz", tmp_path / "t.keras"
    np.savez(npz, x_train=rng.normal(size=(8, 3)), y_train=np.arange(8) % 2)
    model.write_bytes(b"a teacher")
    out = tmp_path / "out"
    cfg = {
        "output": str(out),
        "_source": str(tmp_path / "c.yaml"),
        "data": f"npz:{npz}",
        "teacher": {"model": str(model)},
    }
    assert run_folder.prepare_output(str(out), cfg, "train") == "new"
    (out / "history.csv").write_text("epoch\n0\n")  # killed after an epoch
    assert run_folder.prepare_output(str(out), cfg, "train") == "resume"
    if changed == "data":
        np.savez(npz, x_train=rng.normal(size=(8, 3)), y_train=np.arange(8) % 3)
    else:
        model.write_bytes(b"another teacher")
    with pytest.raises(FileExistsError, match="changed since.*--overwrite"):
        run_folder.prepare_output(str(out), cfg, "train")
    assert run_folder.prepare_output(str(out), cfg, "train", overwrite=True) == "new"
    assert run_folder.prepare_output(str(out), cfg, "train") == "resume"


def test_a_run_killed_while_saving_the_distiller_leaves_no_half_written_file(
    tmp_path, monkeypatch
):
    # As a `kill -9` in the middle of `distiller.save`: the bytes written so
    # far stay, the process stops. `distiller.keras` must not be half a file.
    cfg, out = write_config(tmp_path, "save", epochs=1)
    save = keras.Model.save

    def killed_save(model, filepath, *args, **kwargs):
        if "distiller" in os.path.basename(str(filepath)):
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt
        return save(model, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", killed_save)
    assert cli.main(["train", str(cfg), "--verbose", "0"]) != 0
    assert (out / "teacher.keras").exists()
    assert not (out / "distiller.keras").exists()
