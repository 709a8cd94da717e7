"""Feature (hint) distillation, FitNets: match intermediate layers.

A `Hint` pairs a teacher layer (the hint) with a student layer (the guided
layer). The student's features go through a small trainable adaptor (a 1x1
`Conv2D` for image features, a `Dense` layer for vectors) when their shape
differs from the teacher's, and the squared error between the two is added to
the distiller's loss (`keras_distill.losses.hint_loss`).

Layers are found by name in functional and Sequential models. A subclassed
model exposes its features itself: its `call()` accepts `return_features=True`
and then returns `(outputs, {name: tensor})`.

Reference: Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints
for Thin Deep Nets", ICLR 2015 (https://arxiv.org/abs/1412.6550).
"""

import inspect

import keras

from keras_distill import _compat
from keras_distill import params as kd_params
from keras_distill import terms as kd_terms

ADAPTORS = ("auto", None)


def hint_term(loss):
    """The `DistillationTerm` of a hint's `loss`: a registered name or a term.

    One resolver for every term (`kd.terms.get_term`), asked for a term
    that reads features: `"mse"` (the FitNets hint), `"mae"`, `"cosine"`,
    `"rkd_distance"`, `"at"`, ... or a `kd.terms.DistillationTerm` (or its
    saved config), used as it is.
    """
    return kd_terms.get_term(loss, "loss", source="features")


def check_weight(value, name):
    """Returns `value` as a float if it is finite and >= 0, else raises."""
    return kd_params.Param(name, 1.0, 0.0).check(value)


@keras.saving.register_keras_serializable(package="keras_distill")
class Hint:
    """One FitNets hint: a teacher layer whose output guides a student layer.

    The student layer's output, passed through an adaptor when the shapes
    differ, is compared with the teacher layer's output by `loss` (by
    default the mean squared error, `keras_distill.losses.hint_loss`),
    weighted by `weight`.

    Reference: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015
    (https://arxiv.org/abs/1412.6550).

    Args:
        teacher_layer: Name of the teacher layer (functional or Sequential
            teacher), or the feature name a subclassed teacher returns from
            `call(x, return_features=True)`.
        student_layer: The same, for the student.
        weight: Non-negative weight of this hint's term. Defaults to `1.0`.
        adaptor: `"auto"`: when the shapes differ, a trainable 1x1 `Conv2D`
            for 4-D features `(batch, height, width, channels)` (the spatial
            sizes must match) or a `Dense` layer for 2-D features
            `(batch, units)`, trained with the student; `None`: no adaptor,
            the shapes must already match for an elementwise `loss` (MSE,
            MAE, cosine). Relational terms (RKD, PKT, similarity-preserving)
            compare each batch's own structure, so with `adaptor=None` they
            take features of any widths; attention transfer needs only the
            spatial sizes to match. Defaults to `"auto"`.
        loss: The distance: `"mse"` (FitNets), `"mae"`, `"cosine"`
            (`1 - cos`), or a `kd.losses.DistillationTerm` given the
            teacher's and the (adapted) student's features, e.g.
            `kd.losses.AttentionTransferTerm()`. Defaults to `"mse"`.

    Example:

    ```python
    distiller = kd.Distiller(
        student=kd.models.student_cnn(),
        teacher=teacher,  # kd.models.teacher_cnn(), trained
        hints=[kd.hints.Hint("conv2", "conv1")],
    )
    ```
    """

    def __init__(
        self, teacher_layer, student_layer, weight=1.0, adaptor="auto", loss="mse"
    ):
        for argument, value in (
            ("teacher_layer", teacher_layer),
            ("student_layer", student_layer),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"`{argument}` must be a layer name (a non-empty string). "
                    f"Received: {argument}={value!r}"
                )
        weight = check_weight(weight, "weight")
        if adaptor not in ADAPTORS:
            raise ValueError(
                f"`adaptor` must be one of {ADAPTORS}. Received: adaptor={adaptor!r}"
            )
        self.term = hint_term(loss)
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.weight = weight
        self.adaptor = adaptor
        self.loss = loss if isinstance(loss, str) else self.term

    def get_config(self):
        config = {
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "weight": self.weight,
            "adaptor": self.adaptor,
        }
        if self.loss != "mse":
            config["loss"] = (
                self.loss
                if isinstance(self.loss, str)
                else keras.saving.serialize_keras_object(self.loss)
            )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (
            f"Hint({self.teacher_layer!r}, {self.student_layer!r}, "
            f"weight={self.weight!r}, adaptor={self.adaptor!r}, loss={self.loss!r})"
        )


