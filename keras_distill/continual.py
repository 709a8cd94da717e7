"""Lifelong learning: Learning without Forgetting on top of the Distiller.

A model trained on task 1 becomes the teacher for task 2. The new model keeps
the old model's trunk and heads and learns the new task; on the new task's
data (and, with an exemplar memory, a few stored old examples), its old
outputs are distilled towards the old model's responses, so what it knew is
kept, while the new outputs learn the new labels.

Two settings, as the literature separates them (van de Ven, Tuytelaars and
Tolias, "Three types of incremental learning", Nature Machine Intelligence
2022):

- task-incremental (`scenario="task"`): a head per task, the task id known
  at test time (`add_task_head`);
- class-incremental (`scenario="class"`): one head that grows with every
  task, no task id at test time (`grow_head`; LwF.MC and iCaRL-style
  distillation with an `ExemplarMemory`).

`learn()` runs a whole sequence of tasks (each step's model teaches the
next), saves every step's model and resumes after an interruption;
`accuracy_metrics()`, `format_table()` and `plot_accuracy_matrices()` give
the numbers continual-learning papers report.

References: Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI
2017 (https://arxiv.org/abs/1606.09282); Rebuffi, Kolesnikov, Sperl and
Lampert, "iCaRL: Incremental Classifier and Representation Learning", CVPR
2017 (https://arxiv.org/abs/1611.07725).
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np
from keras import ops

from keras_distill import losses as kd_losses
from keras_distill import params as kd_params
from keras_distill.distiller import Distiller

SCENARIOS = ("task", "class")
METHODS = ("finetune", "lwf", "icarl", "joint")
SELECTIONS = ("herding", "random")
_STATE_FILE = "run.json"

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

    >>> alpha_for_lambda(1.0, temperature=2.0)
    0.8
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

    >>> lambda_for_alpha(0.5, temperature=2.0)
    4.0
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

    >>> train, val = holdout_split([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 0.2, seed=0)
    >>> len(train), len(val)
    (8, 2)
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


@keras.saving.register_keras_serializable(package="keras_distill")
class LearningWithoutForgetting(Distiller):
    """Learns a new task without forgetting the old ones (LwF).

    `student` has outputs `[*old_heads, new_head]` (see `add_task_head`, or
    `old_classes_view` for one growing head); `teacher` is the old model,
    with outputs `old_heads`. On new-task batches `(x, y_new)` the loss is

    `alpha * CE(y_new, new_head) + (1 - alpha) * T^2 * sum_k KL(old_k(x)/T || head_k/T)`

    Li and Hoiem minimise `L_new + lambda_o * L_old` with `lambda_o = 1`,
    `T = 2` and no `T^2` factor; that is our `alpha = T^2 / (T^2 +
    lambda_o) = 0.8` (see `alpha_for_lambda`), the default. Their warm-up
    step (the new head trained first with the rest frozen) is
    `warm_up_head`. `alpha=1` is plain fine-tuning of the shared trunk (the
    old heads are left to drift), the baseline LwF improves on. Compiled
    metrics refer to the new head; `predict()` returns every head.

    Args:
        student: A model with outputs `[*old_heads, new_head]` (two or more).
        teacher: The model trained on the old tasks (frozen), whose outputs
            match `old_heads`.
        alpha: Weight of the new task's loss. Defaults to `0.8`
            (`lambda_o = 1` at `T = 2`).
        temperature: Temperature of the old-task KD term. Defaults to `2.0`.
        **kwargs: Passed to `Distiller`.

    Example:

    ```python
    student = kd.continual.add_task_head(old_model, num_classes=5)
    kd.continual.warm_up_head(student, x_task2, y_task2)
    lwf = kd.continual.LearningWithoutForgetting(student, old_model)
    lwf.compile(optimizer="adam", metrics=["accuracy"])
    lwf.fit(x_task2, y_task2, epochs=10)
    old_logits, new_logits = lwf.predict(x)
    ```
    """

    def __init__(self, student, teacher, alpha=0.8, temperature=2.0, **kwargs):
        outputs = getattr(student, "outputs", None)
        if outputs is not None and len(outputs) < 2:
            raise ValueError(
                "`student` must have at least two outputs, [*old_heads, new_head] "
                f"(see `add_task_head`). Received a model with {len(outputs)} "
                "output(s)."
            )
        self._old_sizes = None
        if outputs is not None:
            self._old_sizes = [int(o.shape[-1]) for o in outputs[:-1]]
            teacher_outputs = getattr(teacher, "outputs", None)
            if teacher_outputs is not None:
                teacher_sizes = [int(o.shape[-1]) for o in teacher_outputs]
                if teacher_sizes != self._old_sizes:
                    raise ValueError(
                        "The teacher's outputs must match the student's old heads. "
                        f"Received teacher output sizes {teacher_sizes} and old "
                        f"head sizes {self._old_sizes}."
                    )
        super().__init__(
            student, teacher, alpha=alpha, temperature=temperature, **kwargs
        )
        needing = [t.name for t in self.distillation_terms if t.needs_labels]
        if needing:
            raise ValueError(
                "LwF distills the old heads with the new task's batches, whose "
                "labels are the new task's, so a term that needs labels cannot "
                f"distill the old heads. Received the terms {needing}; use terms "
                "that do not need labels (e.g. 'kd', 'mse', 'dist')."
            )

    def soft_predictions(self, y_pred):
        if len(y_pred) == 2:
            return y_pred[0]
        return ops.concatenate([ops.cast(p, "float32") for p in y_pred[:-1]], -1)

    def hard_predictions(self, y_pred):
        return y_pred[-1]

    def teacher_logits(self, x, teacher_targets=None):
        if (
            teacher_targets is not None
            or not self._old_sizes
            or (len(self._old_sizes) == 1)
        ):
            return super().teacher_logits(x, teacher_targets)
        outputs = self.teacher(x, training=False)
        logits = [kd_losses.to_logits(o, self.teacher_outputs) for o in outputs]
        return ops.stop_gradient(ops.concatenate(logits, -1))

    def compute_loss_report(
        self,
        x,
        y,
        y_pred,
        sample_weight=None,
        teacher_targets=None,
        training=True,
        student_features=None,
    ):
        # Several old heads: each term on each old head (its own softmax),
        # summed over the heads, as in the paper (one KD term per old head).
        if not self._old_sizes or len(self._old_sizes) == 1:
            return super().compute_loss_report(
                x,
                y,
                y_pred,
                sample_weight,
                teacher_targets,
                training,
                student_features,
            )
        teacher = self.teacher_logits(x, teacher_targets)
        student = kd_losses.to_logits(
            self.soft_predictions(y_pred), self.student_outputs
        )
        term_losses = []
        for term in self.distillation_terms:
            total, start = 0.0, 0
            for size in self._old_sizes:
                total = total + term.reduced(
                    teacher[:, start : start + size],
                    student[:, start : start + size],
                    None,
                    self._temperature,
                    sample_weight,
                )
                start += size
            term_losses.append(total)
        return self.loss_report(y, y_pred, sample_weight, term_losses)

    def _check_labels(self, x, y, where):
        pass  # the step checks the labels against the new head (its traced shape)


# -- Exemplar memory -------------------------------------------------------------


def herding(features, count: int) -> np.ndarray:
    """iCaRL's herding: indices of `count` examples whose mean tracks the class's.

    Features are L2-normalised; the k-th pick is the example that brings the
    mean of the k picked closest to the mean of all (Rebuffi et al. 2017,
    Algorithm 4; Welling 2009). The order is a priority: the first `m`
    picks are the best `m`.

    Args:
        features: `(n, d)` features of one class's examples.
        count: Number of examples to pick (at most `n`).

    Returns:
        An int array of `min(count, n)` distinct indices, in order of choice.

    Example:

    >>> herding(np.eye(3), 2).shape
    (2,)
    """
    features = np.asarray(features, "float64").reshape(len(features), -1)
    features = features / np.maximum(
        np.linalg.norm(features, axis=1, keepdims=True), 1e-12
    )
    mean = features.mean(axis=0)
    chosen, running = [], np.zeros_like(mean)
    available = np.ones(len(features), bool)
    for k in range(1, min(int(count), len(features)) + 1):
        distances = np.linalg.norm(mean - (running + features) / k, axis=1)
        distances[~available] = np.inf
        pick = int(np.argmin(distances))
        chosen.append(pick)
        available[pick] = False
        running += features[pick]
    return np.asarray(chosen, dtype="int64")


class ExemplarMemory:
    """A fixed budget of stored old examples, shared equally by the classes.

    After each task, every class seen so far keeps `size // classes`
    examples (iCaRL's memory): old classes drop their last-chosen ones, new
    classes choose theirs by `herding` in the model's feature space (the
    input of its head) or at random.

    Args:
        size: Total number of stored examples (>= 0).
        selection: `"herding"` or `"random"`. Defaults to `"herding"`.
        seed: Seed of the random selection. Defaults to `0`.

    Example:

    ```python
    memory = kd.continual.ExemplarMemory(200, selection="herding")
    memory.update(model, x_task, y_task)
    x_old, y_old = memory.arrays()
    ```
    """

    def __init__(self, size, selection="herding", seed=0):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ValueError(
                "`size` (the memory's number of stored examples) must be an "
                f"integer >= 0. Received: size={size!r}"
            )
        if selection not in SELECTIONS:
            raise ValueError(
                f"`selection` must be one of {SELECTIONS}. Received: "
                f"selection={selection!r}"
            )
        self.size = int(size)
        self.selection = selection
        self.seed = seed
        self._by_class = {}  # class -> inputs, in order of choice

    def __len__(self):
        return sum(len(x) for x in self._by_class.values())

    @property
    def classes(self):
        """The classes held, in order of arrival."""
        return list(self._by_class)

    def update(self, model, x, y):
        """Adds the classes of `(x, y)` and shrinks the others to the budget.

        Args:
            model: The model just trained (its head's input is the feature
                space for herding).
            x: The new task's inputs.
            y: Their labels (class ids, as stored and returned).
        """
        y = np.asarray(y).reshape(-1)
        new = [c for c in dict.fromkeys(y.tolist()) if c not in self._by_class]
        total = len(self._by_class) + len(new)
        per_class = self.size // total if total else 0
        for c in list(self._by_class):
            self._by_class[c] = self._by_class[c][:per_class]
        features = None
        if self.selection == "herding" and per_class and new:
            _, feature_tensor = _heads(model)
            features = keras.Model(_inputs(model), feature_tensor).predict(
                x, batch_size=256, verbose=0
            )
        rng = np.random.default_rng([int(self.seed), total])
        for c in new:
            where = np.flatnonzero(y == c)
            if features is not None:
                order = herding(features[where], per_class)
            else:
                order = rng.permutation(len(where))[:per_class]
            self._by_class[c] = np.asarray(x)[where[order]]

    def arrays(self):
        """`(x, y)` of every stored example (empty arrays when empty)."""
        if not self._by_class:
            return None, np.zeros((0,), "int64")
        x = np.concatenate(list(self._by_class.values()))
        y = np.concatenate(
            [np.full(len(v), c) for c, v in self._by_class.items()]
        ).astype("int64")
        return x, y

    def save(self, path):
        """Writes the memory to an `.npz` file (atomically)."""
        x, y = self.arrays()
        order = np.asarray(self.classes, "int64")
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, x=x if x is not None else np.zeros((0,)), y=y, classes=order)
        os.replace(tmp, path)

    def load(self, path):
        """Reads a memory written by `save()` (keeps the order of choice)."""
        with np.load(path) as stored:
            x, y, classes = stored["x"], stored["y"], stored["classes"]
        self._by_class = {int(c): x[y == c] for c in classes}

    def get_config(self):
        return {"size": self.size, "selection": self.selection, "seed": self.seed}


# -- Tasks -----------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """One task of a sequence: its training and test arrays and its classes.

    Labels are the original class ids (e.g. 6 and 7), not renumbered.

    Attributes:
        train: `(x, y)` training arrays.
        test: `(x, y)` test arrays.
        classes: The task's class ids, in order.
        name: A display name. Defaults to the classes, e.g. `"6-7"`.
    """

    train: tuple
    test: tuple
    classes: tuple
    name: str = ""

    def __post_init__(self):
        self.classes = tuple(int(c) for c in self.classes)
        if not self.name:
            self.name = "-".join(str(c) for c in self.classes)


def split_classes(arrays, groups, train_split="train", test_split="test"):
    """Splits a data set into one `Task` per group of classes.

    Args:
        arrays: A dict of `(x, y)` splits, e.g. `kd.data.load_digits()`.
        groups: The classes of each task, e.g. `[[0, 1], [2, 3], ...]`.
        train_split: Key of the training split. Defaults to `"train"`.
        test_split: Key of the test split. Defaults to `"test"`.

    Returns:
        A list of `Task`s.

    Example:

    ```python
    tasks = kd.continual.split_classes(
        kd.data.load_digits(), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    )
    ```
    """
    groups = [list(g) for g in groups]
    if not groups or any(not g for g in groups):
        raise ValueError(
            f"`groups` must be a non-empty list of non-empty class lists. "
            f"Received: groups={groups!r}"
        )
    tasks = []
    for group in groups:
        parts = []
        for split in (train_split, test_split):
            x, y = arrays[split]
            keep = np.isin(y, group)
            missing = sorted(set(group) - set(np.unique(y[keep]).tolist()))
            if missing:
                raise ValueError(
                    f"Classes {missing} of group {group} have no examples in the "
                    f"{split!r} split."
                )
            parts.append((x[keep], y[keep]))
        tasks.append(Task(parts[0], parts[1], tuple(group)))
    return tasks


def _check_tasks(tasks, scenario):
    if scenario not in SCENARIOS:
        raise ValueError(
            f"`scenario` must be one of {SCENARIOS} (task- or class-incremental). "
            f"Received: scenario={scenario!r}"
        )
    if not isinstance(tasks, list | tuple) or not tasks:
        raise ValueError(
            "`tasks` must be a non-empty list of `kd.continual.Task`s (see "
            f"`split_classes`). Received: tasks={tasks!r}"
        )
    tasks = list(tasks)
    seen = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ValueError(
                f"`tasks[{i}]` must be a `kd.continual.Task`. Received: {task!r}"
            )
        if len(set(task.classes)) != len(task.classes):
            raise ValueError(
                f"Task {i} ({task.name}) lists a class twice: {task.classes}."
            )
        for split, (x, y) in (("train", task.train), ("test", task.test)):
            y = np.asarray(y)
            if len(y) == 0 or len(x) != len(y):
                raise ValueError(
                    f"Task {i} ({task.name}) needs a non-empty {split} split with "
                    f"as many inputs as labels. Received {len(x)} inputs and "
                    f"{len(y)} labels."
                )
            extra = sorted(set(np.unique(y).tolist()) - set(task.classes))
            if extra:
                raise ValueError(
                    f"Task {i} ({task.name}) has {split} labels {extra} outside its "
                    f"classes {task.classes}."
                )
        if scenario == "class":
            for c in task.classes:
                if c in seen:
                    raise ValueError(
                        "In class-incremental learning every class belongs to one "
                        f"task. Class {c} is in task {seen[c]} and task {i} "
                        f"({task.name})."
                    )
                seen[c] = i
    return tasks


# -- Metrics ---------------------------------------------------------------------


def accuracy_metrics(accuracy) -> dict:
    """Average accuracy, forgetting and backward transfer of an accuracy matrix.

    `accuracy[i, j]` is the test accuracy on task `j` after training task
    `i` (NaN for `j > i`). After the last task `T`:

    - average accuracy: `mean_j accuracy[T, j]`;
    - forgetting (Chaudhry et al. 2018): `mean_{j<T} (max_{l<T} accuracy[l, j]
      - accuracy[T, j])`;
    - backward transfer (Lopez-Paz and Ranzato 2017): `mean_{j<T}
      (accuracy[T, j] - accuracy[j, j])` (negative: forgetting).

    Forgetting and backward transfer are NaN for a single task. Also
    returns `"average_accuracy_per_step"`, the average accuracy after each
    task.

    Args:
        accuracy: A square `(T, T)` array.

    Returns:
        A dict of floats (and one list).

    Example:

    >>> m = np.array([[1.0, np.nan], [0.8, 0.9]])
    >>> metrics = accuracy_metrics(m)
    >>> [round(metrics[k], 2) for k in ("average_accuracy", "forgetting")]
    [0.85, 0.2]
    """
    a = np.asarray(accuracy, "float64")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not a.size:
        raise ValueError(
            f"`accuracy` must be a square (tasks, tasks) matrix. Received shape "
            f"{a.shape}."
        )
    last = len(a) - 1
    per_step = [float(np.mean(a[i, : i + 1])) for i in range(len(a))]
    if last == 0:
        forgetting = transfer = float("nan")
    else:
        forgetting = float(
            np.mean([np.max(a[j:last, j]) - a[last, j] for j in range(last)])
        )
        transfer = float(np.mean([a[last, j] - a[j, j] for j in range(last)]))
    return {
        "average_accuracy": per_step[-1],
        "forgetting": forgetting,
        "backward_transfer": transfer,
        "average_accuracy_per_step": per_step,
    }


def _spread(values):
    values = np.asarray(values, "float64")
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def format_table(results) -> str:
    """A Markdown table of the metrics of several methods.

    Args:
        results: `{method: matrix or list of matrices}` (one per seed). With
            several seeds, each cell reads `mean [min, max]`.

    Returns:
        The table as a string.
    """
    lines = [
        "| method | average accuracy | forgetting | backward transfer | seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, matrices in results.items():
        if isinstance(matrices, np.ndarray) and matrices.ndim == 2:
            matrices = [matrices]
        metrics = [accuracy_metrics(m) for m in matrices]
        cells = [
            _spread([m[key] for m in metrics])
            for key in ("average_accuracy", "forgetting", "backward_transfer")
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(metrics)} |")
    return "\n".join(lines)


def format_matrix(accuracy, task_names=None) -> str:
    """The accuracy matrix as a Markdown table (rows: after task i)."""
    a = np.asarray(accuracy, "float64")
    names = task_names or [str(j + 1) for j in range(len(a))]
    lines = [
        "| after \\ on | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for i, row in enumerate(a):
        cells = ["" if np.isnan(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {names[i]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy_matrices(results, path, task_names=None, title=None):
    """Draws each method's (mean) accuracy matrix as an annotated heat map PNG.

    Args:
        results: `{method: matrix or list of matrices}`; lists are averaged.
        path: Where to write the PNG.
        task_names: Labels of the tasks. Defaults to `1, 2, ...`.
        title: A title over the figure. Defaults to `None`.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(results)
    figure, axes = plt.subplots(
        1, count, figsize=(3.4 * count + 0.8, 3.6), squeeze=False
    )
    image = None
    for axis, (method, matrices) in zip(axes[0], results.items()):
        mean = np.mean(
            np.asarray(matrices, "float64").reshape(-1, *np.shape(matrices)[-2:]), 0
        )
        names = task_names or [str(j + 1) for j in range(len(mean))]
        image = axis.imshow(
            np.ma.masked_invalid(mean), vmin=0.0, vmax=1.0, cmap="viridis"
        )
        for i in range(len(mean)):
            for j in range(len(mean)):
                if not np.isnan(mean[i, j]):
                    axis.text(
                        j,
                        i,
                        f"{mean[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if mean[i, j] < 0.6 else "black",
                    )
        average = accuracy_metrics(mean)["average_accuracy"]
        axis.set_title(f"{method}\n(average accuracy {average:.3f})", fontsize=10)
        axis.set_xticks(range(len(mean)), names, fontsize=8)
        axis.set_yticks(range(len(mean)), names, fontsize=8)
        axis.set_xlabel("accuracy on task")
    axes[0][0].set_ylabel("after training task")
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="accuracy")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# -- A sequence of tasks ---------------------------------------------------------


