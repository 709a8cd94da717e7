"""`keras.applications` models as teachers or students, for images of any size.

Light to import (Keras is imported when a model is built), so that a config
naming one is checked before TensorFlow loads.
"""

import os

# The families whose models hold their own input preprocessing (they take
# RGB pixels in [0, 255]), so the model saved is the whole model: nothing for
# a user (or TF Serving) to apply outside it.
NAMES = (
    "MobileNetV3Small",
    "MobileNetV3Large",
    *(f"EfficientNetB{i}" for i in range(8)),
    *(f"EfficientNetV2{size}" for size in ("B0", "B1", "B2", "B3", "S", "M", "L")),
    *(f"ConvNeXt{size}" for size in ("Tiny", "Small", "Base", "Large", "XLarge")),
)
FAMILIES = (
    "MobileNetV3Small/Large, EfficientNetB0-B7, EfficientNetV2B0-B3/S/M/L, "
    "ConvNeXtTiny/Small/Base/Large/XLarge"
)
# The smallest input side `keras.applications` accepts for these families.
MIN_SIZE = 32
PREFIX = "keras.applications."


def _closest(name):
    import difflib

    match = difflib.get_close_matches(name, NAMES, n=1)
    return f" Did you mean {PREFIX}{match[0]}?" if match else ""


def check(model, weights=None, where="model"):
    """Refuses an unknown application name or an unusable `weights`.

    `model` is `"keras.applications.NAME"` (or `"NAME"`); returns NAME.
    """
    name = model[len(PREFIX) :] if model.startswith(PREFIX) else model
    if name not in NAMES:
        raise ValueError(
            f"{where}: {model!r} is not one of the keras.applications models "
            "with their preprocessing inside, which this library builds: "
            f"{PREFIX}NAME for NAME in {FAMILIES}.{_closest(name)}"
        )
    if weights is not None:
        if weights == "imagenet":
            raise ValueError(
                f"{where}: weights='imagenet' needs a download. Pass the path of "
                "a weights file you have (the model's 'notop' .h5 file), or "
                "leave `weights` out to start from random weights."
            )
        if not (isinstance(weights, str) and os.path.isfile(weights)):
            raise ValueError(
                f"{where}: weights must be the path of a weights file (.h5) or "
                f"left out. Received: weights={weights!r} (no such file)."
            )
    return name


def build(model, input_shape, num_classes, weights=None, name=None):
    """A `keras.applications` classifier that outputs logits, for any image size.

    Images in [0, 1] with 1 or 3 channels are scaled to the model's [0, 255],
    grey images repeated to RGB, and images smaller than 32 pixels resized
    up (all as layers of the model, so the saved and exported model is the
    whole pipeline). The application runs without its top (`pooling="avg"`)
    and a new `Dense(num_classes)` layer named `"logits"` classifies.

    Args:
        model: `"keras.applications.NAME"` or `"NAME"`, one of `NAMES`.
        input_shape: `(height, width, channels)` of the images.
        num_classes: The number of classes.
        weights: `None` (random) or the path of the application's weights
            without its top (Keras's `..._notop.h5` file).
        name: The model's name.

    Example:

    ```python
    student = kd.applications.build(
        "keras.applications.MobileNetV3Small", (28, 28, 1), num_classes=10
    )
    ```
    """
    import keras

    app = check(model, weights)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(
            f"{PREFIX}{app} needs images of shape (height, width, 1 or 3). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    height, width, channels = input_shape
    size = (max(MIN_SIZE, height), max(MIN_SIZE, width))
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(255.0, name="to_pixels")(inputs)
    if channels == 1:
        x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
    if size != (height, width):
        x = keras.layers.Resizing(*size, name="resize")(x)
    try:
        backbone = getattr(keras.applications, app)(
            include_top=False,
            weights=weights,
            input_shape=(*size, 3),
            pooling="avg",
        )
    except (OSError, ValueError) as error:
        if weights is None:
            raise
        # h5py's "file signature not found" names neither the file nor the fix.
        raise ValueError(
            f"{PREFIX}{app}: the weights file {weights!r} could not be loaded "
            f"({error}). Pass the application's weights without its top "
            f"(Keras's '..._notop.h5' file for {app}), or leave `weights` out."
        ) from error
    x = backbone(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or app.lower())
