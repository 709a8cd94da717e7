"""Checks of the data that reaches the training step, and their errors.

A bad batch must never train a silently wrong student. These checks run
inside the traced step, every batch, and cost a few reductions: the
message is only formatted when a check fails (in the false branch of a
`tf.cond`), and the failure stops the step before the optimizer updates any
weight. `Distiller.fit()` and `evaluate()` turn a failed check into a plain
`ValueError` with the message (see `raise_readable`).

Example:

```python
ok = checks.labels_ok(y, num_classes)
checks.graph_assert(ok, lambda: checks.format_message(
    "Labels must be integers in [0, {}); received {} at training step {}.",
    num_classes, checks.first_bad(y, ...), step))
```
"""

import contextlib
import math
import re

PREFIX = "keras_distill check failed: "
END = " <end of message>"

# Error classes a check's message may name (`<ClassName>message`), so that
# `raise_readable` raises the producer's own class (a `tf.data` pipeline's
# check, say) without this module importing the producer.
_ERROR_CLASSES = {}


def error_class(cls):
    """Registers `cls` (an exception class) for `tagged` messages; returns it."""
    _ERROR_CLASSES[cls.__name__] = cls
    return cls


def tagged(message: str, cls) -> str:
    """`message` as a check's message that `raise_readable` raises as `cls`."""
    return f"{PREFIX}<{cls.__name__}>{message}{END}"


def graph_assert(ok, message_fn, guard=()):
    """Fails the step with `message_fn()` (a string tensor) when `ok` is false.

    `message_fn` is only run when the check fails, so formatting costs
    nothing on good batches.

    Args:
        guard: Variables that no later op of the traced function may write
            before the check has passed. The failing branch reads them (only
            when it runs), so TensorFlow's automatic control dependencies
            order every later write of each of them after the check: writes
            that do not use the gradients (weight decay, an optimizer's
            counters) wait for it too, while the rest of the step (the
            optimizer's arithmetic) runs as early as before.
    """
    import tensorflow as tf

    def fail():
        message = tf.strings.join([PREFIX, message_fn(), END])
        reads = [tf.size(variable) for variable in guard]
        with tf.control_dependencies([tf.debugging.Assert(False, [message]), *reads]):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), fail)


def check_all(problems, guard=()):
    """One assertion for a list of `(failed, message_fn)` problems.

    The messages of the failed problems (only those) are formatted and
    joined when the check fails; a step that passes runs one `cond`.
    `guard`: variables whose later writes wait for the check (see
    `graph_assert`).
    """
    import tensorflow as tf

    if not problems:
        return None
    if len(problems) == 1:  # the common step: one flag, no stack
        failed = problems[0][0]
        # `failed` is usually `logical_not(ok)`: use `ok` itself.
        negated = getattr(failed, "op", None) is not None and (
            failed.op.type == "LogicalNot"
        )
        ok = failed.op.inputs[0] if negated else tf.logical_not(failed)
    else:
        ok = tf.logical_not(tf.reduce_any(tf.stack([flag for flag, _ in problems])))

    def message():
        parts = [tf.cond(flag, fn, lambda: tf.constant("")) for flag, fn in problems]
        joined = tf.strings.reduce_join(tf.stack(parts), separator=" ")
        return tf.strings.strip(joined)

    return graph_assert(ok, message, guard)


# The tag of `assert_finite`'s message, followed by the names of its values.
NONFINITE = "non-finite loss or gradients: "


