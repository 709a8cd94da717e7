"""Issue 29, the application's part: no data lost on a kill, no hang, no silence.

Each test fails on the code before the fix: a backup written in place, a
search that restarted, `--overwrite` deleting a user's file in `backup/`,
schedules checked by walking every epoch, a curriculum callback that logged
fractions of data it never fed, an untrained teacher accepted, a memo keyed
on `id()`, labels outside the student's classes found only by a missing
checkpoint, and a broken `.keras` file called "not found".
"""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import models
from keras_distill.app import cli, run_folder, runs
from keras_distill.app import config as kd_config
from keras_distill.callbacks import AtomicBackupAndRestore
from tests.helpers import digits, trained_teacher


class Killed(BaseException):
    """Stands for `kill -9` in process: nothing catches it."""


@contextlib.contextmanager
def within(seconds):
    """Fails (instead of hanging) when the block runs longer than `seconds`."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")


def _write(tmp_path, text, name="c"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(out=tmp_path / f"{name}_out"))
    return path, tmp_path / f"{name}_out"


TRAIN = """\
data: digits
output: {out}
seed: 1
teacher: {{model: teacher_cnn, epochs: 1}}
student: {{model: student_mlp, hidden: 8}}
distill: {{epochs: 3}}
export: false
"""

TUNE = """\
data: digits
output: {out}
seed: 0
teacher: {{model: teacher_cnn, epochs: 1}}
student: {{model: student_mlp, hidden: 8}}
tune: {{max_trials: 3, epochs: 1}}
export: false
"""


def _tiny_model(width=8, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width)])
    model.add(keras.layers.Dense(1))
    model.compile(optimizer="adam", loss="mse")
    return model


class StartedAt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "epoch"):
            self.epoch = epoch


# -- Data loss 1: the backup of `train` is written atomically ------------------


def _half_written_save_weights(monkeypatch, crash_on_call):
    """`save_weights` that, at call `crash_on_call`, leaves half a file and dies."""
    original = keras.Model.save_weights
    calls = {"n": 0}

    def save_weights(self, filepath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] != crash_on_call:
            return original(self, filepath, *args, **kwargs)
        whole = str(filepath) + ".whole.weights.h5"
        original(self, whole, *args, **kwargs)
        with open(whole, "rb") as f:
            data = f.read()
        os.remove(whole)
        with open(filepath, "wb") as f:
            f.write(data[: len(data) // 2])  # killed in the middle of the write
        raise Killed()

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)


def test_a_crash_while_saving_the_backup_leaves_the_previous_one_loadable(
    tmp_path, monkeypatch
):
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    backup = tmp_path / "backup"
    model = _tiny_model()
    model.fit(
        x, y, epochs=2, verbose=0, callbacks=[AtomicBackupAndRestore(backup, False)]
    )
    after_two = model.get_weights()
    _half_written_save_weights(monkeypatch, crash_on_call=1)
    with pytest.raises(Killed):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[AtomicBackupAndRestore(backup)])
    monkeypatch.undo()
    assert (backup / "partial.weights.h5").exists()  # the half-written file
    fresh, started = _tiny_model(seed=5), StartedAt()
    fresh.fit(
        x, y, epochs=2, verbose=0, callbacks=[AtomicBackupAndRestore(backup), started]
    )
    assert not hasattr(started, "epoch")  # 2 epochs were done: nothing to run
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), after_two))


def test_a_damaged_newest_backup_is_skipped_with_a_warning(tmp_path):
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    backup = tmp_path / "backup"
    _tiny_model().fit(
        x, y, epochs=3, verbose=0, callbacks=[AtomicBackupAndRestore(backup, False)]
    )
    newest = backup / "epoch-000000003.weights.h5"
    assert sorted(os.listdir(backup)) == [
        "epoch-000000002.weights.h5",
        newest.name,
    ]  # the previous one is kept, older ones removed
    newest.write_bytes(newest.read_bytes()[:100])  # damaged on disk
    (backup / "mine.txt").write_text("a user's note")
    started = StartedAt()
    callbacks = [AtomicBackupAndRestore(backup), started]
    with pytest.warns(
        UserWarning, match="(?s)epoch-000000003.*resuming from epoch-0+2"
    ):
        _tiny_model(seed=5).fit(x, y, epochs=4, verbose=0, callbacks=callbacks)
    assert started.epoch == 2
    # At the end, its own files go; a user's file (and so the folder) stays.
    assert os.listdir(backup) == ["mine.txt"]


def test_train_killed_while_writing_its_backup_resumes(tmp_path, monkeypatch, capsys):
    cfg, out = _write(tmp_path, TRAIN)
    _half_written_save_weights(monkeypatch, crash_on_call=2)  # epoch 2's backup
    with pytest.raises(Killed):
        runs.train(str(cfg), verbose=0)
    monkeypatch.undo()
    capsys.readouterr()
    # Before the fix: "Unable to synchronously open file (truncated file)".
    assert cli.main(["train", str(cfg), "--verbose", "0"]) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "resuming the run" in printed and "training the teacher" not in printed
    assert len(runs.read_history(out / "history.csv")["loss"]) == 3
    assert not (out / "backup").exists()  # removed at the end, being empty


KILLED_SCRIPT = """
import sys
import keras, numpy as np
from keras_distill.callbacks import AtomicBackupAndRestore

