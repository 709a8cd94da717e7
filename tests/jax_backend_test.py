"""The Distiller on the JAX backend (`distiller/jax_step.py`).

The one place the JAX run is marked: `make test` runs this module a second
time with `KERAS_BACKEND=jax pytest -m jax` (the TensorFlow run skips it).
Fresh processes load the saved file (JAX) and the export (TensorFlow alone).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_distill as kd

pytestmark = [
    pytest.mark.jax,
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="the JAX run: KERAS_BACKEND=jax pytest -m jax (make test)",
    ),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data():
    digits = kd.data.load_digits()
    (x, y), (xv, yv) = digits["train"], digits["val"]
    return x[:256], y[:256], xv[:64], yv[:64]


@pytest.fixture(scope="module")
def teacher(data):
    x, y, _, _ = data
    keras.utils.set_random_seed(0)
    model = kd.models.compile_classifier(kd.models.teacher_cnn(), learning_rate=3e-3)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


def make_distiller(teacher, optimizer=None, **kwargs):
    keras.utils.set_random_seed(1)
    distiller = kd.Distiller(
        student=kd.models.student_mlp(hidden=8), teacher=teacher, **kwargs
    )
    optimizer = optimizer or keras.optimizers.Adam(1e-2)
    distiller.compile(optimizer=optimizer, metrics=["accuracy"])
    return distiller


def run(code, backend, *args):
    """Runs `code` in a fresh Python with `KERAS_BACKEND=backend`; its stdout."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_fit_with_kd_and_another_term_trains(data, teacher):
    x, y, xv, yv = data
    distiller = make_distiller(teacher, distillation_loss=["kd", "mse"])
    before = distiller.evaluate(xv, yv, verbose=0, return_dict=True)
    history = distiller.fit(x, y, epochs=4, batch_size=32, verbose=0)
    after = distiller.evaluate(xv, yv, verbose=0, return_dict=True)
    logs = history.history
    assert {"kd_loss", "mse_loss", "student_loss", "distillation_loss"} <= set(logs)
    assert logs["loss"][-1] < logs["loss"][0]
    assert after["accuracy"] > before["accuracy"] + 0.15
    assert int(distiller.optimizer.iterations.numpy()) == 4 * 8


def test_a_schedule_changes_temperature_mid_epoch_without_retracing(data, teacher):
    x, _, _, _ = data
    x = x[:128]  # 4 batches of 32, no labels: the KD term alone
    distiller = make_distiller(
        teacher, optimizer=keras.optimizers.SGD(0.0), alpha=0.0, temperature=1.0
    )
    traces = []
    report = distiller.compute_loss_report

    def counted(*args, **kwargs):
        traces.append(1)
        return report(*args, **kwargs)

    distiller.compute_loss_report = counted
    temperatures = [1.0, 2.0, 4.0, 8.0]
    expected = []
    for i, t in enumerate(temperatures):  # the student does not move (lr 0)
        distiller.temperature = t
        batch = x[32 * i : 32 * (i + 1)]
        expected.append(float(counted(batch, None, distiller(batch)).total))
    traces.clear()
    means = []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            means.append(float(logs["distillation_loss"]))

    schedule = kd.callbacks.ParameterScheduler(
        "temperature", kd.schedules.step([1, 2, 3], temperatures), unit="step"
    )
    distiller.fit(
        x,
        epochs=1,
        batch_size=32,
        shuffle=False,
        verbose=0,
        callbacks=[schedule, Recorder()],
    )
    # The loss of each step from the running means (equal batches).
    steps = [means[0]] + [(k + 1) * means[k] - k * means[k - 1] for k in range(1, 4)]
    np.testing.assert_allclose(steps, expected, rtol=1e-4)
    assert len(traces) == 1  # one trace of the step for the four temperatures
    assert float(distiller.temperature.numpy()) == 8.0  # not reset at the end


