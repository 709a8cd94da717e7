"""The README Quickstart on TensorFlow and on JAX: test accuracy over seeds.

Runs the Quickstart's training (teacher 40 epochs, distiller 45 with the
temperature schedule) in a child process per backend and seed, one at a
time, and prints each backend's mean and spread (min-max) of the test
accuracy. Each JAX run's `export_student` SavedModel is then loaded by a
TensorFlow-only process (`KERAS_BACKEND=tensorflow`, no keras_distill),
which serves the test set; its accuracy must equal the student's.

Run: `.venv/bin/python benchmarks/quickstart_backends.py` (SEEDS=3 by default;
about 3 minutes on 2 CPU cores).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = int(os.environ.get("SEEDS", 3))

_TRAIN = r"""
import json, sys
import keras
import numpy as np
import keras_distill as kd

seed, out = int(sys.argv[1]), sys.argv[2]
digits = kd.data.load_digits()
(x_train, y_train), (x_val, y_val), (x_test, y_test) = (
    digits["train"], digits["val"], digits["test"]
)
keras.utils.set_random_seed(seed)
teacher = kd.models.compile_classifier(kd.models.teacher_cnn(), learning_rate=3e-3)
teacher.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
keras.utils.set_random_seed(seed + 1)
distiller = kd.Distiller(
    student=kd.models.student_mlp(hidden=8), teacher=teacher, alpha=0.1, temperature=4.0
)
distiller.compile(
    optimizer=keras.optimizers.Adam(1e-2),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
distiller.fit(
    x_train, y_train, validation_data=(x_val, y_val), epochs=45, batch_size=32,
    verbose=0,
    callbacks=[  # T from 8 to 2
        kd.callbacks.ParameterScheduler(
            "temperature", kd.schedules.linear(8.0, 2.0, 44)
        )
    ],
)
result = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
export = kd.export_student(distiller, out + "/serving", verbose=False)
np.save(out + "/x_test.npy", x_test)
np.save(out + "/y_test.npy", y_test)
print(json.dumps({"accuracy": result["accuracy"], "export": export.path}))
"""

_SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
x, y = np.load(sys.argv[2] + "/x_test.npy"), np.load(sys.argv[2] + "/y_test.npy")
classes = served(image=tf.constant(x))["classes"].numpy()
print(json.dumps({"accuracy": float(np.mean(classes == y)),
                  "keras_distill": "keras_distill" in sys.modules}))
"""


def child(code, backend, *args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = ROOT
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    found = {}
    for backend in ("tensorflow", "jax"):
        found[backend] = []
        for seed in range(SEEDS):
            with tempfile.TemporaryDirectory() as directory:
                run = child(_TRAIN, backend, str(seed), directory)
                served = child(_SERVE, "tensorflow", run["export"], directory)
            found[backend].append(run["accuracy"])
            print(
                f"{backend:10s} seed {seed}: test accuracy {run['accuracy']:.4f}; "
                f"its export served by TensorFlow alone: {served['accuracy']:.4f}",
                flush=True,
            )
            assert not served["keras_distill"]
            assert abs(served["accuracy"] - run["accuracy"]) < 1e-6
    print()
    print("| backend | mean test accuracy | min | max |")
    print("|---|---:|---:|---:|")
    for backend, values in found.items():
        print(
            f"| {backend} | {statistics.mean(values):.4f} | {min(values):.4f} | "
            f"{max(values):.4f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import docblocks

    # `--docs` also writes the report into docs/backends.md's block.
    with docblocks.report("docs/backends.md", "backend-quickstart"):
        main()
