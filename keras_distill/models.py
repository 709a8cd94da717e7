"""Small built-in architectures for the digits demo, examples and tests."""

import keras

from keras_distill.data import DIGITS_SHAPE, NUM_DIGIT_CLASSES


def teacher_cnn(
    input_shape=DIGITS_SHAPE, num_classes=NUM_DIGIT_CLASSES, name="teacher"
):
    """A small CNN teacher (about 38k parameters) that outputs logits.

    Example:

    >>> model = teacher_cnn()
    >>> model.output_shape
    (None, 10)
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def student_mlp(
    input_shape=DIGITS_SHAPE, num_classes=NUM_DIGIT_CLASSES, hidden=16, name="student"
):
    """A tiny MLP student (about 1.2k parameters at `hidden=16`) outputting logits.

    Example:

    >>> model = student_mlp()
    >>> model.output_shape
    (None, 10)
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )
