"""Checks before `fit()`/`evaluate()` start: data, labels, declared output kinds."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_distill import _compat
from keras_distill import targets as kd_targets
from keras_distill.distiller.backends import check_no_tf_strategy
from keras_distill.distiller.batch_checks import bool_labels_message
from keras_distill.distiller.wiring import (
    _check_declared_values,
    _num_classes,
)


class FitChecks:
    """The `Distiller`'s checks of whole inputs before training (a mixin)."""

    def _training_step_name(self):
        """Names the step that failed: the optimizer counts only good steps."""
        return (
            "training step "
            f"{int(ops.convert_to_numpy(_compat.step_count(self.optimizer))) + 1}"
        )

    def fit(self, x=None, y=None, *args, **kwargs):
        with self._readable_errors(self._training_step_name):
            return self._checked_fit(x, y, *args, **kwargs)

    def _checked_fit(self, x, y, *args, **kwargs):
        check_no_tf_strategy("fit")
        self._warn_if_checks_off("fit")
        _check_fit_counts(args, kwargs)
        self._check_something_trains()
        steps = args[10] if len(args) > 10 else kwargs.get("steps_per_epoch")
        _check_finite_dataset(x, steps, "training data", "steps_per_epoch")
        _check_finite_dataset(
            kwargs.get("validation_data"),
            kwargs.get("validation_steps"),
            "validation_data",
            "validation_steps",
        )
        _check_not_empty(x, "training data")
        _check_whole_inputs(self.student, x, "training data")
        self._check_precomputed_teacher(x)
        self._check_output_kinds(x)
        self._check_labels(x, y, "training data")
        self._check_labels_given(x, y)
        class_weight = args[7] if len(args) > 7 else kwargs.get("class_weight")
        _check_class_weight(class_weight, _num_classes(self.student))
        positional = args[8] if len(args) > 8 else None  # fit's 11th argument
        _warn_if_no_weight(kwargs.get("sample_weight", positional))
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            # Checked before training (`evaluate()` would refuse empty data
            # only after the first epoch).
            if isinstance(validation_data, tuple | list):
                _check_not_empty(validation_data[0], "validation_data")
                self._check_labels(
                    validation_data[0], validation_data[1], "validation_data"
                )
            else:
                _check_not_empty(validation_data, "validation_data")
                self._check_precomputed_teacher(validation_data)
                self._check_labels(validation_data, None, "validation_data")
        freq = kwargs.get("validation_freq", 1)
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            # Keras divides by it after the first epoch.
            raise ValueError(
                "`validation_freq` must be a whole number of epochs >= 1 (validate "
                f"every N epochs). Received: validation_freq={freq!r}"
            )
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset) and len(args) < 7 and "shuffle" not in kwargs:
            # Keras ignores `shuffle` for a dataset but warns about its
            # default, True, on every `fit()`: nothing to shuffle, no warning.
            kwargs["shuffle"] = False
        counter = _StepCounter()
        if len(args) < 4:  # `callbacks` not given by position
            given = list(kwargs.get("callbacks") or [])
            # First, so that the user's loggers (CSVLogger, TensorBoard) see
            # the learned temperatures too.
            learned = [_LogLearnedTemperatures()] if self._learned_terms() else []
            kwargs["callbacks"] = [*learned, *given, counter]
        with _producers_errors(x, kwargs.get("validation_data")):
            history = super().fit(x, y, *args, **kwargs)
        if counter.epochs and not counter.steps:
            raise ValueError(
                "The training data yielded no batches, so nothing was trained "
                "(e.g. an empty or fully filtered `tf.data.Dataset`). Received: "
                f"x={x!r}"
            )
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        with self._readable_errors(lambda: "an evaluation batch"):
            check_no_tf_strategy("evaluate")
            self._warn_if_checks_off("evaluate")
            steps = args[3] if len(args) > 3 else kwargs.get("steps")
            _check_finite_dataset(x, steps, "evaluation data", "steps")
            _check_not_empty(x, "evaluation data")
            _check_whole_inputs(self.student, x, "evaluation data")
            self._check_precomputed_teacher(x)
            self._check_labels(x, y, "evaluation data")
            self._check_output_kinds(x)
            # A weight of 0 everywhere gives losses of a made-up 0.
            positional = args[2] if len(args) > 2 else None
            _warn_if_no_weight(kwargs.get("sample_weight", positional), "evaluate")
            with _producers_errors(x):
                return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        steps = args[2] if len(args) > 2 else kwargs.get("steps")
        _check_finite_dataset(x, steps, "prediction data", "steps")
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        with self._readable_errors(self._training_step_name):
            self._check_something_trains()
            self._check_output_kinds_once(x)
            self._check_labels(x, y, "batch")
            self._check_labels_given(x, y)
            class_weight = args[1] if len(args) > 1 else kwargs.get("class_weight")
            _check_class_weight(class_weight, _num_classes(self.student))
            return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        with self._readable_errors(lambda: "an evaluation batch"):
            self._check_output_kinds_once(x)
            self._check_labels(x, y, "batch")
            return super().test_on_batch(x, y, *args, **kwargs)

    def _check_something_trains(self):
        """Raises if nothing would train (a frozen student, built).

        The step ended in Python's "not enough values to unpack (expected 2,
        got 0)".
        """
        if self.student.built and not self.student.trainable_weights:
            if not any(v.trainable for v in self.variables):
                raise ValueError(
                    f"The student ({self.student.name}) has no trainable weights "
                    f"(student.trainable={self.student.trainable}), so training "
                    "would change nothing. Set `student.trainable = True` (or "
                    "unfreeze the layers to train) before `fit()`."
                )

    def _check_output_kinds_once(self, x):
        """`_check_output_kinds` on the first batch given to `*_on_batch` only.

        These run once per batch: the teacher runs on a few examples for the
        first one, not for every one.
        """
        if not getattr(self, "_output_kinds_checked", False):
            self._check_output_kinds(x)
            self._output_kinds_checked = True

    def _check_labels_given(self, x, y):
        """Raises if `alpha` is 1 (all weight on labels) and the data has none.

        A batch without labels trains on the distillation term alone, which
        `alpha=1` meant to switch off: nothing would be learned as asked.
        """
        alpha = float(ops.convert_to_numpy(self._alpha))
        if alpha < 1.0 or y is not None:
            return
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            if _first_batch_labels(x) is not None:
                return
        elif not hasattr(x, "shape") and not isinstance(x, dict | list | tuple):
            return  # a generator or PyDataset: its batches are not known here
        raise ValueError(
            "alpha=1.0 puts all the weight on the labels, but the training data "
            "has none (inputs only), so the distillation term (weight "
            "1 - alpha = 0) would train alone at full weight. Pass labels, or set "
            "alpha < 1 (e.g. Distiller(alpha=0.0)) to learn from the teacher."
        )

    def _check_precomputed_teacher(self, x):
        """Refuses precomputed teacher outputs (a teacher cache's dataset)
        that another teacher than this distiller's computed.

        The producer marked its dataset (`targets.attach_check`); its check
        runs here once, in Python, before the first step.
        """
        import tensorflow as tf

        if not isinstance(x, tf.data.Dataset) or len(self.teachers) != 1:
            return
        for found in kd_targets.marks_of(x):
            found.check_teacher(self.teacher)

    def _check_output_kinds(self, x):
        """Checks `teacher_outputs`/`student_outputs` against the first batch.

        For models whose last activation is unknown (subclassed models), runs
        them on a few examples of the first batch: rows in [0, 1] summing to
        1 are probabilities, anything else logits. A contradiction is an
        error naming the model.
        """
        sample = _first_batch_inputs(x)
        if sample is None:
            return
        for name, model in self._named_models():
            declared = (
                self.student_outputs if name == "student" else self.teacher_outputs
            )
            _check_declared_values(name, model, declared, sample)

    def _check_labels(self, x, y, where):
        """Raises a ValueError naming the first out-of-range sparse label."""
        num_classes = _num_classes(self.student)
        if num_classes is None:
            return
        labels = y
        if labels is None:
            labels = _first_batch_labels(x)
        if labels is None:
            return
        labels = np.asarray(labels)
        if labels.dtype.kind in "USO":  # Keras: "Invalid dtype: str352"
            raise ValueError(
                f"The labels of the {where} are {labels.dtype} values (e.g. "
                f"{labels.reshape(-1)[:1].tolist()}), not numbers. Pass integer "
                f"class ids in [0, {num_classes}) (e.g. map each class name to "
                "its index)."
            )
        if labels.dtype == bool and self._sparse_loss() is not None:
            raise ValueError(bool_labels_message(where, num_classes))
        is_sparse = labels.ndim <= 1 or (labels.ndim == 2 and labels.shape[-1] == 1)
        if not is_sparse or labels.size == 0 or labels.dtype.kind not in "iuf":
            return
        sparse = self._sparse_loss()
        if sparse is None:
            return
        bad = (labels < 0) | (labels >= num_classes) | (labels != np.round(labels))
        if sparse[1] is not None:
            bad &= labels != sparse[1]  # the class the loss ignores
        if np.any(bad):
            index = int(np.argmax(bad.reshape(-1)))
            value = labels.reshape(-1)[index].item()
            raise ValueError(
                f"Labels in the {where} must be integers in [0, {num_classes}) for a "
                f"student with {num_classes} classes. Received a label value of "
                f"{value!r} at index {index} (the smallest label given is "
                f"{labels.min().item()!r}, the largest {labels.max().item()!r})."
            )


class _LogLearnedTemperatures(keras.callbacks.Callback):
    """Writes `Distiller.learned_temperatures()` into each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.model.learned_temperatures())


class _StepCounter(keras.callbacks.Callback):
    """Counts the epochs begun and the batches trained in one `fit()`."""

    def __init__(self):
        super().__init__()
        self.epochs = self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


@contextlib.contextmanager
def _producers_errors(*datasets):
    """Raises, for a TensorFlow error while reading a producer's dataset
    (`targets.mark`), the exception its producer names instead."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        for data in datasets:
            if isinstance(data, tf.data.Dataset):
                for found in kd_targets.marks_of(data):
                    readable = found.readable_error(error)
                    if readable is not None:
                        raise readable from None
        raise


# `fit()`'s counts: (name, position in `fit(x, y, *args)`, smallest value).
FIT_COUNTS = (
    ("batch_size", 0, 1),
    ("epochs", 1, 0),
    ("initial_epoch", 9, 0),
    ("steps_per_epoch", 10, 1),
)


def _check_fit_counts(args, kwargs):
    """Raises if a count of `fit()` (`FIT_COUNTS`) is not a whole number in range.

    Keras reads `batch_size=0` as its default, 32, and trains nothing for
    `epochs=-3`, without a word.
    """
    for name, position, smallest in FIT_COUNTS:
        value = args[position] if len(args) > position else kwargs.get(name)
        if value is None:
            continue
        whole = isinstance(value, int | np.integer) and not isinstance(value, bool)
        if not whole or value < smallest:
            raise ValueError(
                f"`{name}` must be a whole number >= {smallest}. Received: "
                f"{name}={value!r}"
            )


def _check_whole_inputs(model, x, where):
    """Raises if an integer input (token ids) is given fractional floats.

    Keras casts them to the input's integer dtype, truncating 3.7 to 3
    without a word. Checks NumPy arrays given for a single-input model.
    """
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        return
    dtype = str(getattr(inputs[0], "dtype", ""))
    if not dtype.startswith(("int", "uint")):
        return
    fractional = x != np.floor(x)
    if np.any(fractional):
        index = np.unravel_index(int(np.argmax(fractional)), x.shape)
        raise ValueError(
            f"The student's input is {dtype} (e.g. token ids), but the {where} "
            f"holds fractional values, e.g. {float(x[index]):g} at index "
            f"{tuple(int(i) for i in index)}; Keras would truncate them. Pass "
            "whole numbers (e.g. `x.astype('int32')` after rounding)."
        )


def _check_finite_dataset(x, steps, where, steps_name):
    """Raises if `x` is an endless `tf.data.Dataset` and no step count ends it.

    Keras would read it for ever (its first epoch never ends), without a word.
    """
    import tensorflow as tf

    if steps is not None or not isinstance(x, tf.data.Dataset):
        return
    if int(x.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            f"The {where} is an endless `tf.data.Dataset` (e.g. `.repeat()` "
            f"without a count), so it would never end. Pass `{steps_name}=` "
            f"(batches to read), or repeat a set number of times. Received: {x!r}"
        )


