import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import export
from keras_distill.app import cli
from tests.helpers import digits_subset, tiny_student, trained_teacher


@pytest.fixture(scope="module")
def distiller():
    x, y = digits_subset(n=128)
    d = kd.Distiller(student=tiny_student(), teacher=trained_teacher())
    d.compile(optimizer="adam")
    d.fit(x, y, epochs=1, verbose=0)
    return d


def test_layout_signature_and_versions(distiller, tmp_path):
    base = tmp_path / "digits"
    first = kd.export_student(distiller, base, verbose=False)
    second = kd.export_student(distiller, base, verbose=False)
    assert (first.version, second.version) == (1, 2)
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert first.outputs == ("classes", "logits", "probabilities")
    assert first.max_abs_diff <= 1e-5
    shown = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
            "show",
            "--dir",
            first.path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "inputs['image']" in shown
    for name in ("probabilities", "classes", "logits"):
        assert f"outputs['{name}']" in shown


def test_plain_tensorflow_process_reproduces_predictions(distiller, tmp_path):
    x, _ = digits_subset(n=16)
    result = kd.export_student(distiller, tmp_path / "m", verbose=False)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "assert 'keras_distill' not in sys.modules\n"
        f"m = tf.saved_model.load({result.path!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "out = m.signatures['serving_default'](image=tf.constant(x))\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, out['probabilities'].numpy())\n"
        "assert 'keras_distill' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, timeout=120
    )
    expected = keras.ops.softmax(distiller.predict(x, verbose=0)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)


def test_export_holds_the_student_only(distiller, tmp_path):
    result = kd.export_student(distiller, tmp_path / "m", verbose=False)
    loaded = tf.saved_model.load(result.path)
    student_params = distiller.student.count_params()
    teacher_params = distiller.teacher.count_params()
    exported = sum(int(np.prod(v.shape)) for v in loaded.variables)
    assert exported == student_params
    variables_bytes = sum(
        os.path.getsize(os.path.join(result.path, "variables", f))
        for f in os.listdir(os.path.join(result.path, "variables"))
    )
    assert variables_bytes < 4 * student_params + 16_384
    assert variables_bytes < 4 * teacher_params / 4


def test_probability_student_has_no_logits_output(tmp_path):
    student = keras.Sequential(
        [keras.Input((3,), name="features"), keras.layers.Dense(4, "softmax")]
    )
    teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    d = kd.Distiller(student=student, teacher=teacher, student_outputs="probabilities")
    result = kd.export_student(d, tmp_path / "m", verbose=False, input_name="x_in")
    assert result.outputs == ("classes", "probabilities")
    assert result.input_name == "x_in"


def test_crash_mid_export_leaves_no_version(distiller, tmp_path, monkeypatch):
    base = tmp_path / "m"
    kd.export_student(distiller, base, verbose=False)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash during verification")

    monkeypatch.setattr(export, "_verify", crash)
    with pytest.raises(KeyboardInterrupt):
        kd.export_student(distiller, base, verbose=False)
    assert os.listdir(base) == ["1"]


def test_killed_export_leaves_no_version_and_is_cleaned_later(distiller, tmp_path):
    base = tmp_path / "m"
    stale = base / f"{export._TMP_PREFIX}1-999999-abcdef12"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half written")
    assert export.existing_versions(base) == []
    kd.export_student(distiller, base, verbose=False)
    assert os.listdir(base) == ["1"]


def test_verification_failure_writes_nothing(distiller, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_ABS_DIFF", -1.0)
    with pytest.raises(export.ExportVerificationError, match="differ"):
        kd.export_student(distiller, tmp_path / "m", verbose=False)
    assert os.listdir(tmp_path / "m") == []


def test_warmup_file_parses_as_prediction_logs(distiller, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    result = kd.export_student(
        distiller, tmp_path / "digits", warmup_requests=3, verbose=False
    )
    path = os.path.join(result.path, export.WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    assert len(logs) == 3
    request = logs[0].predict_log.request
    assert request.model_spec.name == "digits"
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["image"]).shape == (1, 8, 8, 1)


def test_cli_export_from_saved_distiller(distiller, tmp_path, capsys):
    path = tmp_path / "d.keras"
    distiller.save(path)
    assert cli.main(["export", str(path), str(tmp_path / "serve")]) == 0
    assert os.listdir(tmp_path / "serve") == ["1"]
    assert "verified" in capsys.readouterr().out


# -- Bad input ----------------------------------------------------------------


def test_existing_version_is_never_overwritten(distiller, tmp_path):
    kd.export_student(distiller, tmp_path / "m", version=3, verbose=False)
    before = os.path.getmtime(tmp_path / "m" / "3" / "saved_model.pb")
    with pytest.raises(FileExistsError, match=r"Version 3 already exists.*\[3\]"):
        kd.export_student(distiller, tmp_path / "m", version=3, verbose=False)
    assert os.path.getmtime(tmp_path / "m" / "3" / "saved_model.pb") == before


@pytest.mark.parametrize("version", [1.5, "two", 0, "0", -1, True, 2**63, "9" * 20])
def test_bad_version(distiller, tmp_path, version):
    with pytest.raises(ValueError, match=r"version"):
        kd.export_student(distiller, tmp_path / "m", version=version, verbose=False)


def test_base_dir_that_is_a_file(distiller, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        kd.export_student(distiller, path, verbose=False)


def test_unknown_input_shape_asks_for_signature(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    student = Subclassed()
    student(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="input_signature"):
        kd.export_student(student, tmp_path / "m", verbose=False)
    result = kd.export_student(
        student,
        tmp_path / "m",
        input_signature=tf.TensorSpec((None, 5), "float32", name="x"),
        verbose=False,
    )
    assert result.version == 1


def test_a_version_published_meanwhile_moves_an_automatic_export_on(
    distiller, tmp_path, monkeypatch
):
    base = tmp_path / "m"
    verify = export._verify

    def another_process_publishes_version_1(path, *args):
        if not (base / "1").exists():
            (base / "1").mkdir()
            (base / "1" / "saved_model.pb").write_bytes(b"the other export")
        return verify(path, *args)

    monkeypatch.setattr(export, "_verify", another_process_publishes_version_1)
    result = kd.export_student(distiller, base, verbose=False)
    assert result.version == 2
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the other export"

    # An explicit version that appeared meanwhile is an error, never overwritten.
    def another_process_publishes_version_5(path, *args):
        (base / "5").mkdir()
        (base / "5" / "saved_model.pb").write_bytes(b"version 5 of the other")
        return verify(path, *args)

    monkeypatch.setattr(export, "_verify", another_process_publishes_version_5)
    with pytest.raises(FileExistsError, match="Version 5 appeared"):
        kd.export_student(distiller, base, version=5, verbose=False)
    assert sorted(os.listdir(base)) == ["1", "2", "5"]
    assert (base / "5" / "saved_model.pb").read_bytes() == b"version 5 of the other"


def test_two_processes_exporting_at_once_get_two_versions(distiller, tmp_path):
    model = str(tmp_path / "d.keras")
    distiller.save(model)
    base = str(tmp_path / "serving")
    script = (
        "import sys, time; import keras_distill as kd; "
        "from keras_distill import export; "
        "m = export.load_for_export(sys.argv[1]); "
        "[time.sleep(0.01) for _ in iter(lambda: time.time() < float(sys.argv[3]), False)]; "
        "print(kd.export_student(m, sys.argv[2], verbose=False).version)"
    )
    import time

    start = str(time.time() + 25)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, model, base, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    versions = sorted(int(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert versions == [1, 2]
    assert sorted(os.listdir(base)) == ["1", "2"]