def test_a_nan_batch_changes_no_variable_and_raises_the_tf_message(data, teacher):
    x, y, _, _ = data
    x, y = x[:64], y[:64]
    reference = make_distiller(teacher)
    reference.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    distiller = make_distiller(teacher)
    bad = x.copy()
    bad[40] = np.nan  # in the second batch
    with pytest.raises(
        ValueError,
        match=r"became NaN or infinite in training step 2 \(loss nan.*Training stopped before this step's update",
    ):
        distiller.fit(bad, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    assert int(distiller.optimizer.iterations.numpy()) == 1
    for mine, theirs in zip(
        [*distiller.student.weights, *distiller.optimizer.variables],
        [*reference.student.weights, *reference.optimizer.variables],
    ):  # the same first step (its program differs: to an ulp)
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-7)
    # A bad first step of a fit: every variable exactly as before it.
    before = [v.numpy().copy() for v in distiller.variables]
    before_optimizer = [v.numpy().copy() for v in distiller.optimizer.variables]
    with pytest.raises(ValueError, match=r"in training step 2 \(loss nan"):
        distiller.fit(bad[32:], y[32:], epochs=1, batch_size=32, verbose=0)
    for variable, value in zip(distiller.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    for variable, value in zip(distiller.optimizer.variables, before_optimizer):
        np.testing.assert_array_equal(variable.numpy(), value)
    # Training goes on from there.
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert int(distiller.optimizer.iterations.numpy()) == 3


def test_bad_labels_and_weights_in_a_batch_raise_after_the_step(data, teacher):
    import tensorflow as tf

    x, y, _, _ = data
    distiller = make_distiller(teacher)
    labels = np.where(np.arange(len(y)) == 40, 12, y)  # second batch
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(32)
    with pytest.raises(
        ValueError,
        match=r"Labels must be integers in \[0, 10\).*label value of 12 in training step 2\.",
    ):
        distiller.fit(dataset, epochs=1, verbose=0)
    weights = np.ones(len(y), "float32")
    weights[70] = -1.0
    with pytest.raises(ValueError, match=r"weight of -1 in training step 4\."):
        distiller.fit(x, y, sample_weight=weights, shuffle=False, epochs=1, verbose=0)
    assert int(distiller.optimizer.iterations.numpy()) == 3


def test_trains_from_the_teacher_cache(data, teacher, tmp_path):
    x, y, xv, yv = data
    cache = kd.cache.TeacherCache.build(teacher, x, str(tmp_path / "cache"), verbose=0)
    distiller = make_distiller(teacher)
    distiller.fit(cache.dataset(x, y, batch_size=32, shuffle=True), epochs=3, verbose=0)
    online = make_distiller(teacher)
    online.fit(x, y, epochs=3, batch_size=32, verbose=0)
    cached = distiller.evaluate(xv, yv, verbose=0, return_dict=True)
    assert (
        abs(
            cached["accuracy"]
            - online.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
        )
        < 0.25
    )
    assert cached["accuracy"] > 0.3
    logits = cache.load()["teacher_logits"]  # stored as float16
    np.testing.assert_allclose(
        logits[:8], teacher.predict(x[:8], verbose=0), rtol=2e-3, atol=2e-3
    )


def test_saved_file_predicts_the_same_in_a_fresh_process(data, teacher, tmp_path):
    x, y, _, _ = data
    distiller = make_distiller(teacher, temperature=3.0)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    np.save(tmp_path / "x.npy", x[:16])
    out = run(
        """
        import sys, numpy as np, keras
        import keras_distill
        model = keras.models.load_model(sys.argv[1])
        np.save(sys.argv[2], np.asarray(model.predict(np.load(sys.argv[3]), verbose=0)))
        print(keras.backend.backend(), float(model.temperature.numpy()))
        """,
        "jax",
        path,
        str(tmp_path / "y.npy"),
        str(tmp_path / "x.npy"),
    )
    assert out.split() == ["jax", "3.0"]
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), distiller.predict(x[:16], verbose=0), atol=1e-6
    )


def test_export_is_served_by_tensorflow_alone(data, teacher, tmp_path):
    x, y, _, _ = data
    distiller = make_distiller(teacher)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    result = kd.export_student(distiller, str(tmp_path / "serving"), verbose=False)
    np.save(tmp_path / "x.npy", x[:16])
    out = run(
        """
        import sys, numpy as np, tensorflow as tf
        served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        outputs = served(image=tf.constant(np.load(sys.argv[2])))
        np.save(sys.argv[3], outputs["logits"].numpy())
        print(outputs["classes"].dtype.name, sorted(outputs))
        print("keras_distill" in sys.modules)
        """,
        "tensorflow",
        result.path,
        str(tmp_path / "x.npy"),
        str(tmp_path / "logits.npy"),
    )
    lines = out.strip().splitlines()
    assert lines[0] == "int64 ['classes', 'logits', 'probabilities']"
    # TensorFlow alone (KERAS_BACKEND=tensorflow, no keras_distill; importing
    # TensorFlow itself imports the jax and keras packages when installed).
    assert lines[1] == "False"
    np.testing.assert_allclose(
        np.load(tmp_path / "logits.npy"),
        distiller.predict(x[:16], verbose=0),
        atol=1e-5,
    )


def test_mixed_precision_trains(data, teacher):
    x, y, _, _ = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        distiller = make_distiller(teacher)
        history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_tf_distribute_fails_with_one_clear_error(data, teacher):
    import tensorflow as tf

    from keras_distill.distiller.backends import BackendNotSupportedError

    x, y, _, _ = data
    distiller = make_distiller(teacher)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        with pytest.raises(
            BackendNotSupportedError,
            match=r"needs the tensorflow backend, but Keras runs on jax.*keras\.distribution",
        ):
            distiller.fit(x, y, epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(
        BackendNotSupportedError, match=r"kd\.distribute\.fit.*runs on jax"
    ):
        kd.distribute.fit(distiller, dataset)
    with pytest.raises(ValueError, match=r"steps_per_execution=2"):
        distiller.compile(optimizer="adam", steps_per_execution=2)
        distiller.fit(x, y, epochs=1, verbose=0)


def test_hints_and_the_streamed_curriculum_train(data, teacher):
    import tensorflow as tf

    x, y, _, _ = data
    keras.utils.set_random_seed(1)
    student = kd.models.student_mlp(hidden=8)
    hint = kd.hints.Hint(teacher_layer="dense", student_layer=student.layers[1].name)
    distiller = kd.Distiller(student=student, teacher=teacher, hints=[hint])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert history.history["hint_loss"][-1] < history.history["hint_loss"][0]
    source = tf.data.Dataset.from_tensor_slices((x, y))
    curriculum = kd.curriculum.StreamingCurriculum.from_teacher(
        teacher, source, verbose=0
    )
    pacing = kd.curriculum.pacing("linear", 0.3, 2)
    history = distiller.fit(
        curriculum.dataset(batch_size=32),
        epochs=2,
        verbose=0,
        callbacks=[kd.callbacks.CurriculumScheduler(curriculum, pacing)],
    )
    assert history.history["curriculum_examples"][0] < len(x)
