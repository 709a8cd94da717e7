"""Quickstart: the README's program (distill a digits teacher into a 610-parameter
student); seeded, so it prints the README's test accuracy (0.9361 in our run).

`KERAS_DISTILL_QUICK=1` runs 2 epochs (the test suite); tests/examples_test.py
checks that the code below is the README's Quickstart block, line for line.
"""

import os

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def epochs(n):
    return 2 if QUICK else n


# --- the README's Quickstart ---
import keras  # noqa: E402

import keras_distill as kd  # noqa: E402

# Data: scikit-learn's handwritten digits (8x8 images, 10 classes), no download.
digits = kd.data.load_digits()
(x_train, y_train), (x_val, y_val), (x_test, y_test) = (
    digits["train"], digits["val"], digits["test"]
)  # fmt: skip

# The teacher: a 38k-parameter CNN trained on the labels.
keras.utils.set_random_seed(0)
teacher = kd.models.compile_classifier(kd.models.teacher_cnn(), learning_rate=3e-3)
teacher.fit(x_train, y_train, epochs=epochs(40), batch_size=32, verbose=0)

# The student: a 610-parameter MLP, distilled from the frozen teacher.
keras.utils.set_random_seed(1)
distiller = kd.Distiller(
    student=kd.models.student_mlp(hidden=8), teacher=teacher, alpha=0.1, temperature=4.0
)
distiller.compile(
    optimizer=keras.optimizers.Adam(1e-2),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
distiller.fit(
    x_train, y_train, validation_data=(x_val, y_val), epochs=epochs(45), batch_size=32,
    verbose=2,
    callbacks=[  # soften hard at first, sharper at the end: T from 8 to 2
        kd.callbacks.ParameterScheduler("temperature", kd.schedules.linear(8.0, 2.0, 44))
    ],
)  # fmt: skip
print(distiller.evaluate(x_test, y_test, verbose=0, return_dict=True))
distiller.save("distiller.keras")  # keras.models.load_model() restores it
kd.export_student(distiller, "serving/digits")  # -> serving/digits/<version>/, verified