class Report(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        print("epoch", epoch, flush=True)

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1500),
                          keras.layers.Dense(1500), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
x, y = np.ones((4, 64), "float32"), np.zeros((4, 1), "float32")
model.fit(x, y, epochs=int(sys.argv[2]), verbose=0,
          callbacks=[Report(), AtomicBackupAndRestore(sys.argv[1])])
print("done", flush=True)
"""


@pytest.mark.slow
def test_repeated_kill_9_at_random_points_never_breaks_the_backup(tmp_path):
    # Two ~9 MB layers (and Adam's state) on 4 examples: an epoch is mostly
    # the write of its backup, so random kills land inside writes.
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    backup, epochs = tmp_path / "backup", 10_000
    rng = random.Random(0)
    command = [sys.executable, str(script), str(backup), str(epochs)]
    first_epochs = []
    partial = 0
    for _ in range(5):  # the last run checks what the fourth kill left
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
        )
        line = proc.stdout.readline().decode()  # training started (or failed)
        first_epochs.append(line)
        proc.stdout.readline()  # one backup written in this run: it progresses
        time.sleep(rng.uniform(0.0, 0.6))  # then a kill at a random point
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert line.startswith("epoch"), err.decode()[-2000:]
        partial += (backup / "partial.weights.h5").exists()
    started = [int(line.split()[1]) for line in first_epochs]
    print(f"{partial} of 5 kills left a half-written backup; started at {started}")
    assert started == sorted(set(started)) and started[0] == 0  # each resumed
    names = os.listdir(backup)
    assert all(AtomicBackupAndRestore.is_own_file(n) for n in names), names


# -- Data loss 2 and 3: `tune` resumes -----------------------------------------


def _trial_scores(out):
    project = out / "tuner" / run_folder.TUNER_PROJECT
    scores = {}
    for name in sorted(os.listdir(project)):
        if name.startswith("trial_"):
            with open(project / name / "trial.json") as f:
                trial = json.load(f)
            scores[name] = (trial["status"], trial["score"])
    return scores


def _interrupt_fit(monkeypatch, on_call, error):
    original = keras.Model.fit
    calls = {"n": 0}

    def fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Killed])
def test_tune_stopped_in_its_second_trial_resumes_with_its_teacher_and_trial(
    tmp_path, monkeypatch, capsys, stop
):
    cfg, _ = _write(tmp_path, TUNE)
    out = tmp_path / "c_out_tune"
    _interrupt_fit(monkeypatch, on_call=3, error=stop())  # teacher, trial 0, stop
    if stop is KeyboardInterrupt:
        assert cli.main(["tune", str(cfg)]) == 130
        assert "rerun the same command to resume" in capsys.readouterr().err
    else:
        with pytest.raises(Killed):
            cli.main(["tune", str(cfg)])
    monkeypatch.undo()
    teacher = (out / "teacher.keras").read_bytes()
    finished = _trial_scores(out)["trial_0"]
    assert finished[0] == "COMPLETED"
    capsys.readouterr()
    assert cli.main(["tune", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "resuming the search" in printed
    assert "training the teacher" not in printed
    assert (out / "teacher.keras").read_bytes() == teacher
    scores = _trial_scores(out)
    assert scores["trial_0"] == finished  # kept, not trained again
    assert len(scores) == 3 and all(s[0] == "COMPLETED" for s in scores.values())
    with open(out / "run.json") as f:
        assert json.load(f)["trials"] == 3


@pytest.mark.slow
def test_tune_killed_by_sigkill_keeps_its_finished_trials(tmp_path):
    cfg, _ = _write(tmp_path, TUNE.replace("max_trials: 3", "max_trials: 4"))
    out = tmp_path / "c_out_tune"
    command = [sys.executable, "-m", "keras_distill", "tune", str(cfg)]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    project = out / "tuner" / run_folder.TUNER_PROJECT
    deadline = time.monotonic() + 300
    while not (project / "trial_1").exists():  # trial 0 done, trial 1 running
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    finished = _trial_scores(out)["trial_0"]
    rerun = subprocess.run(command, capture_output=True, text=True, env=_env())
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "training the teacher" not in rerun.stdout
    scores = _trial_scores(out)
    assert scores["trial_0"] == finished and len(scores) == 4


# -- Data loss 4: overwrite removes only what a run wrote; no symlinks ---------


def test_overwrite_of_a_killed_run_keeps_a_users_files_in_backup_and_tuner(tmp_path):
    out = tmp_path / "out"
    cfg = {"output": str(out), "_source": str(tmp_path / "c.yaml"), "data": "digits"}
    assert run_folder.prepare_output(str(out), cfg, "train") == "new"
    for name in (
        "backup/epoch-000000002.weights.h5",
        "backup/latest.weights.h5",
        "backup/mine.txt",
        "tuner/distiller/oracle.json",
        "tuner/distiller/trial_0/trial.json",
        "tuner/notes/mine.txt",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("run" if "mine" not in name else "keep")
    assert run_folder.prepare_output(str(out), cfg, "train", overwrite=True) == "new"
    assert os.listdir(out / "backup") == ["mine.txt"]
    assert (out / "backup" / "mine.txt").read_text() == "keep"
    assert (out / "tuner" / "notes" / "mine.txt").read_text() == "keep"
    assert not (out / "tuner" / "distiller").exists()


def test_a_symlinked_backup_folder_is_refused_before_anything_runs(tmp_path, capsys):
    cfg, out = _write(tmp_path, TRAIN)
    mine = tmp_path / "my_folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    out.mkdir()
    os.symlink(mine, out / "backup")
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "'backup'" in err and "symbolic link" in err and "training" not in err
    assert os.listdir(mine) == ["thesis.tex"]
    assert os.listdir(out) == ["backup"]  # nothing written


# -- Hangs 1 and 2: schedules are checked at their breakpoints ----------------


def test_a_huge_epoch_count_with_a_schedule_validates_at_once(tmp_path):
    text = TRAIN.replace(
        "distill: {{epochs: 3}}", "distill: {{epochs: 100000000000000}}"
    )
    text += (
        "schedules:\n  temperature: {{kind: linear, start: 8.0, end: 2.0, steps: 5}}\n"
    )
    cfg, _ = _write(tmp_path, text)
    with within(20):
        loaded = kd_config.load(str(cfg))
    assert loaded["distill"]["epochs"] == 10**14
    # Still checked over the whole run: a value turning bad late is found.
    late = text.replace(
        "temperature: {{kind: linear, start: 8.0, end: 2.0, steps: 5}}",
        "alpha: {{kind: linear, start: 0.1, end: 1.5, steps: 1000000}}",
    )
    cfg, _ = _write(tmp_path, late, name="late")
    with within(20), pytest.raises(kd_config.ConfigError, match=r"epoch \d+"):
        kd_config.load(str(cfg))


class StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_parameter_scheduler_with_a_huge_epoch_count_starts_at_once(unit):
    (x, y) = digits()["train"]
    distiller = kd.Distiller(models.student_mlp(hidden=4), trained_teacher())
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    schedule = kd.schedules.join(
        [kd.schedules.linear(8.0, 2.0, 50), kd.schedules.cosine(2.0, 1.0, 10)], [60]
    )
    with within(60):
        distiller.fit(
            x[:64],
            y[:64],
            batch_size=32,
            epochs=10**12,
            verbose=0,
            callbacks=[
                kd.callbacks.ParameterScheduler("temperature", schedule, unit=unit),
                StopAfterOneEpoch(),
            ],
        )
    assert distiller.history.history["temperature"] == pytest.approx(
        [8.0 if unit == "epoch" else float(schedule(1))]
    )


def test_a_schedule_that_turns_bad_late_is_still_refused_before_training():
    (x, y) = digits()["train"]
    distiller = kd.Distiller(models.student_mlp(hidden=4), trained_teacher())
    distiller.compile(optimizer="adam")
    bad = kd.schedules.join([0.5, kd.schedules.linear(0.5, 2.0, 10**6)], [10**9])
    with within(30), pytest.raises(ValueError, match="alpha"):
        distiller.fit(
            x[:32],
            y[:32],
            epochs=10**12,
            verbose=0,
            callbacks=[kd.callbacks.ParameterScheduler("alpha", bad)],
        )


def test_check_points_bound_the_schedules():
    linear = kd.schedules.linear(8.0, 2.0, 5, transition_begin=3)
    assert kd.schedules.check_points(linear, 10**12) == [0, 2, 3, 7, 8, 10**12 - 1]
    assert kd.schedules.check_points(linear, 0) == []
    step = kd.schedules.step([4, 9], [1.0, 2.0, 3.0])
    assert kd.schedules.check_points(step, 6) == [0, 3, 4, 5]
    assert len(kd.schedules.check_points(lambda e: 1.0, 10**12)) == (
        kd.schedules.CHECKED_AHEAD + 1
    )


# -- Silent 11: a curriculum callback not wired to the data -------------------


def test_curriculum_scheduler_refuses_a_fit_on_other_data():
    (x, y) = digits()["train"]
    x, y = x[:128], y[:128]
    curriculum = kd.curriculum.Curriculum(x, y, difficulty=np.arange(len(x)))
    distiller = kd.Distiller(models.student_mlp(hidden=4), trained_teacher())
    distiller.compile(optimizer="adam")
    pacing = kd.curriculum.pacing("linear", 0.25, 4)
    with pytest.raises(ValueError, match=r"does not read.*0\.25.*curriculum\.dataset"):
        distiller.fit(
            x,
            y,  # plain arrays: every example, whatever the fraction
            epochs=4,
            verbose=0,
            callbacks=[kd.callbacks.CurriculumScheduler(curriculum, pacing)],
        )
    # Wired to its dataset, the same callback trains and logs the fractions.
    history = distiller.fit(
        curriculum.dataset(32),
        epochs=2,
        verbose=0,
        callbacks=[kd.callbacks.CurriculumScheduler(curriculum, pacing)],
    )
    assert history.history["curriculum_fraction"] == pytest.approx([0.25, 0.4375])


# -- Silent 20: a teacher trained for 0 epochs ---------------------------------


def test_a_teacher_trained_for_zero_epochs_is_refused(tmp_path, capsys):
    cfg, _ = _write(tmp_path, TRAIN.replace("epochs: 1}}", "epochs: 0}}"))
    assert cli.main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "teacher.epochs must be >= 1" in err and "Received: 0" in err
    assert "teacher_cnn" in err


# -- Silent 23: the tuner's memo follows the array's contents ------------------


def test_teacher_outputs_follow_an_array_changed_in_place():
    hypermodel = kd.tuner.DistillerHyperModel(trained_teacher(), models.student_mlp)
    x = np.array(digits()["val"][0][:32])
    before = hypermodel.teacher_logits(x).copy()
    x[:] = x[::-1]  # the same array object, new contents
    after = hypermodel.teacher_logits(x)
    assert np.allclose(after, before[::-1], atol=1e-5)
    assert hypermodel.teacher_calls == 2
    hypermodel.teacher_logits(x.copy())  # equal contents: memoised
    assert hypermodel.teacher_calls == 2


# -- Unclear: labels out of range, a broken .keras file ------------------------


def test_tune_names_a_label_outside_the_teachers_classes(tmp_path):
    (x, y), (xv, yv) = digits()["train"], digits()["val"]
    y = np.array(y[:64])
    y[5] = 10
    with pytest.raises(ValueError, match=r"label 10 \(example 5\).*predicts 10"):
        kd.tune(
            trained_teacher(),
            lambda hp: models.student_mlp(hidden=4),
            (x[:64], y),
            (xv[:32], yv[:32]),
            max_trials=1,
            epochs=1,
            directory=tmp_path,
            verbose=0,
        )
    assert not list(tmp_path.rglob("trial_*"))  # refused before any trial


def test_evaluate_says_a_garbage_file_is_not_a_keras_file(tmp_path, capsys):
    garbage = tmp_path / "model.keras"
    garbage.write_bytes(b"\x00not a zip archive" * 10)
    assert cli.main(["evaluate", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "not a valid .keras file" in err and "not found" not in err.lower()
    with pytest.raises(FileNotFoundError, match="no such file"):
        runs.load_keras_file(str(tmp_path / "missing.keras"), "model")
