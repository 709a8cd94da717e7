"""Wall time of a tuner search: teacher computed once vs teacher in every step.

Runs the same N-trial random search twice, interleaved trial budget and seed
identical: once with `DistillerHyperModel` (the teacher's outputs computed once
per search and reused by every trial), once with a variant that distills
online (the teacher runs in every training and validation step). Prints both
wall times and their ratio.

Run: `.venv/bin/python benchmarks/tuner_teacher_once.py` (about 2 minutes).
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill import data, models  # noqa: E402

TRIALS = int(os.environ.get("TRIALS", 4))
EPOCHS = int(os.environ.get("EPOCHS", 3))


def teacher_model():
    """A teacher much bigger than the student (about 0.6M parameters)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def build_student(hp):
    return models.student_mlp(hidden=hp.Choice("hidden", [8, 16]))


def online_hypermodel(teacher):
    base = kd.DistillerHyperModel

    class Online(base):
        def fit(self, hp, model, x, y, validation_data=None, batch_size=32, **kwargs):
            kwargs.pop("shuffle", None)
            return model.fit(
                x, y, validation_data=validation_data, batch_size=batch_size, **kwargs
            )

    return Online(teacher, build_student)


def search(hypermodel, train, val, directory):
    import keras_tuner as kt

    tuner = kt.RandomSearch(
        hypermodel,
        objective="val_accuracy",
        max_trials=TRIALS,
        directory=directory,
        seed=0,
        overwrite=True,
    )
    start = time.perf_counter()
    tuner.search(*train, validation_data=val, epochs=EPOCHS, batch_size=32, verbose=0)
    return time.perf_counter() - start


def main():
    splits = data.load_digits()
    train, val = splits["train"], splits["val"]
    keras.utils.set_random_seed(0)
    teacher = teacher_model()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*train, epochs=2, verbose=0)
    times = {"teacher computed once": [], "teacher in every step": []}
    with tempfile.TemporaryDirectory() as directory:
        for rep in range(2):
            for name in times:
                hypermodel = (
                    kd.DistillerHyperModel(teacher, build_student)
                    if name == "teacher computed once"
                    else online_hypermodel(teacher)
                )
                path = os.path.join(directory, f"{rep}-{name.replace(' ', '_')}")
                times[name].append(search(hypermodel, train, val, path))
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{TRIALS} trials x {EPOCHS} epochs on digits ({len(train[0])} examples); "
        f"teacher {teacher.count_params():,} parameters, student about 1k; "
        f"{os.cpu_count()} CPU cores; best of 2 interleaved runs"
    )
    print("| search | wall time (s) |")
    print("|---|---:|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} |")
    ratio = best["teacher in every step"] / best["teacher computed once"]
    print(f"| speed-up from computing the teacher once | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