def _check_not_empty(x, where):
    """Raises if `x` holds no examples (arrays) or no batches (a known-size Dataset)."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError(f"The {where} is an empty `tf.data.Dataset` (0 batches).")
        return
    first = keras.tree.flatten(x)[0] if x is not None else None
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) and shape[0] == 0:
        raise ValueError(
            f"The {where} holds no examples: inputs of shape {tuple(shape)}."
        )


def _check_class_weight(class_weight, num_classes):
    """Raises if `class_weight` names a class the student does not have."""
    if not class_weight or num_classes is None or not isinstance(class_weight, dict):
        return
    for key in class_weight:
        valid = isinstance(key, int | np.integer) and not isinstance(key, bool)
        if not valid or not 0 <= key < num_classes:
            raise ValueError(
                f"`class_weight` names class {key!r}, but the student has "
                f"{num_classes} classes (0 to {num_classes - 1}). Give weights "
                f"only for integer classes in [0, {num_classes}). Received: "
                f"class_weight={class_weight!r}"
            )
        value = class_weight[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not np.isfinite(number) or number < 0:
            # Was refused only in the step, as a `sample_weight` the user never gave.
            raise ValueError(
                f"`class_weight` gives class {key!r} the weight {value!r}; class "
                "weights must be finite numbers >= 0. Received: "
                f"class_weight={class_weight!r}"
            )


def _warn_if_no_weight(sample_weight, call="fit"):
    """Warns once (per call) when every sample weight is 0: nothing would count."""
    if sample_weight is None or isinstance(sample_weight, dict):
        return
    try:
        values = np.asarray(ops.convert_to_numpy(sample_weight), "float64")
    except Exception:  # noqa: BLE001  (not array-like: Keras reports it)
        return
    if values.size and not np.any(values):
        import warnings

        effect = (
            "training changes nothing. Give the examples to learn from a weight > 0."
            if call == "fit"
            else "the losses reported (0) measure nothing. Give the examples to "
            "evaluate a weight > 0."
        )
        warnings.warn(
            f"Every `sample_weight` is 0 ({values.size} weights), so every loss "
            f"is 0 and {effect}",
            UserWarning,
            stacklevel=3,
        )


def _first_batch_inputs(data, count=8):
    """A few inputs of the first batch (arrays or a Dataset), else None."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        for batch in data.take(1):
            x, _, _, _ = kd_targets.unpack_batch(batch)
            break
        else:
            return None
    else:
        x = data
    if not hasattr(x, "shape") or isinstance(x, dict | list | tuple) or not len(x):
        return None
    return x[:count]


def _first_batch_labels(data):
    """Labels of the first batch of a `tf.data.Dataset`, else None."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        return None
    for batch in data.take(1):
        _, y, _, _ = kd_targets.unpack_batch(batch)
        return None if y is None else ops.convert_to_numpy(y)
    return None