def check_hints(hints):
    """A list of `Hint`s from `None`, a `Hint`, or a list of `Hint`s or configs."""
    if hints is None:
        return []
    if isinstance(hints, Hint | dict):
        hints = [hints]
    if not isinstance(hints, list | tuple):
        raise ValueError(
            f"`hints` must be a list of `Hint`s or None. Received: hints={hints!r}"
        )
    checked = []
    for hint in hints:
        if isinstance(hint, dict):
            hint = Hint.from_config(hint)
        if not isinstance(hint, Hint):
            raise ValueError(
                f"`hints` must hold `Hint` objects. Received an item {hint!r}"
            )
        checked.append(hint)
    return checked


def returns_features(model):
    """True if `model.call` accepts `return_features` (subclassed models)."""
    try:
        parameters = inspect.signature(model.call).parameters
    except (TypeError, ValueError):
        return False
    return "return_features" in parameters


def _is_graph(model):
    return _compat.is_functional(model)


class FeatureView:
    """Runs a model and returns `(outputs, [features])` for named layers.

    Functional and Sequential models are re-wrapped as a functional model
    with the layers' outputs as extra outputs (it shares the model's layers
    and weights); subclassed models are called with `return_features=True`.
    A plain Python object, so that Keras neither tracks nor saves the view.

    Args:
        model: The teacher or student.
        layer_names: Layer (or feature) names, one per hint.
        role: `"teacher"` or `"student"`, for error messages.
    """

    def __init__(self, model, layer_names, role):
        self.model = model
        self.layer_names = list(layer_names)
        self.role = role
        self.unique = list(dict.fromkeys(self.layer_names))
        self.graph = None
        if returns_features(model):
            return
        if not _is_graph(model):
            raise ValueError(
                f"Hints need the {role}'s intermediate features, but {role} "
                f"{model.name!r} is a subclassed model whose `call()` does not "
                "accept `return_features`. Give it `call(self, x, training=None, "
                "return_features=False)` that returns `(outputs, {name: tensor})` "
                "when `return_features=True`, or use a functional model."
            )
        available = [
            layer.name
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]
        for name in self.unique:
            if name not in available:
                raise ValueError(
                    f"Hint layer {name!r} is not a layer of the {role} "
                    f"{model.name!r}. Available layer names: {available}"
                )
        inputs, outputs = model.inputs, model.outputs
        self.num_outputs = len(outputs)
        features = [model.get_layer(name).output for name in self.unique]
        self.graph = keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            [*outputs, *features],
            name=f"{model.name}_features",
        )

    def static_shapes(self):
        """Feature shapes (with batch axis) per hint, or None if not yet known."""
        if self.graph is None:
            return None
        shapes = {
            name: tuple(self.model.get_layer(name).output.shape) for name in self.unique
        }
        return [shapes[name] for name in self.layer_names]

    def symbolic_shapes(self, input_shape):
        """Feature shapes per hint from a symbolic call on `input_shape`."""
        static = self.static_shapes()
        if static is not None:
            return static
        _, features = self(keras.KerasTensor(input_shape), training=False)
        return [tuple(f.shape) for f in features]

    def __call__(self, x, training=False):
        if self.graph is not None:
            results = self.graph(x, training=training)
            n = self.num_outputs
            outputs = results[0] if n == 1 else list(results[:n])
            by_name = dict(zip(self.unique, results[n:]))
        else:
            returned = self.model(x, training=training, return_features=True)
            if not (isinstance(returned, tuple | list) and len(returned) == 2):
                raise ValueError(
                    f"The {self.role} {self.model.name!r} must return "
                    "`(outputs, {name: tensor})` when called with "
                    f"`return_features=True`. Received: {type(returned).__name__}"
                )
            outputs, by_name = returned
            if not isinstance(by_name, dict):
                raise ValueError(
                    f"The {self.role} {self.model.name!r} must return a dict of "
                    "features as the second item with `return_features=True`. "
                    f"Received: {type(by_name).__name__}"
                )
            for name in self.unique:
                if name not in by_name:
                    raise ValueError(
                        f"Hint layer {name!r} is not among the features that the "
                        f"{self.role} {self.model.name!r} returns with "
                        f"`return_features=True`. Returned feature names: "
                        f"{sorted(by_name)}"
                    )
        return outputs, [by_name[name] for name in self.layer_names]


