"""tf.distribute: MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so each
scenario runs in its own Python process, bounded in time.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_distill as kd
    from keras_distill import data, models
    x, y = data.load_digits()["train"]
    x, y = x[:256], y[:256]

    def make(strategy=None):
        keras.utils.set_random_seed(0)
        teacher, student = models.teacher_cnn(), models.student_mlp()
        d = kd.Distiller(student, teacher, alpha=0.3, temperature=3.0)
        d.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        return d
    """
)


def run(code, tmp_path, timeout=240):
    script = tmp_path / "scenario.py"
    script.write_text(_PRELUDE + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(tmp_path):
    result = run(
        """
        single = make()
        h1 = single.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        e1 = single.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = make()
        h2 = mirrored.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        e2 = mirrored.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        mirrored.save("m.keras")
        loaded = keras.models.load_model("m.keras")
        diff = float(np.abs(loaded.predict(x, verbose=0)
                            - mirrored.predict(x, verbose=0)).max())
        weights = max(float(np.abs(a - b).max()) for a, b in zip(
            single.student.get_weights(), mirrored.student.get_weights()))
        print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                          "single": h1.history, "mirrored": h2.history,
                          "eval_single": e1, "eval_mirrored": e2,
                          "load_diff": diff, "weights_diff": weights}))
        """,
        tmp_path,
    )
    assert result["replicas"] == 2
    for key in ("loss", "student_loss", "distillation_loss"):
        for a, b in zip(result["single"][key], result["mirrored"][key]):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (key, a, b)
        a, b = result["eval_single"][key], result["eval_mirrored"][key]
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (key, a, b)
    # The global-batch loss is not inflated by the replica count.
    assert result["eval_mirrored"]["loss"] < 2 * result["single"]["loss"][0]
    assert result["weights_diff"] < 1e-4
    assert result["load_diff"] < 1e-5
