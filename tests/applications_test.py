"""keras.applications teachers and students: in Python, in configs, in the CLI."""

import json
import sys

import keras
import numpy as np
import pytest

from keras_distill import applications
from keras_distill.app import cli, config
from keras_distill.app.config import ConfigError

MOBILENET = "keras.applications.MobileNetV3Small"


@pytest.mark.parametrize("shape", [(8, 8, 1), (40, 50, 3)])
def test_builds_a_logit_classifier_for_images_of_any_size(shape):
    model = applications.build(MOBILENET, shape, num_classes=7, name="student")
    assert model.input_shape == (None, *shape) and model.output_shape == (None, 7)
    assert model.layers[-1].activation is keras.activations.linear
    # Grey images become RGB, small ones are resized up to the 32-pixel minimum.
    names = [layer.name for layer in model.layers]
    assert ("to_rgb" in names) == (shape[-1] == 1)
    assert ("resize" in names) == (shape[0] < 32)


def test_a_weights_file_is_loaded_into_the_backbone(tmp_path):
    donor = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = str(tmp_path / "mobilenet_notop.weights.h5")
    donor.save_weights(path)
    model = applications.build(MOBILENET, (32, 32, 3), num_classes=3, weights=path)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for a, b in zip(donor.weights, backbone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "student, message",
    [
        ("{model: keras.applications.ResNet9000}", "is not one of the keras.appl"),
        (
            "{model: keras.applications.MobileNetV3Small, weights: imagenet}",
            "needs a download",
        ),
        (
            "{model: keras.applications.EfficientNetB0, weights: no/such.h5}",
            "no such file",
        ),
        ("{model: student_mlp, weights: w.h5}", "student.weights is for keras"),
        ("{model: mobilenet}", "keras.applications.NAME"),
    ],
)
def test_config_refuses_bad_application_models(student, message):
    text = f"data: digits\noutput: runs/x\nstudent: {student}\n"
    with pytest.raises(ConfigError, match=message):
        config.parse(text)


def test_config_mistakes_are_found_before_tensorflow_loads(tmp_path):
    import subprocess

    cfg = tmp_path / "c.yaml"
    cfg.write_text("output: o\nteacher: {model: keras.applications.MobileNetV3}\n")
    code = (
        "import sys, keras_distill_cli\n"
        f"code = keras_distill_cli.main(['train', {str(cfg)!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stderr[-2000:]
    assert "is not one of the keras.applications" in out.stderr


@pytest.mark.slow
def test_cli_distils_into_a_mobilenet_student_that_loads_and_serves(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: digits\noutput: {out}\nteacher: {{epochs: 1}}\n"
        f"student: {{model: {MOBILENET}}}\ndistill: {{epochs: 1}}\n"
    )
    assert cli.main(["train", str(cfg)]) == 0
    student = keras.models.load_model(out / "student.keras", safe_mode=True)
    assert student.input_shape == (None, 8, 8, 1)
    rows = json.loads((out / "run.json").read_text())["rows"]
    assert rows[1]["parameters"] == student.count_params()
    assert (out / "serving" / "1" / "saved_model.pb").is_file()
