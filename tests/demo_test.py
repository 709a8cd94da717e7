import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_and_distilled_student_beats_chance(tmp_path):
    # As `make demo` runs it: a process of its own, so its stderr is its own.
    out = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "keras_distill", "demo", "--quick"]
        + ["--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    # Quiet: no banner, no retracing warnings, no TFLite converter logs.
    for noise in ("oneDNN", "retracing", "fully_quantize", "XNNPACK"):
        assert noise not in run.stderr, run.stderr[-3000:]
    assert "| student (distilled) |" in printed
    results = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in results["rows"]}
    assert set(rows) == {
        "teacher",
        "student (scratch)",
        "student (distilled)",
        "student (progressive)",
        "student (distilled), int8 TFLite (first seed)",
    }
    chance = 0.1
    assert rows["student (distilled)"]["test_accuracy"] > 3 * chance
    assert rows["student (progressive)"]["test_accuracy"] > 3 * chance
    assert (
        rows["teacher"]["parameters"] > 10 * rows["student (distilled)"]["parameters"]
    )
    # The MNIST-1D rows (10% labels): teacher, scratch and distilled students.
    mnist1d = [row["model"] for row in results["mnist1d_rows"]]
    assert len(mnist1d) == 3 and "MNIST-1D" in printed
    assert "scratch" in mnist1d[1] and "distilled" in mnist1d[2]
    assert all(row["seeds"] == 2 for row in results["mnist1d_rows"][1:])
    assert (out / "curves.png").stat().st_size > 10_000
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "serving" / "digits" / "1" / "saved_model.pb").is_file()
    assert (out / "serving" / "digits_teacher" / "1" / "saved_model.pb").is_file()
    # The serving columns: the exported teacher and student, measured.
    teacher, student = rows["teacher"], rows["student (distilled)"]
    int8 = rows["student (distilled), int8 TFLite (first seed)"]
    for row in (teacher, student, int8):
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"], row
        assert row["throughput"] > 0, row
    assert teacher["size_kib"] > 3 * student["size_kib"] > 3 * int8["size_kib"]
    serving = results["serving"]
    assert (
        abs(int8["test_accuracy"] - serving["student (distilled)"]["accuracy"]) < 0.05
    )
    assert "latency batch 1, p50 / p99 (ms)" in printed
    assert "speed-up vs teacher" in (out / "results.md").read_text()


def test_a_reused_model_shows_no_training_time_of_zero():
    from keras_distill.app import demo

    rows = [
        demo.Row("MNIST-1D teacher", 10, 0.9, 0.1, 0.0),
        demo.Row("student (scratch)", 5, 0.8, 0.2, 1.25),
    ]
    table = demo.format_table(rows).splitlines()
    assert "| 0 (reused) |" in table[2]
    assert "| 1.2 |" in table[3] or "| 1.3 |" in table[3]
