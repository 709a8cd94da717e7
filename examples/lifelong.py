"""Lifelong learning on the digits: learn one task of 5 classes, then another.

Learning without Forgetting (Li & Hoiem 2016) as in the paper: the new head
is first trained alone with the trunk frozen (the warm-up, by default until
its loss on a held-out 20% of the new task's training data stops
improving: `warm_up_head(..., epochs="auto")`), then everything
trains on the new task's labels plus the KD term towards the old model at
T = 2 with the paper's lambda_o = 1, which is our alpha = T^2 / (T^2 + 1)
= 0.8 (`kd.continual.alpha_for_lambda`). Compared with plain fine-tuning of
the shared trunk (alpha = 1), with and without the same warm-up. Prints old-
and new-task test accuracy.

Run with a split and seed: `python examples/lifelong.py 0,2,4,6,8 1`.
Set KERAS_DISTILL_QUICK=1 for a smoke run.
"""

import os
import sys

import keras
import numpy as np

import keras_distill as kd
from keras_distill import data

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"
METHODS = ("fine-tuning", "fine-tuning + warm-up", "LwF")


def split(x, y, classes):
    keep = np.isin(y, classes)
    return x[keep], np.searchsorted(classes, y[keep])


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


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def run(
    task1_epochs=30,
    task2_epochs=30,
    seed=0,
    task1=(0, 1, 2, 3, 4),
    warmup_epochs="auto",
    methods=METHODS,
    verbose=0,
):
    """Returns {method: (old-task accuracy, new-task accuracy)}."""
    splits = data.load_digits(seed=0)
    task1 = sorted(task1)
    task2 = sorted(set(range(10)) - set(task1))
    train1, train2 = (split(*splits["train"], t) for t in (task1, task2))
    test1, test2 = (split(*splits["test"], t) for t in (task1, task2))

    keras.utils.set_random_seed(seed)
    model = old_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(*train1, epochs=task1_epochs, batch_size=32, verbose=verbose)
    results = {
        "after task 1": (
            accuracy(model.predict(test1[0], verbose=0), test1[1]),
            float("nan"),
        )
    }
    lwf_alpha = kd.continual.alpha_for_lambda(1.0, temperature=2.0)  # 0.8
    for name in methods:
        keras.utils.set_random_seed(seed + 1)
        student = kd.continual.add_task_head(model, num_classes=len(task2))
        if name != "fine-tuning" and warmup_epochs:
            kd.continual.warm_up_head(
                student, *train2, epochs=warmup_epochs, seed=seed + 1
            )
        # alpha=1 is plain fine-tuning: only the new task's loss trains the trunk.
        lwf = kd.continual.LearningWithoutForgetting(
            student, model, alpha=lwf_alpha if name == "LwF" else 1.0, temperature=2.0
        )
        lwf.compile(optimizer=keras.optimizers.Adam(1e-2))
        lwf.fit(*train2, epochs=task2_epochs, batch_size=32, verbose=verbose)
        old_logits, _ = lwf.predict(test1[0], verbose=0)
        _, new_logits = lwf.predict(test2[0], verbose=0)
        results[name] = (accuracy(old_logits, test1[1]), accuracy(new_logits, test2[1]))
    return results


def main():
    epochs = 3 if QUICK else 30
    task1 = (0, 1, 2, 3, 4)
    if len(sys.argv) > 1:
        task1 = tuple(int(c) for c in sys.argv[1].split(","))
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    results = run(
        task1_epochs=epochs,
        task2_epochs=epochs,
        seed=seed,
        task1=task1,
        warmup_epochs=3 if QUICK else "auto",
    )
    print(f"task 1: classes {list(task1)}; task 2: the others; seed {seed}")
    print("| method | old task accuracy | new task accuracy |")
    print("|---|---:|---:|")
    for name, (old, new) in results.items():
        new_text = "-" if np.isnan(new) else f"{new:.3f}"
        print(f"| {name} | {old:.3f} | {new_text} |")


if __name__ == "__main__":
    main()