def assert_finite(named_values, ok, guard=()):
    """Stops the step, in one op and without a `tf.cond`, when `ok` is false.

    The cheap check of every training step (is the loss, and are its
    gradients, finite?). TensorFlow's `Assert` kernel formats its data only
    when it fails, so a passing step pays for one op; a `tf.cond` (as in
    `graph_assert`) costs several on every step, about 2% of a small
    student's step (`benchmarks/step_cost.py`). The failure carries the
    values, which `raise_readable` turns into a message naming each.

    Args:
        named_values: `(name, scalar tensor)` pairs reported on failure (the
            loss of each term; `"gradients"`, the sum of every gradient).
        ok: Scalar bool tensor; the step fails when it is false.
        guard: Variables that no later op of the traced function may read or
            write before the check has passed. They are inputs of the op, so
            TensorFlow's automatic control dependencies order every later use
            of each after it (the optimizer's updates, weight decay, counters
            and the loss trackers all wait; nothing else does).

    Example:

    ```python
    checks.assert_finite([("loss", loss)], tf.math.is_finite(loss),
                         guard=model.trainable_variables)
    ```
    """
    import tensorflow as tf

    names = ",".join(name for name, _ in named_values)
    values = [tf.cast(value, "float32") for _, value in named_values]
    return tf.raw_ops.Assert(
        condition=ok,
        data=[
            tf.constant(f"{PREFIX}{NONFINITE}{names}{END}"),
            *values,
            *[variable.handle for variable in guard],
        ],
        summarize=1,
    )


def _place(where):
    """`" in <batch>"` from the callable `where`, or "" (the message matters more)."""
    if where is None:
        return ""
    try:
        return f" in {where()}"
    except Exception:  # noqa: BLE001
        return ""


def _nonfinite_message(text, error_text, where=None, note=None):
    """The readable message of a failed `assert_finite`, or None.

    `text` is the tagged message (`NONFINITE`, then the names), `error_text`
    the whole error, in which each value follows the message in brackets.
    """
    names = text[len(NONFINITE) :].split(",")
    tail = error_text.split(END, 1)[-1]
    found = re.findall(r"\[([-+0-9.eEinfa]+)\]", tail)[: len(names)]
    if len(found) != len(names):
        return None
    return nonfinite_message(
        dict(zip(names, (float(value) for value in found))), where, note
    )


def nonfinite_message(values: dict, where=None, note=None) -> str:
    """The message of a step whose loss or gradients are not finite.

    Args:
        values: `{name: float}`: each logged loss of the step and, under
            `"gradients"`, the sum of every gradient.
        where: Optional callable naming the step.
        note: Optional callable giving advice that replaces the generic one.
    """
    values = dict(values)
    gradients = values.pop("gradients", None)
    gradients_bad = gradients is not None and not math.isfinite(gradients)
    loss_finite = all(math.isfinite(value) for value in values.values())
    parts = ", ".join(f"{name} {value:.6g}" for name, value in values.items())
    if gradients is not None:
        parts += "; gradients " + ("NaN or infinite" if gradients_bad else "finite")
    started = [
        name
        for name, value in values.items()
        if name != "loss" and not math.isfinite(value)
    ]
    if not started and gradients_bad:
        started = ["the gradients"]
    if started:
        parts += "; it started in " + ", ".join(started)
    place = _place(where)
    advice = note() if note is not None else ""
    if not advice:
        advice = (
            "The loss is finite but its gradients are not: look for NaN or inf "
            "in the inputs of that batch (a ReLU can hide them from the loss: "
            "relu(nan) is 0 on some CPUs) or for a layer whose gradient is "
            "undefined there (such as sqrt at 0), or lower the learning rate."
            if loss_finite and gradients_bad
            else "Look for NaN or inf in the inputs or labels of that batch, "
            "or lower the learning rate."
        )
    return (
        f"The loss or its gradients became NaN or infinite{place} ({parts}). "
        "Training stopped before this step's update, so the weights are those "
        f"of the last good step. {advice}"
    )


def format_message(template, *values):
    """`template` with `{}` placeholders filled from tensors (in graph).

    On TensorFlow a string tensor; on another backend (a JAX step, which
    formats nothing while traced) a `Message`, formatted after the step from
    the values it returns.
    """
    if _deferred(values):
        return Message(template, values)
    import tensorflow as tf

    return tf.strings.format(template, tuple(values), summarize=8)


def first(values, mask):
    """The first element of `values` where `mask` holds (flattened)."""
    if _deferred((values,)):
        from keras import ops

        flat = ops.reshape(values, [-1])
        return flat[ops.argmax(ops.cast(ops.reshape(mask, [-1]), "int32"))]
    import tensorflow as tf

    return tf.boolean_mask(tf.reshape(values, [-1]), tf.reshape(mask, [-1]))[0]


