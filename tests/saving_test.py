"""Every kind of model the library saves loads after `import keras_distill` alone."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_distill as kd
from tests.helpers import digits, digits_subset, tiny_student, trained_teacher

LOAD = """
import sys
import keras, numpy as np
import keras_distill
model = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
out = model.predict(x, verbose=0)
out = out[-1] if isinstance(out, list) else out
np.save(sys.argv[3], out)
print(type(model).__name__)
"""


def _loads_in_a_fresh_process(model, tmp_path, x):
    path, xs, ys = (str(tmp_path / n) for n in ("m.keras", "x.npy", "y.npy"))
    model.save(path)
    np.save(xs, x)
    result = subprocess.run(
        [sys.executable, "-c", LOAD, path, xs, ys],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = model.predict(x, verbose=0)
    expected = expected[-1] if isinstance(expected, list) else expected
    np.testing.assert_allclose(np.load(ys), expected, rtol=1e-5, atol=1e-5)
    return result.stdout.strip().splitlines()[-1]


def test_distiller_with_hints_loads_in_a_fresh_process(tmp_path):
    x, y = digits_subset(n=64)
    distiller = kd.Distiller(
        kd.models.student_cnn(),
        trained_teacher(),
        hints=[kd.hints.Hint("conv2", "conv1")],
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    assert _loads_in_a_fresh_process(distiller, tmp_path, x[:8]) == "Distiller"


def test_grouped_teacher_distiller_loads_in_a_fresh_process(tmp_path):
    x, y = digits_subset(n=64)
    grouped = kd.transfer.GroupedTeacher(
        trained_teacher(), [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    )
    distiller = kd.Distiller(tiny_student(num_classes=2), grouped)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y % 2, epochs=1, verbose=0)
    assert _loads_in_a_fresh_process(distiller, tmp_path, x[:8]) == "Distiller"


def test_lwf_loads_in_a_fresh_process(tmp_path):
    x, y = digits_subset(n=64)
    old = keras.models.clone_model(trained_teacher())
    old.set_weights(trained_teacher().get_weights())
    student = kd.continual.add_task_head(old, num_classes=5)
    lwf = kd.continual.LearningWithoutForgetting(student, trained_teacher())
    lwf.compile(optimizer="adam", metrics=["accuracy"])
    lwf.fit(x, y % 5, epochs=1, verbose=0)
    assert (
        _loads_in_a_fresh_process(lwf, tmp_path, x[:8]) == "LearningWithoutForgetting"
    )


@pytest.mark.slow
def test_the_tuners_best_distiller_evaluates_and_exports_in_a_new_process(tmp_path):
    train, val = digits()["train"], digits()["val"]
    _, distiller, _ = kd.tune(
        trained_teacher(),
        lambda hp: tiny_student(hidden=hp.Choice("hidden", [8, 16])),
        train,
        val,
        max_trials=2,
        epochs=1,
        directory=tmp_path / "search",
        verbose=0,
    )
    assert type(distiller) is kd.Distiller
    path = str(tmp_path / "best_distiller.keras")
    distiller.save(path)
    for args in (["evaluate", path], ["export", path, str(tmp_path / "serving")]):
        result = subprocess.run(
            [sys.executable, "-m", "keras_distill", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "serving" / "1" / "saved_model.pb").exists()


def test_the_library_imports_and_trains_without_the_extras():
    # As after `pip install keras-distill` without extras: the app's and the
    # data sets' packages (and the optional integrations) cannot be imported.
    code = """
import sys
for name in ("sklearn", "matplotlib", "yaml", "mnist1d", "keras_tuner",
             "tensorflow_datasets"):
    sys.modules[name] = None
import numpy as np, keras
import keras_distill as kd
rng = np.random.default_rng(0)
x, y = rng.random((64, 8, 8, 1), "float32"), rng.integers(0, 10, 64)
teacher = kd.models.compile_classifier(kd.models.teacher_cnn())
teacher.fit(x, y, epochs=1, verbose=0)
distiller = kd.Distiller(kd.models.student_mlp(), teacher)
distiller.compile(optimizer="adam")
history = distiller.fit(x, y, epochs=2, verbose=0)
kd.callbacks.ParameterScheduler("temperature", kd.schedules.linear(4.0, 2.0, 1))
print("trained", len(history.history["loss"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("trained 2")


# A custom term, as a user writes it (13 lines), in its own module.
CUSTOM_TERM = '''
import keras
from keras import ops

import keras_distill as kd


@keras.saving.register_keras_serializable(package="my_terms")
class SoftL1(kd.losses.DistillationTerm):
    """Mean absolute difference of the softened distributions."""

    default_name = "soft_l1"

    def call(self, teacher, student, labels=None, temperature=None):
        p, q = ops.softmax(teacher / temperature), ops.softmax(student / temperature)
        return ops.mean(ops.abs(p - q), axis=-1)
'''


def test_a_custom_term_trains_saves_and_loads_in_a_fresh_process(tmp_path, monkeypatch):
    (tmp_path / "my_terms.py").write_text(CUSTOM_TERM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import my_terms

    x, y = digits_subset(n=64)
    student = tiny_student(hidden=4)
    distiller = kd.Distiller(
        student,
        trained_teacher(),
        distillation_loss=["kd", my_terms.SoftL1(), kd.losses.CTKDTerm()],
        distillation_loss_weights=[0.5, 2.0, 1.0],
    )
    distiller.compile(optimizer="adam")
    before = [w.copy() for w in student.get_weights()]
    reversal = kd.callbacks.ParameterScheduler("ctkd_reversal", 1.0)
    history = distiller.fit(
        x, y, epochs=1, batch_size=32, verbose=0, callbacks=[reversal]
    )
    assert history.history["soft_l1_loss"][0] > 0
    learned = distiller.distillation_loss[2].learned_temperature()
    assert learned != pytest.approx(1 + 20 / (1 + np.exp(-1.0)), abs=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    code = LOAD.replace(
        "print(type(model).__name__)",
        "print(type(model).__name__, [t.name for t in model.distillation_loss],"
        " [round(float(w), 3) for w in model.distillation_loss_weights],"
        " round(model.distillation_loss[2].learned_temperature(), 5))",
    )
    path, xs, ys = (str(tmp_path / n) for n in ("m.keras", "x.npy", "y.npy"))
    distiller.save(path)
    np.save(xs, x[:8])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code.replace("import keras_distill", "import my_terms"),
            path,
            xs,
            ys,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(ys), distiller.predict(x[:8], verbose=0), atol=1e-5
    )
    assert result.stdout.strip().splitlines()[-1] == (
        f"Distiller ['kd', 'soft_l1', 'ctkd'] [0.5, 2.0, 1.0] {round(learned, 5)}"
    )