@dataclasses.dataclass
class SequenceResult:
    """What `learn()` returns.

    Attributes:
        accuracy: The `(T, T)` accuracy matrix (NaN above the diagonal).
        method: The method.
        scenario: `"task"` or `"class"`.
        task_names: The tasks' names.
        directory: The folder holding each step's model (`task_<i>.keras`).
        trained: The task indices this call trained (empty when everything
            was already done).
        warmup_epochs: Per task, the epochs of the new head's warm-up its
            weights come from (the best epoch with `"auto"`), `None` where
            there was none.
    """

    accuracy: np.ndarray
    method: str
    scenario: str
    task_names: list
    directory: str
    trained: list
    warmup_epochs: list = dataclasses.field(default_factory=list)

    def metrics(self):
        """`accuracy_metrics(self.accuracy)`."""
        return accuracy_metrics(self.accuracy)

    def model_path(self, task):
        """Path of the model saved after task `task` (0-based)."""
        return os.path.join(self.directory, f"task_{task + 1}.keras")


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_model(model, path):
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def _fingerprint(tasks):
    return [
        [
            t.name,
            list(t.classes),
            len(t.train[1]),
            int(np.sum(t.train[1])),
            len(t.test[1]),
            float(np.round(np.sum(np.asarray(t.train[0], "float64")), 3)),
        ]
        for t in tasks
    ]


