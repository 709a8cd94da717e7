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
import re

PREFIX = "keras_distill check failed: "
END = " <end of message>"


def graph_assert(ok, message_fn):
    """Fails the step with `message_fn()` (a string tensor) when `ok` is false.

    `message_fn` is only run when the check fails, so formatting costs
    nothing on good batches.
    """
    import tensorflow as tf

    def fail():
        message = tf.strings.join([PREFIX, message_fn(), END])
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), fail)


def check_all(problems):
    """One assertion for a list of `(failed, message_fn)` problems.

    The messages of the failed problems (only those) are formatted and
    joined when the check fails; a step that passes runs one `cond`.
    """
    import tensorflow as tf

    if not problems:
        return None
    ok = tf.logical_not(tf.reduce_any(tf.stack([flag for flag, _ in problems])))

    def message():
        parts = [tf.cond(flag, fn, lambda: tf.constant("")) for flag, fn in problems]
        joined = tf.strings.reduce_join(tf.stack(parts), separator=" ")
        return tf.strings.strip(joined)

    return graph_assert(ok, message)


def format_message(template, *values):
    """`template` with `{}` placeholders filled from tensors (in graph)."""
    import tensorflow as tf

    return tf.strings.format(template, tuple(values), summarize=8)


def first(values, mask):
    """The first element of `values` where `mask` holds (flattened)."""
    import tensorflow as tf

    return tf.boolean_mask(tf.reshape(values, [-1]), tf.reshape(mask, [-1]))[0]


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


def _label_error_of(text):
    """A readable message for TensorFlow's own out-of-range label error, or None.

    A compiled loss the distiller cannot see into (a lambda around sparse
    categorical cross-entropy) gets no in-step label check; its kernel's
    error is translated instead.
    """
    match = re.search(
        r"Received a label value of (-?\d+) which is outside the valid range of "
        r"\[0, (\d+)\)",
        text,
    )
    if match is None:
        return None
    value, classes = match.groups()
    return (
        f"Labels must be integers in [0, {classes}) for a student with {classes} "
        f"classes. Received a label value of {value}: the compiled loss "
        "(sparse categorical cross-entropy) refused it. Fix the labels of that "
        "batch."
    )


@contextlib.contextmanager
def raise_readable():
    """Turns a failed in-step check into a `ValueError` carrying its message."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = message_of(error)
        if message is None:
            message = _label_error_of(str(getattr(error, "message", error)))
        if message is None:
            raise
        raise ValueError(message) from None
