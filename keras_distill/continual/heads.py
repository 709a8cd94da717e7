"""The models of the two settings, built from a trained model.

`add_task_head` (task-incremental: a head per task), `grow_head`,
`ClassSlice` and `old_classes_view` (class-incremental: one growing head),
the new head's warm-up (`warm_up_head`, `holdout_split`), Li and Hoiem's
`lambda_o` and our `alpha` (`alpha_for_lambda`, `lambda_for_alpha`), and the
model helpers the other modules share (`_heads`, `_inputs`, `_copy`,
`_check_model`, `_check_count`).
"""

import math

import keras
import numpy as np

from keras_distill import params as kd_params

# -- Li and Hoiem's lambda_o and our alpha -------------------------------------


def alpha_for_lambda(lambda_old: float = 1.0, temperature: float = 2.0) -> float:
    """Our `alpha` for Li and Hoiem's loss weight `lambda_o` at `temperature`.

    The paper minimises `L_new + lambda_o * L_old`, where `L_old` is the
    cross-entropy between the old model's and the new model's softened
    outputs at temperature `T`, without a `T^2` factor. Our loss is
    `alpha * L_new + (1 - alpha) * T^2 * KL`, and `KL` differs from that
    cross-entropy by a constant (the teacher's entropy), so both have the
    same gradients when `(1 - alpha) * T^2 / alpha = lambda_o`, that is

    `alpha = T^2 / (T^2 + lambda_o)`

    (up to the overall factor `alpha`, which Adam ignores). The paper's
    `lambda_o = 1`, `T = 2` is `alpha = 0.8`; `alpha = 0.5` would be
    `lambda_o = 4`.

    Args:
        lambda_old: The paper's `lambda_o >= 0`. Defaults to `1.0`.
        temperature: The KD temperature `T > 0`. Defaults to `2.0`.

    Returns:
        `alpha` in (0, 1].

    Example:

    ```pycon
    >>> alpha_for_lambda(1.0, temperature=2.0)
    0.8

    ```
    """
    lambda_old = kd_params.check_finite(lambda_old, "lambda_old")
    if lambda_old < 0:
        raise ValueError(
            f"`lambda_old` must be >= 0. Received: lambda_old={lambda_old!r}"
        )
    squared = kd_params.check("temperature", temperature) ** 2
    return squared / (squared + lambda_old)


def lambda_for_alpha(alpha: float, temperature: float = 2.0) -> float:
    """Li and Hoiem's `lambda_o` that our `alpha` amounts to at `temperature`.

    The inverse of `alpha_for_lambda`: `lambda_o = (1 - alpha) * T^2 / alpha`
    (`inf` for `alpha = 0`).

    Example:

    ```pycon
    >>> lambda_for_alpha(0.5, temperature=2.0)
    4.0

    ```
    """
    alpha = kd_params.check("alpha", alpha)
    squared = kd_params.check("temperature", temperature) ** 2
    return math.inf if alpha == 0 else (1.0 - alpha) * squared / alpha


# -- Models ---------------------------------------------------------------------


def _check_model(model, what="model"):
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            f"`{what}` must be a built functional or Sequential keras.Model (its "
            f"layers are reused). Received: {model!r}"
        )


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def _heads(model):
    """The model's head layers (its last `len(outputs)` layers) and features."""
    count = len(model.outputs)
    heads = model.layers[-count:]
    for head, output in zip(heads, model.outputs):
        if not isinstance(head, keras.layers.Dense) or head.output is not output:
            raise ValueError(
                "The model's outputs must be `Dense` heads, its last layers, all "
                f"reading the same features. Model {model.name!r} has outputs "
                f"{[tuple(o.shape) for o in model.outputs]} and last layers "
                f"{[layer.name for layer in heads]}."
            )
    features = heads[0].input
    if any(head.input is not features for head in heads):
        raise ValueError(
            f"The heads of model {model.name!r} must all read the same features."
        )
    return heads, features


