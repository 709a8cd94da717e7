"""Keras Tuner's chief/worker mode: one search across three processes.

A chief (the oracle, served over gRPC) and two workers run the same script,
configured only by Keras Tuner's environment variables, on 127.0.0.1.
"""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from keras_distill import models
from tests.helpers import trained_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_TRIALS = 4
WORKERS = ("tuner0", "tuner1")
TIMEOUT = 240  # seconds for the whole search, all processes

# Every process runs this script; only KERASTUNER_TUNER_ID differs.
SCRIPT = """
import json, os, sys, time

import keras

import keras_distill as kd
from keras_distill import data, models

directory, teacher_path, ready_dir, workers, max_trials = sys.argv[1:6]
role = os.environ["KERASTUNER_TUNER_ID"]
splits = data.load_digits()
train = tuple(a[:400] for a in splits["train"])
val = tuple(a[:150] for a in splits["val"])
teacher = keras.models.load_model(teacher_path)
predicted = []
predict = teacher.predict


def counted_predict(x, *args, **kwargs):
    predicted.append(len(x))
    return predict(x, *args, **kwargs)


teacher.predict = counted_predict


def build_student(hp):
    return models.student_mlp(hidden=hp.Choice("hidden", [8, 16]))


if role != "chief":
    # Start the workers' searches together, so that each one gets trials.
    open(os.path.join(ready_dir, role), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(ready_dir)) < int(workers):
        if time.monotonic() > deadline:
            sys.exit("the other workers never became ready")
        time.sleep(0.05)

best_hp, distiller, tuner = kd.tune(
    teacher, build_student, train, val, max_trials=int(max_trials), epochs=2,
    directory=directory, project_name="search", overwrite=True,
)
result = {"role": role, "predicted": predicted, "trials_run": tuner.trials_run}
if role == "chief":
    result["best_hp"] = best_hp.values
    result["best_score"] = tuner.oracle.get_best_trials(1)[0].score
    result["accuracy"] = distiller.evaluate(*val, verbose=0, return_dict=True)[
        "accuracy"
    ]
else:
    result["best_hp"], result["distiller"] = best_hp, distiller
print("RESULT " + json.dumps(result), flush=True)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands, tmp_path):
    """Starts `{name: env}` processes, waits for all; kills all on any failure."""
    procs, logs = {}, {}
    for name, env in commands.items():
        out = open(tmp_path / f"{name}.out", "w+")
        err = open(tmp_path / f"{name}.err", "w+")
        logs[name] = (out, err)
        procs[name] = subprocess.Popen(
            [sys.executable, *env.pop("ARGS")], stdout=out, stderr=err, env=env
        )

    def report(why):
        text = [why]
        for name, (out, err) in logs.items():
            out.seek(0)
            err.seek(0)
            text.append(
                f"--- {name} (exit {procs[name].poll()}) stdout:\n{out.read()[-3000:]}"
                f"\n--- {name} stderr:\n{err.read()[-4000:]}"
            )
        return "\n".join(text)

    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in procs.values()):
            failed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if failed:
                raise AssertionError(report(f"{failed} failed"))
            if time.monotonic() > deadline:
                raise AssertionError(report(f"timed out after {TIMEOUT} s"))
            time.sleep(0.2)
        failed = [n for n, p in procs.items() if p.returncode != 0]
        if failed:
            raise AssertionError(report(f"{failed} failed"))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    results = {}
    for name, (out, _) in logs.items():
        out.seek(0)
        text = out.read()
        lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == 1, report(f"{name} printed no RESULT line")
        results[name] = (json.loads(lines[0][len("RESULT ") :]), text)
    for out, err in logs.values():
        out.close()
        err.close()
    return results


@pytest.mark.slow
def test_chief_and_two_workers_run_each_trial_exactly_once(tmp_path):
    teacher_path = str(tmp_path / "teacher.keras")
    teacher = models.teacher_cnn()  # saved uncompiled: the weights alone
    teacher.set_weights(trained_teacher().get_weights())
    teacher.save(teacher_path)
    script = tmp_path / "tune.py"
    script.write_text(SCRIPT)
    directory, ready = tmp_path / "tuning", tmp_path / "ready"
    ready.mkdir()
    port = free_port()
    base = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
    }
    args = [script, directory, teacher_path, ready, len(WORKERS), MAX_TRIALS]
    args = [str(a) for a in args]
    commands = {
        name: {**base, "KERASTUNER_TUNER_ID": name, "ARGS": args}
        for name in ("chief", *WORKERS)
    }
    results = run_all(commands, tmp_path)

    # Every trial finished once, with its own hyperparameters.
    trials = []
    for path in glob.glob(str(directory / "search" / "trial_*" / "trial.json")):
        with open(path) as f:
            trials.append(json.load(f))
    assert len(trials) == MAX_TRIALS
    assert [t["status"] for t in trials] == ["COMPLETED"] * MAX_TRIALS
    ids = sorted(t["trial_id"] for t in trials)
    assert len(set(ids)) == MAX_TRIALS
    values = {
        json.dumps(t["hyperparameters"]["values"], sort_keys=True) for t in trials
    }
    assert len(values) == MAX_TRIALS
    # The workers shared them out: each ran at least one, none ran one twice.
    ran = {name: results[name][0]["trials_run"] for name in WORKERS}
    assert all(ran.values()), ran
    assert sorted(ran["tuner0"] + ran["tuner1"]) == ids, ran
    # Each worker paid for the teacher once (train and validation arrays); the
    # chief never did, and ran no trial.
    chief, chief_out = results["chief"]
    for name in WORKERS:
        assert results[name][0]["predicted"] == [400, 150]
        assert results[name][0]["best_hp"] is None
        assert results[name][0]["distiller"] is None
        assert f"{name} ran trials: " in results[name][1]
        assert "| trial |" not in results[name][1]
    assert chief["predicted"] == [] and chief["trials_run"] == []
    # The chief alone prints the table and rebuilds the best distiller, from
    # the checkpoint a worker wrote in the shared directory.
    assert chief_out.count("| trial |") == 1
    rows = [line for line in chief_out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + MAX_TRIALS
    assert chief["accuracy"] == pytest.approx(chief["best_score"], abs=1e-6)
    best = max(trials, key=lambda t: t["score"])
    assert chief["best_hp"] == best["hyperparameters"]["values"]