def _accuracy(predicted, labels):
    return float(np.mean(np.argmax(predicted, -1) == labels))


def _evaluate(model, tasks, step, scenario, class_order):
    """Row `step` of the accuracy matrix: accuracy on tasks 0..step."""
    row = [float("nan")] * len(tasks)
    for j, task in enumerate(tasks[: step + 1]):
        x, y = task.test
        outputs = model.predict(x, batch_size=512, verbose=0)
        if scenario == "task":
            outputs = outputs if isinstance(outputs, list) else [outputs]
            row[j] = _accuracy(outputs[j], _labels(y, task, scenario, class_order))
        else:
            row[j] = _accuracy(outputs, _labels(y, task, scenario, class_order))
    return row


def _compile_plain(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
        * len(model.outputs),
    )


def _build(build_model, num_classes):
    model = build_model(num_classes)
    _check_model(model, "build_model(num_classes)")
    _heads(model)
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] != num_classes:
        raise ValueError(
            "`build_model(num_classes)` must return a model with one output of "
            f"`num_classes` logits. build_model({num_classes}) returned outputs "
            f"{[tuple(o.shape) for o in model.outputs]}."
        )
    return model


def learn(
    tasks,
    build_model,
    directory,
    scenario="class",
    method="lwf",
    epochs=20,
    batch_size=32,
    learning_rate=1e-2,
    alpha=None,
    temperature=2.0,
    warmup_epochs="auto",
    memory_size=200,
    selection="herding",
    seed=0,
    verbose=0,
):
    """Learns `tasks` in order; each step's model teaches the next (resumable).

    Step 0 trains `build_model(classes)` on the first task. Step `i` starts
    from step `i-1`'s model and, with `method`:

    - `"finetune"`: trains it on task `i` alone (the lower bound);
    - `"lwf"`: Learning without Forgetting: task `i`'s labels plus the KD
      term towards step `i-1`'s model on task `i`'s inputs
      (`LearningWithoutForgetting`). Task-incremental: a new head per task
      (`add_task_head`), first trained alone (`warm_up_head`, the paper's
      warm-up). Class-incremental: LwF.MC, one head grown by task `i`'s
      classes (`grow_head`), cross-entropy over every class seen and KD on
      the old classes' logits;
    - `"icarl"`: class-incremental LwF.MC trained on task `i` plus an
      `ExemplarMemory` of `memory_size` stored old examples (iCaRL's memory
      and distillation on old classes; softmax KD rather than iCaRL's
      sigmoids, and the network's head rather than nearest-mean-of-exemplars
      classifies);
    - `"joint"`: a new model trained on every task so far (the upper bound).

    After each step its model is saved to `directory/task_<i+1>.keras` (and
    the memory to `memory_<i+1>.npz`), then the accuracy row on the tasks so
    far is recorded in `directory/run.json`: the commit point. Calling
    `learn()` again with the same arguments continues after the last
    finished task (after a crash or `kill -9`); with other arguments it
    refuses the folder.

    Args:
        tasks: A non-empty list of `Task`s (see `split_classes`). In the
            class-incremental setting no class may be in two tasks.
        build_model: `build_model(num_classes)` returns a new functional or
            Sequential model whose last layer is a `Dense(num_classes)` head
            giving logits.
        directory: Folder for the models and `run.json` (created).
        scenario: `"class"` (one growing head, no task id at test time) or
            `"task"` (a head per task, the task id known). Defaults to
            `"class"`.
        method: `"finetune"`, `"lwf"`, `"icarl"` or `"joint"`. Defaults to
            `"lwf"`.
        epochs: Epochs per task. Defaults to `20`.
        batch_size: Defaults to `32`.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        alpha: Weight of the new labels' loss (see
            `LearningWithoutForgetting`). Defaults to `None`: the paper's
            `lambda_o = 1`, `alpha_for_lambda(1.0, temperature)`.
        temperature: KD temperature. Defaults to `2.0`.
        warmup_epochs: The new head's training alone (trunk frozen) before
            each task-incremental step (also for `"finetune"`, so both start
            alike): `"auto"` trains it until its cross-entropy on a held-out
            20% of the new task's training data (stratified, seeded by the
            step's seed) has not improved by more than 1e-4 for 10 epochs
            (at most 200) and keeps its best epoch (see `warm_up_head`); an
            integer trains it for that many epochs on all the data; `0` skips
            it. The epochs
            chosen are recorded in `run.json` (`"warmup_epochs_run"`).
            Defaults to `"auto"`.
        memory_size: Stored examples for `"icarl"` (at least one per class).
            Defaults to `200`.
        selection: `"herding"` or `"random"` exemplars. Defaults to
            `"herding"`.
        seed: Seed of weights and data order (step `i` uses `seed * 1000 +
            i`). Defaults to `0`.
        verbose: Passed to `fit()`. Defaults to `0`.

    Returns:
        A `SequenceResult` (accuracy matrix, metrics, model paths).

    Example:

    ```python
    tasks = kd.continual.split_classes(
        kd.data.load_digits(), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    )
    result = kd.continual.learn(
        tasks, lambda n: kd.models.student_mlp(num_classes=n), "runs/lwf",
        scenario="class", method="icarl", memory_size=100,
    )
    print(kd.continual.format_matrix(result.accuracy))
    ```
    """
    tasks = _check_tasks(tasks, scenario)
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    if method == "icarl" and scenario != "class":
        raise ValueError(
            "method='icarl' is class-incremental (one growing head); use "
            "scenario='class', or method='lwf' for task-incremental learning."
        )
    if not callable(build_model):
        raise ValueError(
            "`build_model` must be a callable `build_model(num_classes) -> "
            f"keras.Model`. Received: build_model={build_model!r}"
        )
    epochs = _check_count(epochs, "epochs")
    batch_size = _check_count(batch_size, "batch_size")
    warmup_epochs = _check_warmup_epochs(warmup_epochs, "warmup_epochs", low=0)
    temperature = kd_params.check("temperature", temperature)
    alpha = (
        alpha_for_lambda(1.0, temperature)
        if alpha is None
        else (kd_params.check("alpha", alpha))
    )
    learning_rate = kd_params.check_positive(learning_rate, "learning_rate")
    if (
        isinstance(memory_size, bool)
        or not isinstance(memory_size, int | np.integer)
        or (memory_size < 0)
    ):
        raise ValueError(
            "`memory_size` (the number of stored old examples) must be an integer "
            f">= 0. Received: memory_size={memory_size!r}"
        )
    memory = None
    if method == "icarl":
        memory = ExemplarMemory(memory_size, selection, seed)
        classes = sum(len(t.classes) for t in tasks)
        if memory.size < classes:
            raise ValueError(
                f"`memory_size` must hold at least one example per class: "
                f"{classes} classes need memory_size >= {classes}. Received: "
                f"memory_size={memory_size!r}"
            )
    config = {
        "scenario": scenario,
        "method": method,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "alpha": alpha,
        "temperature": temperature,
        "warmup_epochs": warmup_epochs,
        "memory": memory.get_config() if memory else None,
        "seed": seed,
        "tasks": _fingerprint(tasks),
    }
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state_path = os.path.join(directory, _STATE_FILE)
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        saved = json.loads(json.dumps(config))
        if state.get("config") != saved:
            differ = sorted(
                k for k in saved if state.get("config", {}).get(k) != saved[k]
            )
            raise ValueError(
                f"{directory!r} holds a continual-learning run with other settings "
                f"({', '.join(differ)} differ). Use another folder, or delete it "
                "to start again."
            )
    else:
        state = {"config": config, "finished": 0, "accuracy": []}
        _write_json(state_path, state)

    class_order = {c: i for i, c in enumerate(c for t in tasks for c in t.classes)}
    finished = state["finished"]
    model = None
    if 0 < finished < len(tasks):
        model = keras.models.load_model(
            os.path.join(directory, f"task_{finished}.keras"), compile=False
        )
        if memory is not None:
            memory.load(os.path.join(directory, f"memory_{finished}.npz"))
    trained = []
    state.setdefault("warmup_epochs_run", [None] * finished)
    for step in range(finished, len(tasks)):
        step_seed = int(seed) * 1000 + step
        keras.utils.set_random_seed(step_seed)
        task = tasks[step]
        notes = {}
        model = _train_step(
            model,
            tasks,
            step,
            build_model,
            scenario,
            method,
            class_order,
            memory,
            epochs,
            batch_size,
            learning_rate,
            alpha,
            temperature,
            warmup_epochs,
            verbose,
            step_seed,
            notes,
        )
        if memory is not None:
            x, y = task.train
            memory.update(model, x, y)
            memory.save(os.path.join(directory, f"memory_{step + 1}.npz"))
        _save_model(model, os.path.join(directory, f"task_{step + 1}.keras"))
        row = _evaluate(model, tasks, step, scenario, class_order)
        state["accuracy"].append(row)
        state["warmup_epochs_run"].append(notes.get("warmup_epochs"))
        state["finished"] = step + 1
        _write_json(state_path, state)
        trained.append(step)
    return SequenceResult(
        accuracy=np.asarray(state["accuracy"], "float64"),
        method=method,
        scenario=scenario,
        task_names=[t.name for t in tasks],
        directory=directory,
        trained=trained,
        warmup_epochs=list(state["warmup_epochs_run"]),
    )


