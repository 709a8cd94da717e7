"""Transfer distillation on the digits: a 10-class teacher teaches "< 5 vs >= 5".

The teacher was trained on all ten digits (the source task); the student
predicts a re-grouped label set (the target task). `GroupedTeacher` sums the
teacher's probabilities into the target groups. Prints student accuracy on
the target task: from scratch vs distilled from the grouped teacher, both on
a small labelled training set. Set KERAS_DISTILL_QUICK=1 for a smoke run.
"""

import os

import keras
import numpy as np

import keras_distill as kd
from keras_distill import data, models

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"
GROUPS = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def run(teacher_epochs=20, student_epochs=40, labelled=150, seed=0, verbose=0):
    splits = data.load_digits(seed=0)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    to_target = np.array([0] * 5 + [1] * 5)
    keras.utils.set_random_seed(seed)
    teacher = models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x_train, y_train, epochs=teacher_epochs, batch_size=32, verbose=verbose)
    # The target task has few labels; the teacher also sees unlabeled data.
    x_small, y_small = x_train[:labelled], to_target[y_train[:labelled]]
    results = {}
    for name in ("student (scratch)", "student (transfer-distilled)"):
        keras.utils.set_random_seed(seed + 1)
        student = models.student_mlp(num_classes=2, hidden=8)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if name == "student (scratch)":
            student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
            student.fit(x_small, y_small, epochs=student_epochs, verbose=verbose)
        else:
            grouped = kd.transfer.GroupedTeacher(teacher, GROUPS)
            distiller = kd.Distiller(student, grouped, alpha=0.5, temperature=2.0)
            distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
            distiller.fit(x_small, y_small, epochs=student_epochs // 2, verbose=verbose)
            # Hinton's transfer set: unlabeled examples train on the KD term.
            distiller.fit(x_train, epochs=student_epochs // 2, verbose=verbose)
        predictions = np.argmax(student.predict(x_test, verbose=0), -1)
        results[name] = float(np.mean(predictions == to_target[y_test]))
    return results


def main():
    # The teacher is trained once per seed too (seed 0 for all in quick mode).
    seeds = (0,) if QUICK else (0, 1, 2)
    runs = [
        run(teacher_epochs=2, student_epochs=4, seed=s) if QUICK else run(seed=s)
        for s in seeds
    ]
    print(f"Test accuracy: mean (min-max) over seeds {list(seeds)}")
    print("| student for '< 5' vs '>= 5' | test accuracy |")
    print("|---|---:|")
    for name in runs[0]:
        values = [r[name] for r in runs]
        text = f"{np.mean(values):.3f}"
        if len(values) > 1:
            text += f" ({min(values):.3f}-{max(values):.3f})"
        print(f"| {name} | {text} |")


if __name__ == "__main__":
    main()
