"""Feature (hint) distillation, FitNets, on the digits.

A tiny CNN student (`models.student_cnn`, 4 filters) learns from the
`models.teacher_cnn` teacher in three ways: from labels alone, with KD, and
with KD plus a hint: its `"conv1"` features, through a trainable 1x1
convolution, regressed onto the teacher's `"conv2"` features (Romero et al.
2015), and the same with FitNets-style stages: the hint's weight scheduled
from 1 to 0 after the first third of the epochs (`hint_weight` is a variable,
set by `ParameterScheduler`). Prints test accuracy (mean over seeds) and the
test hint loss before and after training (the hint term itself, without
`hint_weight`). KERAS_DISTILL_QUICK=1 (or --quick): a smoke run.
"""

import os
import sys

import keras
import numpy as np

import keras_distill as kd
from keras_distill import data, models

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1" or "--quick" in sys.argv
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def train_student(kind, teacher, train, val, test, epochs, seed):
    """Returns `(test accuracy, hint loss before, hint loss after)`."""
    keras.utils.set_random_seed(seed)
    student = models.student_cnn(filters=4)
    optimizer = keras.optimizers.Adam(1e-2)
    if kind == "scratch":
        student.compile(optimizer=optimizer, loss=LOSS)
        student.fit(*train, validation_data=val, epochs=epochs, verbose=0)
        return accuracy(student, *test), None, None
    hints = [kd.hints.Hint("conv2", "conv1")] if kind != "kd" else None
    distiller = kd.Distiller(student, teacher, alpha=0.1, temperature=4.0, hints=hints)
    distiller.compile(optimizer=optimizer, metrics=["accuracy"])
    callbacks = []
    if kind == "stages":
        stage = kd.schedules.step([max(1, epochs // 3)], [1.0, 0.0])
        callbacks.append(kd.callbacks.ParameterScheduler("hint_weight", stage))
    before = distiller.evaluate(*test, verbose=0, return_dict=True).get("hint_loss")
    distiller.fit(
        *train, validation_data=val, epochs=epochs, verbose=0, callbacks=callbacks
    )
    after = distiller.evaluate(*test, verbose=0, return_dict=True).get("hint_loss")
    return accuracy(student, *test), before, after


def main():
    splits = data.load_digits()
    train, val, test = splits["train"], splits["val"], splits["test"]
    epochs = 2 if QUICK else 30
    seeds = [0] if QUICK else [0, 1, 2]
    keras.utils.set_random_seed(0)
    teacher = models.teacher_cnn()
    teacher.compile(optimizer="adam", loss=LOSS)
    teacher.fit(*train, validation_data=val, epochs=epochs, verbose=0)
    teacher_accuracy = accuracy(teacher, *test)
    rows = [("teacher (teacher_cnn)", teacher.count_params(), [teacher_accuracy])]
    params = models.student_cnn(filters=4).count_params()
    results = {}
    for label, kind in (
        ("student from scratch", "scratch"),
        ("student, KD", "kd"),
        ("student, KD + hint (conv1 -> conv2)", "hint"),
        ("student, KD + hint, then KD (hint_weight 1 -> 0)", "stages"),
    ):
        runs = [
            train_student(kind, teacher, train, val, test, epochs, s) for s in seeds
        ]
        results[label] = runs
        rows.append((label, params, [r[0] for r in runs]))

    def fmt(value):
        return "-" if value is None else f"{value:.4f}"

    print(
        f"Test accuracy: mean (min-max) over student seeds {seeds}; "
        f"{epochs} epochs each."
    )
    print("| model | parameters | test accuracy | hint loss before | hint loss after |")
    print("|---|---:|---:|---:|---:|")
    for label, count, accs in rows:
        acc = f"{np.mean(accs):.4f}"
        if len(accs) > 1:
            acc += f" ({min(accs):.4f}-{max(accs):.4f})"
        runs = results.get(label, [(None, None, None)])
        before = None if runs[0][1] is None else np.mean([r[1] for r in runs])
        after = None if runs[0][2] is None else np.mean([r[2] for r in runs])
        print(f"| {label} | {count:,} | {acc} | {fmt(before)} | {fmt(after)} |")


if __name__ == "__main__":
    main()
