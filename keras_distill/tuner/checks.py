"""The arguments `kd.tune` refuses before a search starts (ranges, splits, labels).

A bad range or split fails every trial, and Keras Tuner then ends the search
with a missing trial checkpoint instead of the reason: they are checked once,
here, with the value named.
"""

import hashlib

import numpy as np

from keras_distill import params as kd_params


def check_range(values, name, low, high=None, low_inclusive=True):
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a (min, max) pair of numbers. "
            f"Received: {name}={values!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN passes every comparison
        raise ValueError(
            f"`{name}` must be a (min, max) pair of finite numbers. "
            f"Received: {name}={values!r}"
        )
    below = lo < low if low_inclusive else lo <= low
    if below or (high is not None and hi > high) or lo > hi:
        bounds = f"[{low}, {high}]" if high is not None else f"> {low}"
        raise ValueError(
            f"`{name}` must satisfy min <= max within {bounds}. "
            f"Received: {name}={values!r}"
        )
    return lo, hi


def param_range(values, name, param):
    """A search range of a declared Distiller parameter, within its rule."""
    spec = kd_params.SPECS[param]
    low, high = check_range(
        values, name, spec.low, spec.high, low_inclusive=not spec.low_open
    )
    for value in (low, high):
        kd_params.check(param, value, where=f"`{name}`")
    return low, high


def content_key(array) -> tuple:
    """A key of an array's contents: shape, dtype and a BLAKE2 digest.

    Hashing runs at about 1 GB/s, far less than the teacher's pass over the
    array it saves.
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(memoryview(array).cast("B"), digest_size=16)
    return (array.shape, str(array.dtype), digest.hexdigest())


def check_split(split, name: str) -> None:
    """Refuses an `(x, y)` split of two lengths or with NaN/inf inputs.

    Either fails every trial, and the search would end in a missing trial
    checkpoint instead of the reason.
    """
    if not isinstance(split, tuple | list) or len(split) != 2:
        raise ValueError(f"`{name}` must be an `(x, y)` pair of arrays.")
    x, y = split
    if len(x) == 0:
        raise ValueError(
            f"`{name}` holds no examples (inputs of shape {np.shape(x)}); every "
            "trial would train or score on nothing. Pass a non-empty split."
        )
    if len(x) != len(y):
        raise ValueError(
            f"`{name}` must hold as many inputs as labels. Received: {len(x)} "
            f"inputs and {len(y)} labels."
        )
    values = np.asarray(x)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        index = int(
            np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(1))[0]
        )
        raise ValueError(
            f"`{name}` holds NaN or infinite inputs (the first at example {index}); "
            "every trial would fail on them. Fix or drop those examples."
        )


def check_labels(y, classes: int, what: str) -> None:
    """Refuses integer labels outside `[0, classes)`, naming the first one."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] != 1:
        return  # one-hot or soft labels: the loss checks their width
    flat = y.reshape(-1)
    if flat.size == 0 or not np.issubdtype(flat.dtype, np.number):
        return
    bad = np.flatnonzero((flat < 0) | (flat >= classes) | (flat != np.floor(flat)))
    if bad.size:
        index = int(bad[0])
        value = flat[index].item()
        hint = "Fix the labels"
        if float(value).is_integer() and value >= classes:
            hint += f" or use a teacher and students of {int(value) + 1} classes"
        raise ValueError(
            f"{what} label {value!r} (example {index}) is not a class of the "
            f"teacher, which predicts {classes}: labels must be whole numbers "
            f"in [0, {classes - 1}]. {hint}."
        )


def check_builder(build_student):
    """Raises if `build_student` cannot be called with one argument, `hp`.

    Every trial would fail inside Keras Tuner with Python's "takes 0
    positional arguments but 1 was given", naming neither `hp` nor the fix.
    """
    import inspect

    try:
        signature = inspect.signature(build_student)
    except (TypeError, ValueError):  # a builtin or C callable: cannot tell
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            "`build_student` must take one argument, the trial's hyperparameters "
            f"`hp` (e.g. `lambda hp: make_student()`), but its signature is "
            f"{signature}. Received: {build_student!r}"
        ) from None


def check_student(student, build_student):
    """Raises if `build_student(hp)` did not return a `keras.Model`."""
    import keras

    if not isinstance(student, keras.Model):
        raise TypeError(
            f"`build_student(hp)` must return a keras.Model; {build_student!r} "
            f"returned {student!r}."
        )