def make_adaptor(hint, teacher_shape, student_shape, name):
    """The layer mapping student features onto the teacher's shape.

    `keras.layers.Identity` when the shapes already match; a built 1x1
    `Conv2D` (4-D features) or `Dense` (2-D features) otherwise, if
    `hint.adaptor == "auto"`.

    Args:
        hint: The `Hint`.
        teacher_shape: Teacher feature shape, with the batch axis.
        student_shape: Student feature shape, with the batch axis.
        name: Name of the adaptor layer.
    """
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    pair = (
        f"teacher layer {hint.teacher_layer!r} of shape {teacher_shape}, "
        f"student layer {hint.student_layer!r} of shape {student_shape}"
    )
    if teacher_shape[1:] == student_shape[1:]:
        return keras.layers.Identity(name=name)
    if hint.adaptor is None and not hint.term.elementwise:
        # A relational term compares each batch's own structure: any widths.
        return keras.layers.Identity(name=name)
    if hint.adaptor is None:
        raise ValueError(
            f"Hint features must have the same shape with adaptor=None. "
            f"Received: {pair}. Use adaptor='auto' for a trainable adaptor."
        )
    if len(teacher_shape) == 4 and len(student_shape) == 4:
        if teacher_shape[1:3] != student_shape[1:3]:
            raise ValueError(
                "A 1x1 convolution adaptor needs features of the same spatial "
                f"size (height, width). Received: {pair}. Choose layers of the "
                "same resolution."
            )
        adaptor = keras.layers.Conv2D(teacher_shape[-1], 1, name=name)
    elif len(teacher_shape) == 2 and len(student_shape) == 2:
        adaptor = keras.layers.Dense(teacher_shape[-1], name=name)
    else:
        raise ValueError(
            "Cannot build an adaptor between these features: it supports 4-D "
            "image features (batch, height, width, channels) with the same "
            f"spatial size, or 2-D features (batch, units). Received: {pair}."
        )
    adaptor.build(student_shape)
    return adaptor


def log_names(hints):
    """The log name of each hint's own loss: `hint_<teacher layer>_loss`.

    Logged (and tracked) when a distiller has more than one hint, beside
    their weighted sum `hint_loss`, as several distillation terms are. Two
    hints of one teacher layer are told apart by their position (`_2`, ...).

    Example:

    ```python
    log_names([Hint("conv1", "c1"), Hint("conv2", "c2"), Hint("conv2", "c3")])
    # ["hint_conv1_loss", "hint_conv2_loss", "hint_conv2_2_loss"]
    ```
    """
    names, seen = [], {}
    for hint in hints:
        seen[hint.teacher_layer] = seen.get(hint.teacher_layer, 0) + 1
        count = seen[hint.teacher_layer]
        suffix = f"_{count}" if count > 1 else ""
        names.append(f"hint_{hint.teacher_layer}{suffix}_loss")
    return names
