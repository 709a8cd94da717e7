"""Distill, export for TF Serving, reload with TensorFlow alone, print a request.

KERAS_DISTILL_QUICK=1: a smoke run.
"""

import json
import os

import keras
import tensorflow as tf

import keras_distill as kd
from keras_distill import data, models

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def main():
    splits = data.load_digits()
    epochs = 2 if QUICK else 20
    teacher = models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*splits["train"], epochs=epochs, verbose=0)
    distiller = kd.Distiller(models.student_mlp(hidden=8), teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(*splits["train"], epochs=epochs, verbose=0)

    # Exported under distill_runs/ (git-ignored): kept for `docker run` below,
    # a new numbered version on every run.
    base = os.path.join("distill_runs", "export_example", "digits")
    result = kd.export_student(distiller, base)
    served = tf.saved_model.load(result.path).signatures["serving_default"]
    x_test, y_test = splits["test"]
    outputs = served(image=tf.constant(x_test[:5]))
    print("signature outputs:", sorted(outputs))
    print(
        "served classes:",
        outputs["classes"].numpy().tolist(),
        "labels:",
        y_test[:5].tolist(),
    )
    body = {
        "signature_name": "serving_default",
        "instances": [{"image": x_test[0].tolist()}],
    }
    print("REST body for POST /v1/models/digits:predict (first 120 chars):")
    print(json.dumps(body)[:120] + " ...")
    print(
        "serve with: docker run -p 8501:8501 "
        f"-v {os.path.abspath(base)}:/models/digits -e MODEL_NAME=digits "
        "tensorflow/serving"
    )


if __name__ == "__main__":
    main()
