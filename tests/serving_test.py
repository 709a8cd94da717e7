import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import serving
from keras_distill.app import report
from tests.helpers import digits_subset, tiny_student, trained_teacher


@pytest.fixture(scope="module")
def student_export(tmp_path_factory):
    x, y = digits_subset(n=256)
    student = kd.models.compile_classifier(tiny_student(hidden=16))
    student.fit(x, y, epochs=3, verbose=0)
    base = tmp_path_factory.mktemp("serving") / "digits"
    return student, kd.export_student(student, base, verbose=False)


def test_saved_model_predictor_matches_the_student(student_export):
    student, exported = student_export
    x, _ = digits_subset("test", n=16)
    predict = serving.saved_model_predictor(exported.path)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(student(x), axis=-1))
    np.testing.assert_allclose(predict(x)["probabilities"], expected, atol=1e-5)
    assert predict.input_name == exported.input_name


def test_measure_speed_times_every_predictor_and_counts_calls(student_export):
    _, exported = student_export
    x, _ = digits_subset("test", n=8)
    calls = {"a": [], "b": []}

    def recorder(name, predict):
        def record(batch):
            calls[name].append(len(batch))
            return predict(batch)

        return record

    predict = serving.saved_model_predictor(exported.path)
    speeds = serving.measure_speed(
        {n: recorder(n, predict) for n in calls},
        x,
        requests=30,
        throughput_batch=16,
        throughput_batches=6,
        rounds=3,
        warmup=2,
    )
    for name, speed in speeds.items():
        assert speed.requests == 30
        assert 0 < speed.latency_p50_ms <= speed.latency_p99_ms
        assert np.isfinite(speed.throughput) and speed.throughput > 0
        # Warm-up (2 + 1) and timed calls: 30 of one example, 6 batches of 16
        # (the 8 inputs repeated).
        assert calls[name].count(1) == 2 + 30
        assert calls[name].count(16) == 1 + 6


def test_int8_quantization_is_smaller_and_agrees_with_the_float_model(
    student_export, tmp_path
):
    _, exported = student_export
    x_train, _ = digits_subset(n=200)
    x_test, y_test = digits_subset("test", n=200)
    quantized = serving.quantize_int8(
        exported.path, x_train, output_path=str(tmp_path / "s.tflite")
    )
    assert quantized.calibration_examples == 200
    float_model = serving.saved_model_predictor(exported.path)
    int8_model = serving.tflite_predictor(quantized.path)
    float_probs = float_model(x_test)["probabilities"]
    int8_probs = int8_model(x_test)["probabilities"]  # any batch size
    assert int8_probs.shape == float_probs.shape
    agreement = np.mean(int8_probs.argmax(-1) == float_probs.argmax(-1))
    assert agreement >= 0.9, agreement
    assert np.max(np.abs(int8_probs - float_probs)) < 0.2
    float_accuracy, _ = serving.accuracy_and_loss(float_model, x_test, y_test)
    int8_accuracy, _ = serving.accuracy_and_loss(int8_model, x_test, y_test)
    assert abs(float_accuracy - int8_accuracy) <= 0.05
    # int8 weights: about a quarter of the float32 variables (plus the graph).
    assert quantized.size_bytes < exported.size_bytes / 3


def test_serving_comparison_exports_teacher_and_student_side_by_side(tmp_path):
    x, y = digits_subset("test", n=64)
    rows = report.serving_comparison(
        {
            "teacher": (trained_teacher(), str(tmp_path / "teacher")),
            "student": (tiny_student(hidden=8), str(tmp_path / "student")),
        },
        x,
        y,
        requests=20,
        warmup_requests=0,
    )
    assert list(rows) == ["teacher", "student"]
    assert rows["teacher"]["parameters"] > 10 * rows["student"]["parameters"]
    assert rows["teacher"]["size_bytes"] > rows["student"]["size_bytes"]
    assert rows["teacher"]["accuracy"] > 0.5  # trained; the student is not
    assert (tmp_path / "teacher" / "1" / "saved_model.pb").is_file()
    table = report.serving_markdown(rows, reference="teacher")
    assert "| teacher |" in table and "1.0x / 1.0x" in table


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictors": {}}, "non-empty dict"),
        ({"predictors": {"a": 3}}, "predictors['a']"),
        ({"inputs": np.zeros((0, 2))}, "non-empty array"),
        ({"requests": 0}, "requests=0"),
        ({"throughput_batch": 2.5}, "throughput_batch=2.5"),
    ],
)
def test_measure_speed_names_the_bad_argument(kwargs, message):
    arguments = {"predictors": {"a": lambda b: b}, "inputs": np.zeros((4, 2))}
    arguments.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        serving.measure_speed(**arguments)


def test_loaders_name_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="SavedModel folder"):
        serving.saved_model_predictor(tmp_path)
    with pytest.raises(FileNotFoundError, match="SavedModel folder"):
        serving.quantize_int8(tmp_path, np.zeros((4, 8, 8, 1)))
    with pytest.raises(FileNotFoundError, match=".tflite file"):
        serving.tflite_predictor(tmp_path / "none.tflite")
