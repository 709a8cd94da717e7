"""Distill two teachers (an ensemble) into one student on the digits.

Teachers' softened distributions are averaged in probability space (Hinton
et al. 2015). Prints test accuracy of each teacher, a student from one
teacher, and a student from both. KERAS_DISTILL_QUICK=1: a smoke run.
"""

import os

import keras
import numpy as np

import keras_distill as kd
from keras_distill import data, models

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main():
    splits = data.load_digits()
    (x, y), val, (x_test, y_test) = splits["train"], splits["val"], splits["test"]
    epochs = 2 if QUICK else 20
    teachers = []
    for seed, name in ((0, "cnn_a"), (1, "cnn_b")):
        keras.utils.set_random_seed(seed)
        teacher = models.teacher_cnn(name=name)
        teacher.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(x, y, epochs=epochs, verbose=0)
        teachers.append(teacher)
    rows = [(t.name, accuracy(t, x_test, y_test)) for t in teachers]
    for label, teacher in (
        ("student from cnn_a", teachers[0]),
        ("student from both", teachers),
    ):
        keras.utils.set_random_seed(2)
        student = models.student_mlp(hidden=8)
        distiller = kd.Distiller(student, teacher, alpha=0.1, temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
        distiller.fit(x, y, validation_data=val, epochs=2 * epochs, verbose=0)
        rows.append((label, accuracy(student, x_test, y_test)))
    print("| model | test accuracy |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
