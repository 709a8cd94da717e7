"""Facts about the student and teacher models the `Distiller` wires together.

Output counts and class counts, what a model's last layer returns, input
shapes, and the uncompiled inference view of a compiled teacher.
"""

import keras
import numpy as np

from keras_distill import _compat
from keras_distill.distiller import tokens as kd_tokens


def _output_count(model):
    """How many outputs a functional or Sequential model has (else 1)."""
    if not _compat.is_functional(model):
        return 1
    try:
        return len(model.outputs)
    except (AttributeError, ValueError):
        return 1


def _num_classes(model):
    """The size of the model's last output axis, or None when unknown."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], tuple):
        return None  # Several outputs: checked at the first batch instead.
    return shape[-1] if shape else None


def _inference_view(teacher):
    """An uncompiled functional view of `teacher` that shares its layers.

    A compiled teacher carries its own optimizer, which Keras would otherwise
    save inside the distiller's file. Functional and Sequential teachers are
    re-wrapped without it; subclassed teachers are returned as they are, and
    so are subclasses of the functional model (a KerasHub task such as
    `GPT2CausalLM`): their layers and weights belong to their own class (a
    view of one with tied embeddings would not load back).
    """
    if getattr(teacher, "optimizer", None) is None:
        return teacher
    is_graph = _compat.is_functional(teacher) and _compat.is_plain_functional(teacher)
    try:
        inputs, outputs = teacher.inputs, teacher.outputs
    except (AttributeError, ValueError):
        return teacher
    if not (is_graph and inputs and outputs):
        return teacher
    inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = outputs[0] if len(outputs) == 1 else outputs
    return keras.Model(inputs, outputs, name=teacher.name)


class _Untracked:
    """Holds models out of Keras's tracking (and so out of the saved file)."""

    def __init__(self, models):
        self.models = list(models)


def _last_activation(model):
    """`"softmax"`, `"linear"`, ... of a functional model's last layer, or None.

    A last layer that is itself a functional model (a `Sequential` wrapping
    another) is looked into.
    """
    if not _compat.is_functional(model) or not model.layers:
        return None
    layer = model.layers[-1]
    if isinstance(layer, keras.Model):
        return _last_activation(layer)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name in ("softmax", "linear", "sigmoid", "log_softmax"):
        return name
    return None


def _looks_like(values):
    """`"probabilities"` if every row is in [0, 1] and sums to 1, else `"logits"`."""
    if values.ndim < 2 or values.shape[-1] < 2 or not np.all(np.isfinite(values)):
        return None
    in_range = np.all((values >= 0) & (values <= 1))
    sums_to_one = np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)
    return "probabilities" if in_range and sums_to_one else "logits"


def _outputs_message(name, model, declared, actual):
    argument = "student_outputs" if name == "student" else "teacher_outputs"
    return (
        f"The {name} ({model.name}) returns {actual}, but {argument}="
        f"{declared!r}. Pass {argument}={actual!r} (or change the last layer of "
        f"the {name}); training on a misread distribution gives a wrong student."
    )


class ComposedTeacher:
    """A teacher computed from other teachers' outputs on the same inputs.

    A mixin (`transfer.GroupedTeacher` is one): its `member_teachers()`
    names each member and the kind its outputs are read as, so the rule of
    a plain teacher's declared outputs (`_check_declared_outputs` at
    construction, `_check_declared_values` on the first batch) covers every
    member too: a softmax member read as logits would be a wrong
    distribution that the composite's own outputs no longer show.
    """

    def member_teachers(self):
        """`[(model, declared)]`: each member and `"logits"`/`"probabilities"`."""
        raise NotImplementedError


def _declared_models(name, model, declared):
    """`(name, model, declared)` of `model` and of each member of a
    `ComposedTeacher` (members of members too)."""
    found = [(name, model, declared)]
    if isinstance(model, ComposedTeacher):
        inside = f"{name} inside {type(model).__name__} {model.name!r}"
        for member, kind in model.member_teachers():
            found += _declared_models(inside, member, kind)
    return found


