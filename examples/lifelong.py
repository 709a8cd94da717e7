"""Lifelong learning on the digits: learn 0-4, then 5-9, without forgetting 0-4.

Compares plain fine-tuning of the shared trunk with Learning without
Forgetting (Li & Hoiem 2016) and prints old- and new-task test accuracy.
Set KERAS_DISTILL_QUICK=1 for a smoke run.
"""

import os

import keras
import numpy as np

import keras_distill as kd
from keras_distill import data

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def split(x, y, classes):
    keep = np.isin(y, classes)
    return x[keep], y[keep] - min(classes)


def old_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(5, name="task1"),
        ],
        name="task1_model",
    )


def run(task1_epochs=30, task2_epochs=30, seed=0, verbose=0):
    """Returns {method: (old-task accuracy, new-task accuracy)}."""
    splits = data.load_digits(seed=0)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    task1, task2 = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    train1, train2 = split(x_train, y_train, task1), split(x_train, y_train, task2)
    test1, test2 = split(x_test, y_test, task1), split(x_test, y_test, task2)

    keras.utils.set_random_seed(seed)
    model = old_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(*train1, epochs=task1_epochs, batch_size=32, verbose=verbose)
    before = float(
        np.mean(np.argmax(model.predict(test1[0], verbose=0), -1) == test1[1])
    )
    results = {"after task 1": (before, float("nan"))}
    # alpha=1 is plain fine-tuning: only the new task's loss trains the trunk.
    for name, alpha in (("fine-tuning", 1.0), ("LwF", 0.5)):
        keras.utils.set_random_seed(seed + 1)
        student = kd.continual.add_task_head(model, num_classes=5)
        lwf = kd.continual.LearningWithoutForgetting(
            student, model, alpha=alpha, temperature=2.0
        )
        lwf.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
        lwf.fit(*train2, epochs=task2_epochs, batch_size=32, verbose=verbose)
        old_logits, _ = lwf.predict(test1[0], verbose=0)
        _, new_logits = lwf.predict(test2[0], verbose=0)
        results[name] = (
            float(np.mean(np.argmax(old_logits, -1) == test1[1])),
            float(np.mean(np.argmax(new_logits, -1) == test2[1])),
        )
    return results


def main():
    epochs = 3 if QUICK else 30
    results = run(task1_epochs=epochs, task2_epochs=epochs)
    print("| method | old task (0-4) accuracy | new task (5-9) accuracy |")
    print("|---|---:|---:|")
    for name, (old, new) in results.items():
        new_text = "-" if np.isnan(new) else f"{new:.3f}"
        print(f"| {name} | {old:.3f} | {new_text} |")


if __name__ == "__main__":
    main()
