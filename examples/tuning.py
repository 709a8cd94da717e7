"""Search temperature, alpha and the student's width with Keras Tuner.

The teacher's outputs are computed once for the whole search. Prints the
trial table and the best hyperparameters. KERAS_DISTILL_QUICK=1: a smoke run.
"""

import os

import keras

import keras_distill as kd
from keras_distill import data, models

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def build_student(hp):
    return models.student_mlp(hidden=hp.Choice("hidden", [8, 16, 32]))


def main():
    splits = data.load_digits()
    keras.utils.set_random_seed(0)
    teacher = models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*splits["train"], epochs=2 if QUICK else 20, verbose=0)
    best_hp, distiller, _ = kd.tune(
        teacher,
        build_student,
        splits["train"],
        splits["val"],
        max_trials=2 if QUICK else 10,
        epochs=2 if QUICK else 15,
        directory="distill_runs/tuning",
        overwrite=True,
    )
    accuracy = distiller.evaluate(*splits["test"], verbose=0, return_dict=True)[
        "accuracy"
    ]
    print("best hyperparameters:", best_hp.values)
    print(f"best student's test accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()