def _check_declared_outputs(name, model, declared):
    """Raises if a model's last activation contradicts `declared`.

    The model's, and those of the members of a `ComposedTeacher`. A sigmoid
    is refused whatever is declared: its outputs are one independent
    probability per class, not a distribution over the classes.
    """
    for label, part, kind in _declared_models(name, model, declared):
        _check_last_activation(label, part, kind)


def _check_declared_values(name, model, declared, sample):
    """Raises if `model`'s outputs on `sample` contradict `declared`.

    For the models whose last activation is unknown (subclassed models),
    `model` and each member of a `ComposedTeacher`: rows in [0, 1] summing
    to 1 are probabilities, anything else logits. A model that fails on
    `sample` is left to the step, which reports its own error.
    """
    for label, part, kind in _declared_models(name, model, declared):
        if _last_activation(part) is not None:
            continue  # Checked from the architecture at construction.
        try:
            outputs = part(sample, training=False)
        except Exception:  # noqa: BLE001  (the step reports its own errors)
            continue
        if not hasattr(outputs, "shape"):
            continue
        looks = _looks_like(np.asarray(keras.ops.convert_to_numpy(outputs), "float64"))
        if looks is not None and looks != kind:
            raise ValueError(_outputs_message(label, part, kind, looks))


def _check_last_activation(name, model, declared):
    activation = _last_activation(model)
    if activation == "sigmoid":
        argument = "student_outputs" if name == "student" else "teacher_outputs"
        raise ValueError(
            f"The {name} ({model.name}) ends in a sigmoid: its outputs are "
            "independent per-class probabilities, not a distribution over the "
            "classes, so they are neither logits nor softmax probabilities. End "
            f"the {name} in a linear layer (logits, {argument}='logits') or a "
            f"softmax ({argument}='probabilities')."
        )
    if activation == "softmax" and declared == "logits":
        raise ValueError(_outputs_message(name, model, declared, "probabilities"))
    if activation in ("linear", "log_softmax") and declared == "probabilities":
        raise ValueError(_outputs_message(name, model, declared, "logits"))


def _check_input_shape(name, model, x):
    """Raises a ValueError naming the model if `x` cannot be its input."""
    try:
        expected = model.input_shape
    except (AttributeError, ValueError, RuntimeError):
        return
    if not (
        isinstance(expected, tuple)
        and all(d is None or isinstance(d, int) for d in expected)
    ):
        return  # Several inputs, or unknown: the model checks it itself.
    if not hasattr(x, "shape") or isinstance(x, dict | list | tuple):
        return
    received = tuple(x.shape)
    if len(received) != len(expected) or any(
        e is not None and r is not None and e != r
        for e, r in zip(expected[1:], received[1:])
    ):
        raise ValueError(
            f"The {name} ({model.name}) expects inputs of shape {expected}, but "
            f"the batch's inputs have shape {received}. Feed the data the "
            f"{name} was built for, or rebuild the {name} for this input shape."
        )


def _check_teacher_built(name, model):
    """Raises if a teacher was never built: its weights would be random.

    A built teacher may still be untrained (that cannot be told from the
    model); an unbuilt one holds no weights at all, so the distiller would
    build it with fresh random weights and distil noise.
    """
    if not model.built and not model.weights:
        raise ValueError(
            f"The {name} ({model.name}) is not built: it holds no weights, so "
            "distilling from it would create random ones and teach noise. "
            f"Train the {name} (`{name}.fit(...)`), load its weights "
            f"(`{name}.load_weights(...)`) or load it with "
            "`keras.models.load_model(...)` before passing it to the Distiller."
        )


def _check_no_shared_weights(student, teachers):
    """Raises if the student holds a weight of a teacher (the teacher is frozen)."""
    own = {id(variable) for variable in student.weights}
    for name, teacher in teachers:
        shared = [v for v in teacher.weights if id(v) in own]
        if shared:
            raise ValueError(
                f"The student ({student.name}) shares {len(shared)} weights with "
                f"the {name} ({teacher.name}), e.g. {shared[0].path!r}: the "
                f"{name} is frozen, so the shared layers could not train (and "
                "would change the teacher). Build the student from its own "
                "layers, e.g. `keras.models.clone_model(...)`."
            )


