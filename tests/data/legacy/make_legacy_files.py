"""Writes the `.keras` files of tests/data/legacy/ (run once, on main 8fac406).

The files were saved by the library before the terms/ and distiller/ packages
(issue 28); `tests/legacy_files_test.py` loads each one with today's code and
compares its predictions with the ones saved beside it. Do not regenerate
them: they are the old format on purpose.

    python tests/data/legacy/make_legacy_files.py
"""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill import data, models  # noqa: E402

HERE = pathlib.Path(__file__).parent


def main():
    x, y = data.load_digits(seed=0)["train"]
    x, y = x[:128], y[:128]
    keras.utils.set_random_seed(0)
    teacher = models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x, y, epochs=2, batch_size=32, verbose=0)

    def student():
        return models.student_mlp(hidden=16)

    cases = {
        "kd": lambda: kd.Distiller(student(), teacher, alpha=0.3, temperature=3.0),
        "terms": lambda: kd.Distiller(
            student(),
            teacher,
            distillation_loss=[
                "kd",
                kd.losses.DKDTerm(beta=2.0),
                kd.losses.CTKDTerm("kd"),
                kd.losses.KDTerm(standardize=True, name="ls_kd"),
                "mse",
            ],
            distillation_loss_weights=[0.5, 0.2, 0.1, 0.1, 0.1],
        ),
        "hints": lambda: kd.Distiller(
            models.student_cnn(),
            teacher,
            hints=[
                kd.hints.Hint("conv2", "conv1"),
                kd.hints.Hint(
                    "flatten",
                    "flatten",
                    loss=kd.losses.RKDDistanceTerm(),
                    adaptor=None,
                    weight=2.0,
                ),
            ],
            hint_weight=0.5,
        ),
        "ensemble": lambda: kd.Distiller(
            student(),
            [teacher, keras.models.clone_model(teacher)],
            teacher_weights=[0.7, 0.3],
            teacher_temperatures=[None, 2.0],
        ),
        "lwf": lambda: kd.continual.LearningWithoutForgetting(
            kd.continual.add_task_head(keras.models.clone_model(teacher), 5),
            teacher,
        ),
    }
    for name, build in cases.items():
        keras.utils.set_random_seed(1)
        distiller = build()
        distiller.compile(optimizer="adam", metrics=["accuracy"])
        labels = y % 5 if name == "lwf" else y
        distiller.fit(x, labels, epochs=1, batch_size=32, verbose=0)
        distiller.save(HERE / f"{name}.keras")
        out = distiller.predict(x[:16], verbose=0)
        out = out[-1] if isinstance(out, list) else out
        np.savez(HERE / f"{name}.npz", x=x[:16], predictions=out)
        print(name, (HERE / f"{name}.keras").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
