"""Quickstart: distill a digits teacher into a 600-parameter student."""

import os

import keras

import keras_distill as kd

epochs = 2 if os.environ.get("KERAS_DISTILL_QUICK") == "1" else 30
d = kd.data.load_digits()
teacher = kd.models.teacher_cnn()
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
teacher.compile(optimizer="adam", loss=loss)
teacher.fit(*d["train"], epochs=epochs, verbose=0)

distiller = kd.Distiller(student=kd.models.student_mlp(hidden=8), teacher=teacher)
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(*d["train"], validation_data=d["val"], epochs=epochs, verbose=2)
print("student test accuracy:", distiller.evaluate(*d["test"], verbose=0)[1])
# A new numbered version each run: distill_runs/quickstart/serving/<version>/
kd.export_student(distiller, "distill_runs/quickstart/serving")