def _deferred(values) -> bool:
    """Whether a message of `values` is formatted after the step (not TF)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return False
    import tensorflow as tf

    # A `tf.data` pipeline's check formats TensorFlow tensors on any backend.
    return not any(tf.is_tensor(value) for value in values)


def _formatted(array) -> str:
    """A concrete value as `tf.strings.format` writes it (`-1`, `0.376222372`)."""
    if array.size != 1:
        return str(array)
    value = array.item()
    if isinstance(value, float):
        return f"{value:.9g}"
    return str(value)


class Message:
    """A check's message whose values are known only after the step.

    A traced JAX step can neither format strings nor stop itself: it
    returns the values (`leaves()`) with its outputs, and `render()` fills
    the template with their concrete values when the check failed.
    """

    def __init__(self, template, values):
        self.template = template
        self.values = tuple(values)

    def leaves(self):
        """The tensor values, depth first (nested messages included)."""
        found = []
        for value in self.values:
            if isinstance(value, Message):
                found += value.leaves()
            elif not isinstance(value, str):
                found.append(value)
        return found

    def render(self, leaves):
        """The message, `leaves` (an iterator of concrete values) filled in."""
        import numpy as np

        parts = []
        for value in self.values:
            if isinstance(value, Message):
                parts.append(value.render(leaves))
            elif isinstance(value, str):
                parts.append(value)
            else:
                array = np.asarray(next(leaves))
                parts.append(_formatted(array))
        return self.template.format(*parts)


def message_of(error):
    """The message of a failed in-step check in `error`, or `None`."""
    text = str(getattr(error, "message", error))
    start = text.find(PREFIX)
    if start >= 0:
        text = text[start + len(PREFIX) :]
        text = text.split(END, 1)[0].strip()
        # TensorFlow escapes quotes and quotes the strings it formats.
        return text.replace("\\'", "'").replace('\\"', "")
    return None


def _label_error_of(text, where=None):
    """A readable message for TensorFlow's own out-of-range label error, or None.

    On CPU, the sparse cross-entropy kernel refuses a label outside
    `[0, classes)` itself, before any gradient exists, so the distiller's
    step leaves integer labels to it (no op of its own); a compiled loss the
    distiller cannot see into (a lambda around it) is covered the same way.
    `where`, a callable, names the batch (e.g. "training step 3").
    """
    match = re.search(
        r"Received a label value of (-?\d+) which is outside the valid range of "
        r"\[0, (\d+)\)",
        text,
    )
    if match is None:
        return None
    value, classes = match.groups()
    place = _place(where)
    return (
        f"Labels must be integers in [0, {classes}) for a student with {classes} "
        f"classes. Received a label value of {value}{place}: the loss (sparse "
        "categorical cross-entropy) refused it before this step's update, so "
        "the weights are those of the last good step. Fix the labels of that "
        "batch."
    )


@contextlib.contextmanager
def raise_readable(where=None, note=None):
    """Turns a failed in-step check into a `ValueError` carrying its message.

    Args:
        where: Optional callable naming the batch that failed, for errors
            raised by TensorFlow's kernels or by `assert_finite` rather than
            by a check that names its batch itself.
        note: Optional callable returning advice for a non-finite loss that
            takes precedence over the generic one (e.g. "the temperature is
            outside its usual range"), or "".
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = str(getattr(error, "message", error))
        message = message_of(error)
        if message is not None and message.startswith(NONFINITE):
            message = _nonfinite_message(message, text, where, note)
        if message is None:
            message = _label_error_of(text, where)
        if message is None:
            raise
        raise _readable_error(message) from None
    except tf.errors.OpError as error:
        # A check in Python inside a `tf.data` pipeline (`tf.py_function`)
        # reaches here as an UnknownError carrying its message and traceback.
        message = message_of(error)
        if message is None:
            raise
        raise _readable_error(message) from None


def _readable_error(message):
    """The exception for a check's message: its tagged class, else ValueError."""
    match = re.match(r"<(\w+)>", message)
    if match is not None and match.group(1) in _ERROR_CLASSES:
        return _ERROR_CLASSES[match.group(1)](message[match.end() :])
    return ValueError(message)
