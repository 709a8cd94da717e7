"""Distill two teachers (an ensemble) into one student on the digits.

Teachers' softened distributions are averaged in probability space (Hinton
et al. 2015). Prints test accuracy of each teacher, and of the same student
trained from scratch, from one teacher and from both (mean and range over
student seeds). KERAS_DISTILL_QUICK=1: a smoke run.
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
    rows = [(t.name, [accuracy(t, x_test, y_test)]) for t in teachers]
    seeds = (2,) if QUICK else (2, 3, 4)
    for label, teacher in (
        ("student from scratch", None),
        ("student from cnn_a", teachers[0]),
        ("student from both", teachers),
    ):
        scores = []
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            student = models.student_mlp(hidden=8)
            if teacher is None:
                model = models.compile_classifier(student, learning_rate=1e-2)
            else:
                model = kd.Distiller(student, teacher, alpha=0.1, temperature=4.0)
                model.compile(
                    optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"]
                )
            model.fit(x, y, validation_data=val, epochs=2 * epochs, verbose=0)
            scores.append(accuracy(student, x_test, y_test))
        rows.append((label, scores))
    print(f"Test accuracy: mean (min-max) over student seeds {list(seeds)}")
    print("| model | test accuracy |")
    print("|---|---:|")
    for name, values in rows:
        text = f"{np.mean(values):.3f}"
        if len(values) > 1:
            text += f" ({min(values):.3f}-{max(values):.3f})"
        print(f"| {name} | {text} |")


if __name__ == "__main__":
    main()
