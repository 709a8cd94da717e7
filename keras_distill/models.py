"""Small built-in architectures for the digits demo, examples and tests."""

import keras

from keras_distill.data import (
    DIGITS_SHAPE,
    MNIST1D_SHAPE,
    NUM_DIGIT_CLASSES,
    NUM_MNIST1D_CLASSES,
)


def teacher_cnn(
    input_shape=DIGITS_SHAPE, num_classes=NUM_DIGIT_CLASSES, name="teacher"
):
    """A small CNN teacher (about 38k parameters) that outputs logits.

    Its layers are named, so they can serve as hint points for feature
    distillation (`keras_distill.hints.Hint`): `"conv1"` (8x8x16 on the
    digits), `"conv2"` (8x8x32), `"pool"` (4x4x32), `"flatten"`, `"dropout"`,
    `"dense"` (64 units) and `"logits"`.

    Example:

    ```pycon
    >>> model = teacher_cnn()
    >>> model.output_shape
    (None, 10)

    ```
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dropout(0.3, name="dropout"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def teacher_cnn1d(
    input_shape=MNIST1D_SHAPE, num_classes=NUM_MNIST1D_CLASSES, name="teacher_cnn1d"
):
    """A 1-D CNN teacher for MNIST-1D signals (about 60k parameters), logits out.

    Three `Conv1D` layers (named `"conv1"` to `"conv3"`, kernel 5, 64
    filters) with max pooling after the first two, then a 128-unit `"dense"`
    layer and `"logits"`. On MNIST-1D it reaches about 0.95 test accuracy,
    an MLP about 0.6 (Greydanus and Kobak 2020 report ~94% and ~68%).

    Example:

    ```pycon
    >>> model = teacher_cnn1d()
    >>> model.output_shape
    (None, 10)

    ```
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, name="signal"),
            keras.layers.Conv1D(64, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling1D(name="pool1"),
            keras.layers.Conv1D(64, 5, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling1D(name="pool2"),
            keras.layers.Conv1D(64, 5, padding="same", activation="relu", name="conv3"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dropout(0.3, name="dropout"),
            keras.layers.Dense(128, activation="relu", name="dense"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def student_mlp(
    input_shape=DIGITS_SHAPE, num_classes=NUM_DIGIT_CLASSES, hidden=16, name="student"
):
    """A tiny MLP student (about 1.2k parameters at `hidden=16`) outputting logits.

    Example:

    ```pycon
    >>> model = student_mlp()
    >>> model.output_shape
    (None, 10)

    ```
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


def student_cnn(
    input_shape=DIGITS_SHAPE,
    num_classes=NUM_DIGIT_CLASSES,
    filters=4,
    name="student_cnn",
):
    """A tiny CNN student (about 0.7k parameters at `filters=4`) outputting logits.

    Its convolution is named `"conv1"` (8x8x`filters` on the digits), a hint
    point at the teacher's resolution (see `teacher_cnn`).

    Example:

    ```pycon
    >>> model = student_cnn()
    >>> model.get_layer("conv1").output.shape
    (None, 8, 8, 4)

    ```
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name="conv1"
            ),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def compile_classifier(model, learning_rate=1e-2, metrics=("accuracy",)):
    """Compiles `model` (a classifier with logits, or a `Distiller`) with Adam.

    The setting every built-in recipe, the demo, the CLI and the tuner use:
    `keras.optimizers.Adam(learning_rate)`, sparse categorical cross-entropy
    on logits, and `metrics`.

    Args:
        model: A `keras.Model` whose outputs are logits.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        metrics: Compiled metrics. Defaults to `("accuracy",)`.

    Returns:
        `model`, compiled.

    Example:

    ```python
    kd.models.compile_classifier(kd.models.student_mlp(), learning_rate=3e-3)
    ```
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model


def causal_lm(
    vocabulary_size,
    sequence_length,
    width=64,
    layers=2,
    heads=2,
    name="causal_lm",
):
    """A small decoder-only Transformer: token ids -> next-token logits.

    Token and position embeddings, then `layers` pre-norm blocks of causal
    self-attention and a `4 * width` MLP, a final layer norm and a
    vocabulary head: `(batch, sequence_length)` int ids to `(batch,
    sequence_length, vocabulary_size)` logits. Plain Keras (no KerasHub).

    Example:

    ```pycon
    >>> model = causal_lm(258, 32, width=32, layers=1)
    >>> model.output_shape
    (None, 32, 258)

    ```
    """
    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    tokens = keras.layers.Embedding(vocabulary_size, width, name="token_embedding")(ids)
    positions = keras.layers.Embedding(
        sequence_length, width, name="position_embedding"
    )(keras.ops.arange(sequence_length))
    h = tokens + positions
    for i in range(layers):
        a = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm1")(h)
        a = keras.layers.MultiHeadAttention(
            heads, width // heads, name=f"block{i}_attention"
        )(a, a, use_causal_mask=True)
        h = h + a
        m = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm2")(h)
        m = keras.layers.Dense(4 * width, activation="gelu", name=f"block{i}_up")(m)
        h = h + keras.layers.Dense(width, name=f"block{i}_down")(m)
    h = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(h)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(h)
    return keras.Model(ids, logits, name=name)