def _inputs(model):
    """The model's inputs in the structure it was built with (no warnings)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _copy(model):
    """A trainable copy of `model` with its weights.

    Trainable whatever the state of `model`: a model that has been a
    teacher was frozen by the `Distiller`, and `clone_model` copies the
    layers' `trainable` flags, which would freeze the new model's trunk.
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.trainable = True
    for layer in clone.layers:
        layer.trainable = True
    return clone


def add_task_head(model, num_classes, name=None):
    """A copy of `model` with one more head, for a new task (task-incremental).

    The copy shares nothing with `model` (which stays the frozen teacher)
    and is trainable even if `model` was frozen (e.g. by being a teacher):
    its trunk and heads start from `model`'s weights, and a new
    `Dense(num_classes)` head reads the trunk's features (the input of
    `model`'s heads). Called again on its result, it adds a third head, and
    so on.

    Args:
        model: A trained functional or Sequential `keras.Model` whose last
            layers are its `Dense` classification heads (one per output).
        num_classes: Number of classes of the new task.
        name: Name of the new head. Defaults to `None`: `"head_<k>"` for the
            model's k-th head.

    Returns:
        A `keras.Model` with outputs `[*model.outputs, new_head]`.

    Example:

    ```python
    two_heads = kd.continual.add_task_head(old_model, num_classes=5)
    ```
    """
    _check_model(model)
    num_classes = _check_count(num_classes, "num_classes")
    clone = _copy(model)
    _, features = _heads(clone)
    count = len(clone.outputs) + 1
    name = name or f"head_{count}"
    if name in {layer.name for layer in clone.layers}:
        raise ValueError(
            f"The model already has a layer named {name!r}; pass another `name`."
        )
    new_head = keras.layers.Dense(num_classes, name=name)(features)
    base = model.name.split("__")[0]
    return keras.Model(
        _inputs(clone), [*clone.outputs, new_head], name=f"{base}__{count}_heads"
    )


def grow_head(model, num_new_classes):
    """A copy of `model` whose single head has `num_new_classes` more classes.

    For class-incremental learning: the new head's first columns are the old
    head's (weights and biases copied), the new columns start from the
    layer's initializers. `model` is left alone.

    Args:
        model: A trained functional or Sequential `keras.Model` with one
            output, a `Dense` layer with a bias and a linear activation.
        num_new_classes: Number of classes added.

    Returns:
        A `keras.Model` with one output of `old + num_new_classes` logits.

    Example:

    ```python
    bigger = kd.continual.grow_head(model_0_to_4, num_new_classes=2)  # 7 logits
    ```
    """
    _check_model(model)
    num_new_classes = _check_count(num_new_classes, "num_new_classes")
    if len(model.outputs) != 1:
        raise ValueError(
            "`grow_head` needs a model with one output (one growing head). "
            f"Received a model with {len(model.outputs)} outputs."
        )
    clone = _copy(model)
    (head,), features = _heads(clone)
    if not head.use_bias or head.activation is not keras.activations.linear:
        raise ValueError(
            "The head must be a `Dense` layer with a bias and no activation "
            f"(logits). Received the layer {head.name!r}."
        )
    old = head.units
    grown = keras.layers.Dense(old + num_new_classes, name=head.name)
    outputs = grown(features)
    kernel, bias = grown.get_weights()
    old_kernel, old_bias = head.get_weights()
    kernel[:, :old], bias[:old] = old_kernel, old_bias
    grown.set_weights([kernel, bias])
    return keras.Model(_inputs(clone), outputs, name=model.name)