def _check_output_structures(student, teachers):
    """Raises if a teacher has several outputs and the student one.

    Several outputs are distilled output by output, so the student needs the
    same number; a single-output student has nothing to match them with.
    """
    if _output_count(student) != 1:
        return
    for name, teacher in teachers:
        count = _output_count(teacher)
        if count > 1:
            raise ValueError(
                f"The {name} ({teacher.name}) has {count} outputs "
                f"{teacher.output_shape}, but the student ({student.name}) has "
                f"one, {student.output_shape}. Give the student one output per "
                f"{name} output (distilled output by output), or distil from a "
                f"{name} with a single output (e.g. "
                f"`keras.Model({name}.inputs, {name}.outputs[0])`)."
            )


def check_output_counts(student, teachers):
    """Raises if the student has several outputs and a teacher another number.

    A `Distiller` distils output `i` from the teacher's output `i` (a subclass
    that maps the outputs itself, such as LwF's, overrides
    `soft_predictions`). A 2-output student with a 1-output teacher failed
    only in the step, with a rank error about tokens.
    """
    outputs = _output_count(student)
    for i, teacher in enumerate(teachers):
        count = _output_count(teacher)
        if outputs > 1 and count != outputs:
            name = "teacher" if len(teachers) == 1 else f"teacher[{i}]"
            raise ValueError(
                f"The student ({student.name}) has {outputs} outputs "
                f"{student.output_shape}, but the {name} ({teacher.name}) has "
                f"{count}, {teacher.output_shape}. Several outputs are distilled "
                f"output by output: give the {name} one output per student "
                "output, or distil a single-output view of the student (e.g. "
                "`keras.Model(student.inputs, student.outputs[0])`)."
            )


def check_models(student, teachers, from_config=False):
    """Checks the models a `Distiller` is given; returns `[(name, model)]`.

    The student first, then each teacher under the name errors use
    (`"teacher"`, or `"teacher[i]"` with several).
    """
    if not teachers:
        raise ValueError("`teacher` must be a keras.Model or a non-empty list.")
    named = [("student", student)] + [
        ("teacher" if len(teachers) == 1 else f"teacher[{i}]", t)
        for i, t in enumerate(teachers)
    ]
    for name, model in named:
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"`{name}` must be a `keras.Model`. Received: {name}={model!r} "
                f"of type {type(model).__name__}"
            )
    if any(student is t for t in teachers):
        raise ValueError("`student` and `teacher` must be different models.")
    if not from_config:
        for name, model in named[1:]:
            _check_teacher_built(name, model)
    _check_no_shared_weights(student, named[1:])
    _check_output_structures(student, named[1:])
    return named


def check_output_shapes(named, teacher_vocabulary, student_outputs, teacher_outputs):
    """Checks that the models' outputs fit together and are what they declare.

    Sequence outputs (rank 3 and up) are compared per token, with the
    teacher's vocabulary mapping; one value per example must name the same
    number of classes in every model.
    """
    student = named[0][1]
    classes = {name: _num_classes(model) for name, model in named}
    known = {name: c for name, c in classes.items() if c is not None}
    ranks = {name: kd_tokens.output_rank(model) for name, model in named}
    if any((rank or 0) > 2 for rank in ranks.values()):
        for name, model in named[1:]:  # sequence outputs: per token
            if ranks[name] is not None and ranks["student"] is not None:
                kd_tokens.check_shapes(
                    model.output_shape, student.output_shape, teacher_vocabulary, name
                )
    elif len(set(known.values())) > 1:
        shapes = ", ".join(
            f"{name} {model.output_shape}"
            for name, model in named
            if classes[name] is not None
        )
        raise ValueError(
            "Teacher and student must predict the same number of classes. "
            f"Received output shapes: {shapes}."
        )
    for name, model in named:
        declared = student_outputs if name == "student" else teacher_outputs
        _check_declared_outputs(name, model, declared)
