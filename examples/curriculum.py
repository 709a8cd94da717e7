"""Plain distillation vs. schedules, curriculum and the progressive recipe, on digits.

Trains a CNN teacher on the bundled digits, then the same tiny MLP student
(same initial weights, same number of epochs) five ways:

0. from scratch, on the labels alone (the baseline);
1. plain distillation (alpha=0.1, T=4 throughout);
2. scheduled distillation (temperature 8 -> 2, alpha 0.1 -> 0.5);
3. curriculum distillation (teacher-scored, linear pacing from 25% of the
   data);
4. the progressive recipe: distill -> curriculum -> fine-tune.

and prints the students' test accuracy (mean, standard deviation and range
over seeds). On these digits the students nearly saturate: read the spread
before reading a winner (see `benchmarks/quality.py` for 5 seeds on two data
sets). Run:

    PYTHONPATH=. python examples/curriculum.py
    KERAS_DISTILL_QUICK=1 PYTHONPATH=. python examples/curriculum.py  # seconds
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_distill as kd  # noqa: E402

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"
TEACHER_EPOCHS = 3 if QUICK else 15
STUDENT_EPOCHS = 4 if QUICK else 20
SEEDS = (1,) if QUICK else (1, 2, 3)
BATCH_SIZE = 64
HIDDEN = 16


def train_teacher(x, y):
    keras.utils.set_random_seed(0)
    teacher = kd.models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x, y, epochs=TEACHER_EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    return teacher


def new_distiller(teacher, seed, alpha=0.1, temperature=4.0):
    keras.utils.set_random_seed(seed)
    student = kd.models.student_mlp(hidden=HIDDEN)
    distiller = kd.Distiller(
        student=student, teacher=teacher, alpha=alpha, temperature=temperature
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    return distiller


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def scratch(teacher, seed, train, val):
    keras.utils.set_random_seed(seed)
    student = kd.models.student_mlp(hidden=HIDDEN)
    kd.models.compile_classifier(student, learning_rate=1e-2)
    student.fit(
        *train,
        batch_size=BATCH_SIZE,
        epochs=STUDENT_EPOCHS,
        validation_data=val,
        verbose=0,
    )
    return student


def plain(teacher, seed, train, val, callbacks=()):
    distiller = new_distiller(teacher, seed)
    distiller.fit(
        *train,
        batch_size=BATCH_SIZE,
        epochs=STUDENT_EPOCHS,
        validation_data=val,
        verbose=0,
        callbacks=list(callbacks),
    )
    return distiller


def scheduled(teacher, seed, train, val):
    return plain(
        teacher,
        seed,
        train,
        val,
        callbacks=[
            kd.callbacks.ParameterScheduler(
                "temperature", kd.schedules.linear(8.0, 2.0, STUDENT_EPOCHS - 1)
            ),
            kd.callbacks.ParameterScheduler(
                "alpha", kd.schedules.cosine(0.1, 0.5, STUDENT_EPOCHS - 1)
            ),
        ],
    )


def curriculum_only(teacher, seed, train, val):
    distiller = new_distiller(teacher, seed)
    data = kd.curriculum.Curriculum.from_teacher(teacher, *train, verbose=0, seed=seed)
    pacing = kd.curriculum.pacing("linear", 0.25, STUDENT_EPOCHS // 2)
    distiller.fit(
        data.dataset(BATCH_SIZE),
        epochs=STUDENT_EPOCHS,
        validation_data=val,
        verbose=0,
        shuffle=False,  # The curriculum shuffles within the selected examples.
        callbacks=[kd.callbacks.CurriculumScheduler(data, pacing)],
    )
    return distiller


def progressive(teacher, seed, train, val):
    distiller = new_distiller(teacher, seed, alpha=0.1, temperature=6.0)
    kd.recipes.fit_progressive(
        distiller, *train, epochs=STUDENT_EPOCHS, validation_data=val, seed=seed
    )
    return distiller


METHODS = {
    "scratch (labels only)": scratch,
    "plain distillation (alpha=0.1, T=4)": plain,
    "scheduled (T 8->2, alpha 0.1->0.5)": scheduled,
    "curriculum (linear pacing from 25%)": curriculum_only,
    "progressive: distill->curriculum->fine-tune": progressive,
}


def main():
    start = time.time()
    splits = kd.data.load_digits(seed=0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    teacher = train_teacher(*train)
    print(
        f"teacher test accuracy: {accuracy(teacher, *test):.3f} "
        f"({TEACHER_EPOCHS} epochs); students: {STUDENT_EPOCHS} epochs, "
        f"hidden={HIDDEN}, seeds {list(SEEDS)}"
    )
    rows = []
    for name, method in METHODS.items():
        scores = []
        for s in SEEDS:
            model = method(teacher, s, train, val)
            scores.append(accuracy(getattr(model, "student", model), *test))
        rows.append((name, scores))
    width = max(len(name) for name, _ in rows)
    print(
        f"{'student':<{width}}  test accuracy: mean +/- std (min-max), "
        f"{len(SEEDS)} seeds"
    )
    for name, scores in rows:
        print(
            f"{name:<{width}}  {np.mean(scores):.3f} +/- {np.std(scores):.3f} "
            f"({min(scores):.3f}-{max(scores):.3f})"
        )
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
