"""Issue 29's probe (reliability, round 5b): hangs, silent results and unclear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(activation=None):
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(10, activation=activation)]
    )


def _distiller(**kwargs):
    teacher = _model()
    teacher(X[:1])
    distiller = kd.Distiller(_model(), teacher, **kwargs)
    distiller.compile(optimizer="adam")
    return distiller


# -- p5b-1: an endless dataset without a step count hung fit/evaluate/predict -----


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_an_endless_dataset_without_steps_is_refused(method):
    distiller = _distiller()
    batches = (X,) if method == "predict" else (X, Y)
    endless = tf.data.Dataset.from_tensor_slices(batches).batch(8).repeat()
    with pytest.raises(ValueError, match=r"endless .*steps"):
        getattr(distiller, method)(endless, verbose=0)


def test_an_endless_validation_set_without_validation_steps_is_refused():
    distiller = _distiller()
    endless = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat()
    with pytest.raises(ValueError, match=r"validation_data .*validation_steps"):
        distiller.fit(X, Y, validation_data=endless, epochs=1, verbose=0)


def test_an_endless_dataset_with_steps_trains():
    distiller = _distiller()
    endless = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat()
    history = distiller.fit(endless, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(distiller.evaluate(endless, steps=2, verbose=0)[0])
    assert distiller.predict(endless.map(lambda x, y: x), steps=2, verbose=0).shape == (
        16,
        10,
    )


# -- p5b-2: a teacher .keras saved uncompiled, or of another input shape --------


def _config(tmp_path, teacher_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: digits\n"
        f"output: {tmp_path / 'run'}\n"
        f"teacher: {{model: {teacher_path}}}\n"
        "student: {model: student_mlp, hidden: 4}\n"
        "distill: {epochs: 1}\n"
        "export: false\n"
    )
    return str(config)


def _uncompiled_teacher(input_shape):
    teacher = keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    teacher.set_weights([RNG.normal(size=w.shape) for w in teacher.get_weights()])
    return teacher


def test_a_teacher_file_of_another_input_shape_is_named(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    path = tmp_path / "teacher.keras"
    _uncompiled_teacher((28, 28, 1)).save(path)
    # Was "AttributeError: 'Sequential' object has no attribute 'optimizer'".
    with pytest.raises(ValueError, match=r"teacher .* \(28, 28, 1\).*\(8, 8, 1\)"):
        runs.train(_config(tmp_path, path), verbose=0)


def test_an_uncompiled_teacher_file_trains(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    path = tmp_path / "teacher.keras"
    _uncompiled_teacher((8, 8, 1)).save(path)
    runs.train(_config(tmp_path, path), verbose=0)
    assert (tmp_path / "run" / "student.keras").is_file()


# -- p5b-3: a NaN or negative class weight was named as a sample_weight ----------


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_a_bad_class_weight_is_named_as_such(bad):
    distiller = _distiller()
    class_weight = {i: 1.0 for i in range(10)}
    class_weight[3] = bad
    with pytest.raises(ValueError, match=r"`class_weight` gives class 3 the weight"):
        distiller.fit(X, Y, class_weight=class_weight, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`class_weight` gives class 3 the weight"):
        distiller.train_on_batch(X, Y, class_weight=class_weight)


# -- p5b-4: a weights file that is not one: h5py's message, without the file ----


def test_an_applications_weights_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=r"w\.h5' could not be loaded.*notop"):
        kd.applications.build("MobileNetV3Small", (8, 8, 1), 10, weights=str(path))


# -- p5b-5: int8 calibration on NaN inputs gave a model without a word ------------


def test_int8_calibration_refuses_non_finite_inputs(tmp_path):
    student = _model()
    student(X[:1])
    exported = kd.export_student(student, str(tmp_path / "s"), verbose=False)
    inputs = X.copy()
    inputs[5, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"finite.*Example 5 holds nan at index \(2,\)"
    ):
        kd.serving.quantize_int8(exported.path, inputs)