def _labels(task_y, task, scenario, class_order):
    if scenario == "task":
        return np.asarray([task.classes.index(int(v)) for v in task_y], "int64")
    return np.asarray([class_order[int(v)] for v in task_y], "int64")


def _train_step(
    model,
    tasks,
    step,
    build_model,
    scenario,
    method,
    class_order,
    memory,
    epochs,
    batch_size,
    learning_rate,
    alpha,
    temperature,
    warmup_epochs,
    verbose,
    step_seed,
    notes,
):
    task = tasks[step]
    x, y = task.train
    fit = {"epochs": epochs, "batch_size": batch_size, "verbose": verbose}
    if method == "joint":
        return _train_joint(
            tasks[: step + 1], build_model, scenario, class_order, learning_rate, fit
        )
    if step == 0:
        model = _build(build_model, len(task.classes))
        _compile_plain(model, learning_rate)
        model.fit(x, _labels(y, task, scenario, class_order), shuffle=True, **fit)
        return model
    weight = 1.0 if method == "finetune" else alpha
    if scenario == "task":
        student = add_task_head(model, len(task.classes))
        labels = _labels(y, task, scenario, class_order)
        if warmup_epochs:
            history = warm_up_head(
                student,
                x,
                labels,
                epochs=warmup_epochs,
                learning_rate=learning_rate,
                batch_size=batch_size,
                seed=step_seed,
            )
            notes["warmup_epochs"] = int(history.best_epoch)
        trained = student
    else:
        seen = int(model.outputs[0].shape[-1])
        trained = grow_head(model, len(task.classes))
        # LwF.MC without a memory: the labels' cross-entropy over the new
        # classes only, the old logits kept by the KD term alone.
        new_only = method == "lwf"
        student = old_classes_view(trained, seen, new_classes_only=new_only)
        if memory is not None and len(memory):
            x_old, y_old = memory.arrays()
            x = np.concatenate([x, x_old])
            y = np.concatenate([np.asarray(y), y_old])
        labels = _labels(y, task, scenario, class_order) - (seen if new_only else 0)
    lwf = LearningWithoutForgetting(
        student, model, alpha=weight, temperature=temperature
    )
    lwf.compile(optimizer=keras.optimizers.Adam(learning_rate))
    lwf.fit(x, labels, shuffle=True, **fit)
    return trained


