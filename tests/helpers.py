"""Shared helpers for the tests: tiny data and tiny models, all offline."""

import functools
import importlib.util
import pathlib

import keras
import numpy as np

from keras_distill import data, models


@functools.cache
def digits():
    """The fixed digits split (cached: the tests only read it)."""
    return data.load_digits(seed=0)


def digits_subset(split="train", n=256):
    x, y = digits()[split]
    return x[:n], y[:n]


def random_logits(batch=8, classes=5, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, classes)) * scale).astype("float32")


@functools.cache
def _trained_teacher_weights(epochs):
    keras.utils.set_random_seed(0)
    teacher = models.teacher_cnn()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = digits()["train"]
    teacher.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return teacher.get_weights()


def trained_teacher(epochs=3):
    """A digits CNN teacher trained for a few epochs (weights cached per run)."""
    teacher = models.teacher_cnn()
    teacher.set_weights(_trained_teacher_weights(epochs))
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return teacher


def tiny_student(hidden=16, seed=1, **kwargs):
    keras.utils.set_random_seed(seed)
    return models.student_mlp(hidden=hidden, **kwargs)


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_file(relative_path, name=None):
    """Imports a repository file that is not in a package (a benchmark, an
    example, the docs hooks) as a module, by its path from the repository root."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