@keras.saving.register_keras_serializable(package="keras_distill")
class ClassSlice(keras.layers.Layer):
    """The logits `start:stop` of its input (e.g. the old classes' outputs).

    Args:
        start: First logit kept.
        stop: One past the last logit kept. Defaults to `None`: to the end.
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, start, stop=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(
                f"`start` must be an integer >= 0. Received: start={start!r}"
            )
        if stop is not None and (
            isinstance(stop, bool) or not isinstance(stop, int) or stop <= start
        ):
            raise ValueError(
                f"`stop` must be None or an integer > start={start}. Received: "
                f"stop={stop!r}"
            )
        self.start, self.stop = start, stop

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        size = input_shape[-1]
        stop = size if self.stop is None else self.stop
        return (*input_shape[:-1], None if size is None else stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def old_classes_view(model, num_old_classes, new_classes_only=False):
    """`model` seen as `[old classes' logits, logits]`, sharing its layers.

    The form `LearningWithoutForgetting` takes in the class-incremental
    setting: the KD term reads the first output, the labels and metrics the
    second, which holds every class (labels are class indices), or with
    `new_classes_only` only the new classes (labels counted from the first
    new class; the cross-entropy then leaves the old logits to the KD term,
    as FACIL's LwF does by default).

    Args:
        model: A one-output model (e.g. from `grow_head`).
        num_old_classes: Number of leading logits the old model had.
        new_classes_only: Whether the second output holds only the new
            classes' logits. Defaults to `False`.

    Returns:
        A two-output `keras.Model` sharing `model`'s layers.
    """
    _check_model(model)
    num_old_classes = _check_count(num_old_classes, "num_old_classes")
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] <= num_old_classes:
        raise ValueError(
            f"`model` must have one output with more than {num_old_classes} "
            f"logits. Received outputs {[tuple(o.shape) for o in model.outputs]}."
        )
    logits = model.outputs[0]
    old = ClassSlice(0, num_old_classes, name="old_classes")(logits)
    if new_classes_only:
        logits = ClassSlice(num_old_classes, name="new_classes")(logits)
    return keras.Model(_inputs(model), [old, logits], name=f"{model.name}_view")


def _check_warmup_epochs(value, name, low):
    """`"auto"` or an integer >= `low` (the warm-up's length)."""
    if value == "auto" and isinstance(value, str):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
    ):
        raise ValueError(
            f'`{name}` must be "auto" (the new head trained on frozen features '
            "until its loss on a held-out slice of the new task stops improving) "
            f"or an integer >= {low}. Received: {name}={value!r}"
        )
    return int(value)


def holdout_split(y, validation_fraction=0.2, seed=0):
    """A stratified, seeded split of example indices into (train, validation).

    Each class gives `round(validation_fraction * count)` of its examples to the
    validation slice (at least one, and at least one stays for training),
    drawn at random with `seed`; the rest are for training. The split
    depends only on `y`, `validation_fraction` and `seed`.

    Args:
        y: Integer labels, shape `(n,)`.
        validation_fraction: Share of each class held out, in (0, 1).
            Defaults to `0.2`.
        seed: Seed of the draw. Defaults to `0`.

    Returns:
        `(train_indices, validation_indices)`, sorted, disjoint, together
        `range(n)`.

    Example:

    ```pycon
    >>> train, val = holdout_split([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 0.2, seed=0)
    >>> len(train), len(val)
    (8, 2)

    ```
    """
    fraction = kd_params.check_finite(validation_fraction, "validation_fraction")
    if not 0 < fraction < 1:
        raise ValueError(
            "`validation_fraction` (the share of the new task's training examples "
            f"held out to stop the warm-up) must be in (0, 1). Received: "
            f"validation_fraction={validation_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")
    y = np.asarray(y)
    if y.ndim != 1 or not len(y):
        raise ValueError(
            "A held-out slice needs a non-empty 1-D array of integer labels. "
            f"Received labels of shape {y.shape}."
        )
    rng = np.random.default_rng(int(seed))
    train, validation = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            raise ValueError(
                f"Class {label.item()!r} has {len(members)} training example: "
                "holding out "
                "a validation slice for warmup_epochs='auto' needs at least 2 per "
                "class. Pass an integer number of warm-up epochs instead."
            )
        members = rng.permutation(members)
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        validation.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def warm_up_head(
    model,
    x,
    y,
    epochs="auto",
    learning_rate=1e-2,
    batch_size=32,
    verbose=0,
    validation_fraction=0.2,
    patience=10,
    max_epochs=200,
    tolerance=1e-4,
    seed=0,
):
    """Trains only the model's last head, with everything else frozen.

    Li and Hoiem's warm-up step: before training all weights, the new head
    is trained alone on the new task (the trunk and the old heads are
    frozen, so the old outputs do not move and the KD term is constant)
    "until convergence". The trunk's features are computed once (inference
    mode), then the head is fitted on them with Adam and sparse categorical
    cross-entropy.

    With `epochs="auto"` (the default) convergence is decided on held-out
    data, as the paper chooses its settings on held-out validation data: a
    stratified slice of `x, y` (`validation_fraction` of each class, drawn
    with `seed`, see `holdout_split`) is held out, the head is fitted on the
    rest for at most `max_epochs` epochs and stopped when the validation
    cross-entropy has not improved by more than `tolerance` for `patience`
    epochs; the head keeps the weights of its best epoch
    (`EarlyStopping(restore_best_weights=True)`). No test data is involved.
    The defaults are scikit-learn's for `MLPClassifier(early_stopping=True)`
    (`n_iter_no_change=10`, `tol=1e-4`, `max_iter=200`) except the
    validation share (20% rather than 10%, so a small task still leaves
    a few examples per class) and the monitored quantity (the held-out
    cross-entropy, the warm-up's objective, rather than accuracy, which
    moves in coarse steps on a small slice). With an integer, the head is
    trained for exactly that many epochs on all of `x, y` (no hold-out).

    Args:
        model: A model whose last layer is the new `Dense` head (e.g. from
            `add_task_head`); its weights are updated in place.
        x: New-task inputs.
        y: New-task integer labels for the last head.
        epochs: `"auto"` or a positive number of epochs. Defaults to
            `"auto"`.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        batch_size: Defaults to `32`.
        verbose: Passed to `fit()`. Defaults to `0`.
        validation_fraction: With `"auto"`: share of each class held out,
            in (0, 1). Defaults to `0.2`.
        patience: With `"auto"`: epochs without a lower validation loss
            before stopping. Defaults to `10`.
        max_epochs: With `"auto"`: the cap on epochs. Defaults to `200`.
        tolerance: With `"auto"`: the smallest decrease of the validation
            loss that counts as an improvement (`min_delta`), >= 0.
            Defaults to `1e-4`.
        seed: With `"auto"`: seed of the held-out slice. Defaults to `0`.

    Returns:
        The `History` of the head's training, with `best_epoch`: the
        number of epochs the head's final weights come from (`epochs` for
        an integer; with `"auto"` the restored best epoch, and
        `history["val_loss"]` holds the held-out loss per epoch).

    Example:

    ```python
    student = kd.continual.add_task_head(old_model, num_classes=5)
    kd.continual.warm_up_head(student, x_task2, y_task2)  # epochs="auto"
    ```
    """
    _check_model(model)
    heads, features = _heads(model)
    head = heads[-1]
    epochs = _check_warmup_epochs(epochs, "epochs", low=1)
    batch_size = _check_count(batch_size, "batch_size")
    y = np.asarray(y)
    if len(y) != len(x):
        raise ValueError(
            f"`x` and `y` must hold the same number of examples. Received "
            f"{len(x)} inputs and {len(y)} labels."
        )
    if epochs == "auto":
        patience = _check_count(patience, "patience")
        max_epochs = _check_count(max_epochs, "max_epochs")
        tolerance = kd_params.check_finite(tolerance, "tolerance")
        if tolerance < 0:
            raise ValueError(
                "`tolerance` (the smallest decrease of the held-out loss that "
                f"counts as an improvement) must be >= 0. Received: "
                f"tolerance={tolerance!r}"
            )
        train, validation = holdout_split(y, validation_fraction, seed)
    inputs = keras.Model(_inputs(model), features).predict(x, batch_size=256, verbose=0)
    probe = keras.Sequential([keras.Input(inputs.shape[1:]), head])
    probe.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if epochs != "auto":
        history = probe.fit(
            inputs,
            y,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=verbose,
        )
        history.best_epoch = epochs
        return history
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=patience,
        min_delta=tolerance,
        restore_best_weights=True,
    )
    history = probe.fit(
        inputs[train],
        y[train],
        validation_data=(inputs[validation], y[validation]),
        epochs=max_epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=verbose,
    )
    history.best_epoch = stop.best_epoch + 1
    return history