def _train_joint(tasks, build_model, scenario, class_order, learning_rate, fit):
    """A new model trained on every task in `tasks` (the upper bound)."""
    xs = np.concatenate([t.train[0] for t in tasks])
    if scenario == "class":
        model = _build(build_model, sum(len(t.classes) for t in tasks))
        ys = np.concatenate(
            [_labels(t.train[1], t, scenario, class_order) for t in tasks]
        )
        _compile_plain(model, learning_rate)
        model.fit(xs, ys, shuffle=True, **fit)
        return model
    model = _build(build_model, len(tasks[0].classes))
    for task in tasks[1:]:
        model = add_task_head(model, len(task.classes))
    labels, weights = [], []
    for k, task in enumerate(tasks):
        y = np.zeros(len(xs), "int64")
        w = np.zeros(len(xs), "float32")
        start = sum(len(t.train[1]) for t in tasks[:k])
        end = start + len(task.train[1])
        y[start:end] = _labels(task.train[1], task, scenario, class_order)
        w[start:end] = 1.0
        labels.append(y)
        weights.append(w)
    _compile_plain(model, learning_rate)
    model.fit(
        xs,
        labels if len(tasks) > 1 else labels[0],
        sample_weight=weights if len(tasks) > 1 else weights[0],
        shuffle=True,
        **fit,
    )
    return model


def compare(tasks, build_model, directory, methods=METHODS, **kwargs):
    """Runs `learn()` for several methods (baselines included), one subfolder each.

    Args:
        tasks: The `Task`s.
        build_model: As in `learn()`.
        directory: Parent folder; method `m` runs in `directory/m`.
        methods: The methods. Defaults to all: `("finetune", "lwf",
            "icarl", "joint")` (drop `"icarl"` for `scenario="task"`).
        **kwargs: Passed to `learn()`.

    Returns:
        `{method: SequenceResult}`.
    """
    methods = list(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(
            f"`methods` must be a non-empty list drawn from {METHODS}. Received: "
            f"methods={methods!r}"
        )
    return {
        m: learn(
            tasks,
            build_model,
            os.path.join(os.fspath(directory), m),
            method=m,
            **kwargs,
        )
        for m in methods
    }
