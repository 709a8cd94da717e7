"""benchmarks/quality.py and keras_distill.app.quality: statistics, table, quick run."""

import json
import math
import os

import numpy as np
import pytest

from keras_distill.app import quality
from tests.helpers import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def benchmark():
    return load_file("benchmarks/quality.py", "quality_benchmark")


def test_summarise_mean_std_and_95_interval():
    values = [0.60, 0.62, 0.64, 0.61, 0.63]
    s = quality.summarise(values)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(0.62)
    std = math.sqrt(sum((v - 0.62) ** 2 for v in values) / 4)
    assert s["std"] == pytest.approx(std)
    # t(0.975, 4) = 2.7764 (tables of Student's t).
    assert s["high"] - s["mean"] == pytest.approx(2.7764 * std / math.sqrt(5), rel=1e-4)
    assert (s["min"], s["max"]) == (0.60, 0.64)
    single = quality.summarise([0.5])
    assert single["mean"] == 0.5 and math.isnan(single["std"])


def fake_results():
    rows = {
        "scratch": [0.60, 0.61, 0.62],
        "kd": [0.605, 0.615, 0.62],  # within the spread
        "function_matching": [0.80, 0.81, 0.82],  # far above
        "dkd": [0.40, 0.41, 0.42],  # far below
    }
    setup = quality.default_setup("mnist1d")
    return {
        "seeds": [0, 1, 2],
        "wall_seconds": 60.0,
        "workers": 2,
        "data": {
            "mnist1d": {
                "setup": vars(setup),
                "train_examples": 3600,
                "test_examples": 1000,
                "teacher": {"accuracy": 0.97, "parameters": 1234, "seconds": 1.0},
                "rows": {
                    m: {"seed": [0, 1, 2], "accuracy": a, "seconds": [1.0] * 3}
                    for m, a in rows.items()
                },
            }
        },
    }


def test_table_rows_columns_and_verdicts(tmp_path):
    bench = benchmark()
    text = bench.tables(fake_results())
    header = (
        "| method | test accuracy (mean) | std | 95% interval | min-max | "
        "vs scratch | verdict | time per seed (s) |"
    )
    assert header in text
    lines = {
        line.split(":")[0]: line for line in text.splitlines() if line.startswith("| `")
    }
    assert list(lines) == ["| `scratch`", "| `kd`", "| `function_matching`", "| `dkd`"]
    assert "| helps |" in lines["| `function_matching`"]
    assert "| hurts |" in lines["| `dkd`"]
    assert "| no clear difference |" in lines["| `kd`"]
    assert "+0.2000" in lines["| `function_matching`"]
    assert "beat `scratch` by more than the seeds' spread: `function_matching`." in text
    assert "No clear difference from `scratch`: `kd`." in text
    assert "Worse than `scratch` by more than the spread: `dkd`." in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.BEGIN}\nold 0.1234\n{bench.END}\nrest\n")
    bench.rewrite_readme(str(readme), text)
    written = readme.read_text()
    assert "old 0.1234" not in written and header in written
    assert written.startswith("intro\n") and written.endswith("rest\n")


def test_quick_run_trains_every_row_and_writes_table_and_png(tmp_path):
    bench = benchmark()
    # Two rows (one with a teacher) and two seeds: the
    # benchmark itself runs every row; the table code is tested above.
    methods = ["scratch", "kd"]
    results = bench.run(
        ["digits"],
        methods,
        [0, 1],
        quick=True,
        epochs={"digits": 1},
        log=lambda *_: None,
        teacher_dir=str(tmp_path / "teachers"),
    )
    rows = results["data"]["digits"]["rows"]
    assert list(rows) == methods
    for row in rows.values():
        assert row["seed"] == [0, 1]
        assert all(0.0 <= a <= 1.0 for a in row["accuracy"])
        assert all(s > 0 for s in row["seconds"])
    text = bench.tables(results)
    assert text.count("| `") == len(methods)
    png = tmp_path / "quality.png"
    bench.plot(results, str(png))
    assert png.stat().st_size > 1000
    json.dumps(results)  # serialisable as written by main()


def test_few_labels_split_is_stratified_and_disjoint():
    y = np.repeat(np.arange(10), 40)
    labelled, rest = quality._few_labels_split(y, 0.1, seed=0)
    assert len(labelled) == 40 and len(rest) == 360
    assert np.bincount(y[labelled]).tolist() == [4] * 10
    assert not set(labelled) & set(rest)


def test_mnist1d_demo_rows_have_the_demo_row_fields(tmp_path):
    rows = quality.mnist1d_demo_rows(
        seeds=(0,), epochs=1, quick=True, teacher_dir=str(tmp_path)
    )
    fields = {
        "model",
        "parameters",
        "test_accuracy",
        "test_loss",
        "train_seconds",
        "accuracy_min",
        "accuracy_max",
        "seeds",
    }
    assert [set(row) for row in rows] == [fields] * 3
    assert [row["seeds"] for row in rows] == [1, 1, 1]
    assert "teacher" in rows[0]["model"] and "distilled" in rows[2]["model"]
    assert rows[1]["parameters"] == rows[2]["parameters"] < rows[0]["parameters"]
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in rows)


def test_every_registered_logit_term_has_a_benchmark_row(tmp_path):
    # A new method's module gets its row from the registry, with no edit in
    # the benchmark: `terms` expands to one `term:<name>` row per logit term.
    from keras_distill.terms import registry

    bench = benchmark()
    parser = bench.argparse.ArgumentParser()
    rows = bench.expand_methods(["scratch", "terms"], parser)
    assert rows == ["scratch"] + [f"term:{n}" for n in registry.names("logits")]
    assert "term:dist" in rows and "term:rkd_angle" in rows
    for row in rows:
        assert bench.describe(row)
    with pytest.raises(SystemExit):
        bench.expand_methods(["term:nope"], parser)
    with pytest.raises(ValueError, match="progressive variant 'nope'"):
        quality.check_method("progressive:nope")


def test_a_term_row_trains_its_term(tmp_path, monkeypatch):
    import keras_distill as kd

    built = []
    original = kd.Distiller

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr(kd, "Distiller", recording)
    setup = quality.default_setup("digits", quick=True)
    setup.teacher_dir = str(tmp_path / "teachers")
    accuracy, seconds = quality.train("term:dist", setup, seed=0)
    assert 0.0 <= accuracy <= 1.0 and seconds > 0
    (model,) = built
    assert [type(t).__name__ for t in model.distillation_terms] == ["DISTTerm"]
