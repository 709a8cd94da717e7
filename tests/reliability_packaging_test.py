"""Installing and starting keras_distill: the wheel, the extras, the command.

The wheel is built and installed into a fresh venv; a missing optional
package ends in one line naming its extra; the command answers `--help`,
`--version` and file mistakes without importing TensorFlow and prints none
of TensorFlow's start-up banner.
"""

import argparse
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import keras_distill_cli
from keras_distill import version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd=None, env=None, timeout=300):
    env = dict(os.environ if env is None else env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def imported_modules(stderr):
    """Top-level module names in a `python -X importtime` report."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


# --- the command line ---------------------------------------------------------


def all_actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for inner in all_actions(sub):
                    yield (name, *inner[1:]) if inner[0] == "" else inner
        else:
            yield ("", action)


def test_every_option_and_argument_has_help():
    missing = [
        f"{command or 'keras-distill'} {action.option_strings or action.dest}"
        for command, action in all_actions(keras_distill_cli.build_parser())
        if not action.help
    ]
    assert missing == []


@pytest.mark.parametrize("entry", [["-m", "keras_distill"], ["keras_distill_cli.py"]])
@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["train", "--help"], ["train"]]
)
def test_help_version_and_argument_errors_import_no_tensorflow(entry, args):
    result = run([sys.executable, "-X", "importtime", *entry, *args], cwd=ROOT)
    assert result.returncode == (2 if args == ["train"] else 0), result.stderr[-500:]
    assert "tensorflow" not in imported_modules(result.stderr)
    assert "keras" not in imported_modules(result.stderr)
    if args == ["--version"]:
        assert result.stdout.strip() == f"keras-distill {version.__version__}"


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "missing.yaml"], "missing.yaml: no such config file."),
        (["tune", "missing.yaml"], "missing.yaml: no such config file."),
        (["evaluate", "missing.keras"], "missing.keras: no such model file."),
        (["export", "missing.keras", "out"], "missing.keras: no such model file."),
    ],
)
def test_missing_files_fail_before_tensorflow_is_imported(tmp_path, args, message):
    result = run(
        [sys.executable, "-X", "importtime", "-m", "keras_distill", *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 2
    assert "tensorflow" not in imported_modules(result.stderr)
    errors = [line for line in result.stderr.splitlines() if "import time" not in line]
    assert errors == [f"keras-distill: error: {message}"]


def test_the_command_prints_no_tensorflow_banner(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip file")
    result = run(
        [sys.executable, "-m", "keras_distill", "evaluate", str(bad)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 2
    assert "oneDNN" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-distill: error:"), lines


def test_the_banner_filter_keeps_other_stderr_lines():
    assert keras_distill_cli._is_banner(
        "I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on. You may see"
    )
    assert not keras_distill_cli._is_banner("W0000 something else went wrong")


# --- missing optional packages ------------------------------------------------


def one_line_naming(error, extra):
    text = str(error)
    assert "\n" not in text
    assert f'pip install "keras-distill[{extra}]"' in text or (
        f'pip install ".[{extra}]"' in text
    ), text
    return True


def test_cli_missing_yaml_is_one_line_naming_the_app_extra(
    tmp_path, monkeypatch, capsys
):
    config = tmp_path / "run.yaml"
    config.write_text("data: digits\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert keras_distill_cli.main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-distill: error:"), err
    assert 'pip install "keras-distill[app]"' in err[0]


def test_app_config_without_yaml_names_the_app_extra():
    # In a fresh process: reloading the modules here would leave the other
    # tests holding a stale ConfigError class.
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "from keras_distill import version\n"
        "try:\n"
        "    import keras_distill.app.config\n"
        "except version.MissingExtraError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.strip().splitlines()) == 1
    assert 'pip install "keras-distill[app]"' in out.stdout, out.stdout


def test_cli_missing_package_in_a_command_is_one_line(tmp_path, monkeypatch, capsys):
    # sklearn missing: the digits data of `evaluate --data digits`.
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])
    model.add(keras.layers.Dense(10))
    path = tmp_path / "m.keras"
    model.save(path)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    code = keras_distill_cli.main(["evaluate", str(path), "--no-serving"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and 'pip install "keras-distill[data]"' in err[0], err


def missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_digits_without_sklearn(monkeypatch):
    from keras_distill import data

    missing(monkeypatch, "sklearn", "sklearn.datasets", "sklearn.model_selection")
    with pytest.raises(ImportError) as info:
        data.load_digits()
    assert one_line_naming(info.value, "data")


def test_mnist1d_without_mnist1d(monkeypatch):
    from keras_distill import data

    data._mnist1d_arrays.cache_clear()
    missing(monkeypatch, "mnist1d", "mnist1d.data")
    with pytest.raises(ImportError) as info:
        data.load_mnist1d()
    assert one_line_naming(info.value, "data")


def test_tfds_without_tensorflow_datasets(monkeypatch):
    from keras_distill import data

    missing(monkeypatch, "tensorflow_datasets")
    with pytest.raises(ImportError) as info:
        data.load_tfds("mnist")
    assert one_line_naming(info.value, "tfds")


def test_tuner_without_keras_tuner(monkeypatch):
    from keras_distill import tuner

    missing(monkeypatch, "keras_tuner")
    with pytest.raises(ImportError) as info:
        tuner._keras_tuner()
    assert one_line_naming(info.value, "tuner")


def test_plots_without_matplotlib(monkeypatch, tmp_path):
    from keras_distill.app import report
    from keras_distill.continual import metrics

    missing(monkeypatch, "matplotlib", "matplotlib.pyplot")
    with pytest.raises(ImportError) as info:
        report.plot_run({"val_accuracy": [0.5]}, str(tmp_path / "p.png"))
    assert one_line_naming(info.value, "app")
    with pytest.raises(ImportError) as info:
        metrics.plot_accuracy_matrices({}, str(tmp_path / "m.png"))
    assert one_line_naming(info.value, "app")
    assert not os.listdir(tmp_path)


def test_keras_hub_hint_names_the_lm_extra_and_its_no_deps_install(monkeypatch):
    missing(monkeypatch, "keras_hub")
    with pytest.raises(version.MissingExtraError) as info:
        version.require("keras_hub", "Language models")
    assert one_line_naming(info.value, "lm")
    assert "--no-deps keras-hub" in str(info.value)


def test_require_keeps_the_error_of_a_broken_installation(monkeypatch):
    # yaml is installed, but one of *its* imports fails: not a missing extra.
    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'x'", name="some_dependency")

    monkeypatch.setattr(version.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError) as info:
        version.require("yaml", "Reading a YAML run configuration")
    assert not isinstance(info.value, version.MissingExtraError)


def test_every_extra_named_by_the_table_exists_in_pyproject():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    for module, (package, extra) in version.EXTRAS.items():
        assert extra in extras, (module, extra)
        if module != "keras_hub":  # installed with --no-deps (see version.py)
            flat = " ".join(extras[extra] + extras["data"]).lower()
            assert package.lower() in flat, (module, package, extra)


# --- warm-up requests without tensorflow-serving-api --------------------------


def test_hand_encoded_prediction_log_equals_tensorflow_servings():
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from keras_distill import export

    # Long enough names and tensors for multi-byte varint lengths.
    for name, rows in (("digits", 1), ("m" * 200, 40)):
        tensor = tf.make_tensor_proto(
            np.arange(rows * 64, dtype="float32").reshape(rows, 8, 8, 1)
        )
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default")
        )
        request.inputs["image_" * 30].CopyFrom(tensor)
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        ours = export.prediction_log(name, "image_" * 30, tensor.SerializeToString())
        assert ours == log.SerializeToString()
        parsed = prediction_log_pb2.PredictionLog.FromString(ours)
        assert parsed.predict_log.request.model_spec.name == name


def test_export_without_tensorflow_serving_api_writes_warmup_requests(
    tmp_path, monkeypatch
):
    import keras
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    import keras_distill as kd

    student = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    missing(monkeypatch, "tensorflow_serving", "tensorflow_serving.apis")
    result = kd.export_student(
        student,
        tmp_path / "digits",
        sample_inputs=np.zeros((4, 8, 8, 1), "float32"),
        warmup_requests=3,
        verbose=False,
    )
    monkeypatch.undo()
    path = os.path.join(result.path, kd.export.WARMUP_FILE)
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
    assert len(logs) == 3
    request = logs[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs[result.input_name]).shape == (1, 8, 8, 1)


# --- the wheel ----------------------------------------------------------------

SOURCES = ("pyproject.toml", "README.md", "setup.cfg", "keras_distill_cli.py")


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """`python -m build`, then the wheel into a new venv (not the repo's).

    The venv is made by the base interpreter without system site packages;
    the wheel is installed with `--no-deps`, and the dependencies
    (TensorFlow, Keras, scikit-learn, ...) come from the test venv's
    site-packages through a `.pth` line appended after the venv's own (so the
    wheel's keras_distill, not the repository's, is the one imported; the
    test checks its path).
    """
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if os.path.exists(os.path.join(ROOT, name)):
            shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(
        os.path.join(ROOT, "keras_distill"),
        source / "keras_distill",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    assert built.returncode == 0, built.stderr[-2000:]
    wheels = [n for n in os.listdir(dist) if n.endswith(".whl")]
    sdists = [n for n in os.listdir(dist) if n.endswith(".tar.gz")]
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(dist)
    wheel = dist / wheels[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        os.path.relpath(os.path.join(root, f), source).replace(os.sep, "/")
        for root, _, files in os.walk(source / "keras_distill")
        for f in files
        if not f.endswith(".pyc")
    }
    assert modules <= names, sorted(modules - names)
    assert "keras_distill_cli.py" in names

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(site, "zz_test_dependencies.pth"), "w") as handle:
        handle.write("\n".join(ours) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    installed = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        env=env,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    check = (
        "import importlib.metadata as m, json, keras_distill as kd\n"
        "meta = m.metadata('keras-distill')\n"
        "print(json.dumps({'file': kd.__file__, 'version': kd.__version__,\n"
        "  'extras': meta.get_all('Provides-Extra'),\n"
        "  'requires': meta.get_all('Requires-Dist'),\n"
        "  'digits': int(kd.data.load_digits()['train'][0].shape[0]),\n"
        "  'distiller': kd.Distiller.__name__}))\n"
    )
    result = run([str(python), "-c", check], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["file"].startswith(site), info["file"]
    assert info["version"] == version.__version__
    assert {"app", "data", "tuner", "tfds", "lm"} <= set(info["extras"])
    requires = " ".join(info["requires"])
    for package in ("pyyaml", "matplotlib", "scikit-learn", "mnist1d", "keras-tuner"):
        assert package in requires, package
    assert info["digits"] > 0 and info["distiller"] == "Distiller"

    command = run([str(venv / "bin" / "keras-distill"), "--version"], env=env)
    assert command.returncode == 0, command.stderr
    assert command.stdout.strip() == f"keras-distill {version.__version__}"
    helped = run([str(python), "-m", "keras_distill", "--help"], env=env)
    assert helped.returncode == 0 and "train" in helped.stdout, helped.stderr

    # Each extra's requirements resolve (offline: against the packages the
    # venv sees), so `pip install "keras-distill[EXTRA]"` asks for nothing
    # that does not exist.
    for extra in ("", "[data]", "[app]", "[tuner]", "[tfds]", "[lm]", "[docs]"):
        resolved = run(
            [sys.executable, "-m", "pip", "--python", str(python), "install"]
            + ["--dry-run", "--no-index", "--quiet", f"{wheel}{extra}"],
            env=env,
        )
        assert resolved.returncode == 0, (extra, resolved.stderr[-2000:])
    # The Quickstart (the README's program, 2 epochs) on the installed wheel.
    quick = run(
        [str(python), os.path.join(ROOT, "examples", "quickstart.py")],
        cwd=tmp_path,
        env=dict(env, KERAS_DISTILL_QUICK="1"),
    )
    assert quick.returncode == 0, quick.stderr[-2000:]
    assert "'accuracy':" in quick.stdout
    assert (tmp_path / "serving" / "digits" / "1" / "saved_model.pb").is_file()
