"""The checks of every batch, traced into the step (labels, sample weights, NaN)."""

import warnings

import keras

from keras_distill import _compat
from keras_distill import checks as kd_checks
from keras_distill import params as kd_params
from keras_distill.distiller import tokens as kd_tokens
from keras_distill.distiller.wiring import (
    _check_input_shape,
    _num_classes,
    _output_count,
)


class BatchChecks:
    """The in-step checks of the `Distiller` (a mixin)."""

    def check_batch(self, x, y, sample_weight, where):
        """Checks a batch in the step: input shapes, labels, sample weights.

        Shapes are checked while tracing. Labels (integers in `[0, classes)`)
        and sample weights (finite, >= 0) are checked in every batch, by the
        step's one combined check (`_check_all`) before anything is updated;
        on CPU, integer labels of a single-output student are left to the
        sparse cross-entropy kernel, which refuses them itself before any
        gradient exists (`_kernel_checks_labels`).
        `where` is a callable giving a string tensor that names the batch.

        Returns:
            `(problems, y, sample_weight)`: `problems` is a list of
            `(failed, message_fn)`; `y` and `sample_weight` have bad entries
            replaced by harmless ones, so the loss ops cannot fail before
            the check reports them.
        """
        for name, model in self._named_models():
            _check_input_shape(name, model, x)
        where = where if callable(where) else (lambda: where)
        problems = []
        sequence = (kd_tokens.output_rank(self.student) or 0) > 2
        if sequence:  # one weight per token: the mask (see `tokens`)
            sample_weight = kd_tokens.token_weights(
                x, sample_weight, self.student.output_shape[:-1]
            )
        if (
            y is not None
            and not isinstance(y, list | tuple | dict)
            and self._labels_are_sparse()
        ):
            labels = _as_tensor(y)
            if _dtype(labels) == "bool":
                raise ValueError(
                    bool_labels_message("batch", _num_classes(self.student))
                )
            if sequence:
                kd_tokens.check_token_labels(labels, self.student.output_shape)
            elif len(labels.shape) == 2 and labels.shape[-1] not in (None, 1):
                raise ValueError(
                    f"The labels have shape {tuple(labels.shape)}: they look one-hot "
                    "(or multi-label), but the loss is sparse categorical "
                    "cross-entropy, which takes integer class ids. Pass integer "
                    "labels (e.g. `np.argmax(y, axis=-1)`) or compile with "
                    "`loss=keras.losses.CategoricalCrossentropy(from_logits=True)`."
                )
            # Integer labels are left to the loss's kernel where it refuses
            # them itself (and no ignored class needs naming in the message).
            kernel_checks = (
                "int" in _dtype(labels)
                and self._sparse_loss()[1] is None
                and _kernel_checks_labels()
            )
            if _output_count(self.student) == 1 and not kernel_checks:
                found, y = self._label_problem(
                    labels, _num_classes(self.student), where
                )
                problems += found
        elif (
            y is not None
            and not isinstance(y, list | tuple | dict)
            and not sequence
            and _output_count(self.student) == 1
        ):
            _check_dense_loss_labels(
                getattr(self, "loss", None), y, self.student.output_shape
            )
        return problems, y, self._weight_problem(sample_weight, where, problems)

    def _label_problem(self, labels, classes, where, head=""):
        """`([(failed, message_fn)], labels)` for sparse labels of `classes` classes.

        Returns no problem when `classes` is unknown or the labels are not
        numbers; the labels come back with bad entries replaced by 0.
        """
        labels = _as_tensor(labels)
        dtype = _dtype(labels)
        if classes is None or not ("float" in dtype or "int" in dtype):
            return [], labels
        sparse = self._sparse_loss()
        ignore = sparse[1] if sparse else None
        return _sparse_label_problem(labels, classes, ignore, where, head)

    def _labels_checked_early(self, y):
        """Whether `check_batch` checked these labels (a static class count)."""
        return (
            y is not None
            and not isinstance(y, list | tuple | dict)
            and _output_count(self.student) == 1
            and _num_classes(self.student) is not None
        )

    def _late_label_problems(self, y, y_pred, where):
        """The label check from the traced outputs, when `check_batch` could not.

        A subclassed or multi-output student has no static output shape
        before it runs; its traced outputs have one. Checks each sparse
        label tensor against the last axis of the output it is compared with
        (`hard_predictions`: LwF's new head, each output of a multi-output
        student).

        Returns:
            `(problems, y)`, `y` with bad entries replaced.
        """
        if y is None or not self._labels_are_sparse():
            return [], y
        hard = self.hard_predictions(y_pred)
        if not isinstance(y, list | tuple | dict) and not isinstance(
            hard, list | tuple | dict
        ):
            return self._label_problem(y, hard.shape[-1], where)
        if (
            isinstance(y, list | tuple)
            and isinstance(hard, list | tuple)
            and len(y) == len(hard)
        ):
            problems, fixed = [], []
            for i, (labels, output) in enumerate(zip(y, hard)):
                found, labels = self._label_problem(
                    labels, output.shape[-1], where, f" at output {i}"
                )
                problems += found
                fixed.append(labels)
            return problems, type(y)(fixed)
        return [], y

    def _weight_problem(self, sample_weight, where, problems):
        """Appends the sample-weight check to `problems`; the repaired weights."""
        if sample_weight is None:
            return None
        return _sample_weight_problem(sample_weight, where, problems)

    def _check_all(self, problems, guard=()):
        """`checks.check_all`, or nothing under XLA.

        XLA compiles neither string formatting nor assertions, so with
        `jit_compile=True` the in-step checks are off (documented; `fit()`
        and `evaluate()` warn, see `_warn_if_checks_off`).
        """
        if self._checks_off():
            return None
        return kd_checks.check_all(problems, guard)

    def _checks_off(self):
        """Whether the step is compiled with XLA, so without its checks.

        TensorFlow only: the JAX step checks under `jax.jit` too (it selects
        the old state and raises after the step, see `jax_step`).
        """
        return (
            getattr(self, "jit_compile", False) is True
            and keras.backend.backend() == "tensorflow"
        )

    def _warn_if_checks_off(self, method):
        """Warns once per `fit()`/`evaluate()` call when XLA turns the checks off."""
        if self._checks_off():
            warnings.warn(
                f"{type(self).__name__}.{method}() runs with jit_compile=True "
                "(XLA; also what jit_compile='auto' chooses on a GPU), which "
                "compiles no assertions: the in-step checks (labels, sample "
                "weights, NaN/inf loss or gradients, directly assigned parameters) "
                "are off, and a bad batch trains silently. Compile with "
                "`jit_compile=False` to get them back.",
                UserWarning,
                stacklevel=3,
            )

    def _named_models(self):
        yield "student", self.student
        views = self._teacher_views
        for i, teacher in enumerate(views):
            yield ("teacher" if len(views) == 1 else f"teacher[{i}]"), teacher

    def _labels_are_sparse(self):
        """Whether the hard-label loss takes integer class ids."""
        return self._sparse_loss() is not None

    def _sparse_loss(self):
        """`(True, ignore_class)` if the hard-label loss is sparse CE, else None.

        Recognises the default (no loss), `SparseCategoricalCrossentropy`
        (instance, its name or `keras.losses.sparse_categorical_crossentropy`)
        and a list or dict of them (one per output). `ignore_class` is the
        label the loss ignores (legal in the labels), or None.
        """
        loss = getattr(self, "loss", None)
        if isinstance(loss, dict):
            loss = list(loss.values())
        losses = list(loss) if isinstance(loss, list | tuple) else [loss]
        found = [_sparse_loss_of(item) for item in losses]
        if not found or any(item is None for item in found):
            return None
        ignored = {item[1] for item in found}
        return True, ignored.pop() if len(ignored) == 1 else None

    def _check_finite(self, report, gradients, guard):
        """The loss or a gradient is not finite: stop the step before the update.

        One NaN or inf input, label or teacher output usually makes the loss
        non-finite at once; where a layer swallows it (some CPU kernels give
        `relu(nan) = 0`) the loss stays finite but the gradients do not, so
        both are checked: the loss, and the sum of every gradient's sum (a
        reduction per variable). One op (`checks.assert_finite`), which
        reports each term's loss on failure; `raise_readable` names them and
        the step.
        """
        import tensorflow as tf

        if self._checks_off():
            return
        named = list(report.logs().items())
        total = report.total
        flags = [tf.cast(total, "float32")]
        # A `LossScaleOptimizer`'s scaled gradients overflow now and then by
        # design: it skips those updates itself and lowers its scale. Its
        # gradients are left to it (only the loss is checked), or mixed
        # precision training would stop at the first overflow.
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            sums = [
                tf.reduce_sum(tf.cast(g, "float32")) for g in gradients if g is not None
            ]
            if sums:
                gradient_sum = tf.add_n(sums)
                named.append(("gradients", gradient_sum))
                flags.append(gradient_sum)
        ok = tf.math.is_finite(tf.add_n(flags))
        kd_checks.assert_finite(named, ok, guard)

    def _parameter_note(self):
        """Names a parameter outside its sound range (the likely cause of a NaN)."""
        return kd_params.unusual_note(self.parameter_variables())

    def _readable_errors(self, where):
        """`checks.raise_readable` for this distiller's steps."""
        return kd_checks.raise_readable(where, note=self._parameter_note)


def bool_labels_message(where, classes):
    """The error for boolean labels given to a sparse (class id) loss."""
    student = "" if classes is None else f" {classes}-class"
    return (
        f"The labels of the {where} are booleans, but the hard-label loss takes "
        f"integer class ids: they would train the{student} student on classes 0 "
        "and 1 only. For a two-class problem pass `y.astype('int32')` and give the "
        "student (and teacher) 2 outputs; otherwise pass the class ids."
    )


def _dense_losses():
    """Keras losses whose labels have the outputs' shape (one value per class)."""
    losses = keras.losses
    return {
        losses.categorical_crossentropy: "CategoricalCrossentropy",
        losses.binary_crossentropy: "BinaryCrossentropy",
        losses.binary_focal_crossentropy: "BinaryFocalCrossentropy",
        losses.categorical_focal_crossentropy: "CategoricalFocalCrossentropy",
        losses.mean_squared_error: "MeanSquaredError",
        losses.mean_absolute_error: "MeanAbsoluteError",
        losses.kl_divergence: "KLDivergence",
        losses.categorical_hinge: "CategoricalHinge",
        losses.hinge: "Hinge",
        losses.squared_hinge: "SquaredHinge",
        losses.huber: "Huber",
        losses.log_cosh: "LogCosh",
        losses.cosine_similarity: "CosineSimilarity",
    }


def _check_dense_loss_labels(loss, labels, output_shape):
    """Raises if a per-class Keras loss is given class ids (shape `(batch,)` or
    `(batch, 1)`) for a student of several classes.

    Keras then fails on ranks ("must have the same rank") or, worse, broadcasts
    `(batch, 1)` labels against every class and trains on a wrong loss.
    """
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError):
            return
    wrapped = _compat.loss_function(loss) if loss is not None else None
    function = wrapped[0] if wrapped is not None else loss
    name = _dense_losses().get(function) if callable(function) else None
    classes = output_shape[-1] if output_shape else None
    shape = tuple(getattr(labels, "shape", ()))
    if name is None or classes in (None, 1) or len(shape) > 2:
        return
    if len(shape) == 1 or shape[-1] == 1:
        raise ValueError(
            f"The labels have shape {shape}, one class id per example, but the loss "
            f"({name}) compares them with one value per class: the student's "
            f"outputs have shape {tuple(output_shape)}. Pass one-hot labels "
            f"(`keras.utils.to_categorical(y, {classes})`), or compile with "
            "`loss=None` (sparse categorical cross-entropy of the class ids)."
        )


def _as_tensor(value):
    """`value` as a tensor of the backend (`tf.convert_to_tensor` on TF)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(value)
    return keras.ops.convert_to_tensor(value)


def _dtype(tensor) -> str:
    """The dtype of `tensor` as Keras names it (`"int32"`, `"bool"`, ...)."""
    return keras.backend.standardize_dtype(tensor.dtype)


def _sparse_label_problem(labels, classes, ignore, where, head):
    """The sparse-label check in `keras.ops` (every backend): integer labels
    with one clip and one test, float labels by range and wholeness; the
    label the loss ignores is legal and kept."""
    ops = keras.ops
    integer = "int" in _dtype(labels)
    if integer:
        values = labels
        clipped = ops.clip(labels, 0, classes - 1)
        bad = ops.not_equal(clipped, labels)
    else:
        values = ops.cast(labels, "float32")
        bad = (values < 0) | (values >= classes) | (values != ops.floor(values))
    if ignore is not None:
        kept = ops.equal(values, ops.cast(ignore, values.dtype))
        bad = bad & ops.logical_not(kept)
        if integer:
            clipped = ops.where(kept, labels, clipped)
    problem = (
        ops.any(bad),
        lambda: kd_checks.format_message(
            "Labels must be integers in [0, {}) for a student with {} classes"
            + head
            + ("" if ignore is None else f" (or {ignore}, the ignored class)")
            + ". Received a label value of {} in {}.",
            classes,
            classes,
            kd_checks.first(values, bad),
            where(),
        ),
    )
    fixed = clipped if integer else ops.where(bad, ops.zeros_like(labels), labels)
    return [problem], fixed


def _sample_weight_problem(sample_weight, where, problems):
    """The sample-weight check in `keras.ops` (every backend): appends it to
    `problems`; returns the weights with bad entries replaced by 0."""
    ops = keras.ops
    raw = ops.convert_to_tensor(sample_weight)
    weights = ops.cast(raw, "float32")
    bad = ops.logical_not(ops.isfinite(weights)) | (weights < 0)
    problems.append(
        (
            ops.any(bad),
            lambda: kd_checks.format_message(
                "`sample_weight` must be finite and >= 0. Received a weight "
                "of {} in {}.",
                kd_checks.first(weights, bad),
                where(),
            ),
        )
    )
    return ops.where(bad, ops.zeros_like(raw), raw)


def _sparse_loss_of(loss):
    """`(True, ignore_class)` if `loss` is sparse categorical CE, else None."""
    if loss is None:
        return True, None  # the default hard-label loss
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError):
            return None
    if loss is keras.losses.sparse_categorical_crossentropy:
        return True, None
    wrapped = _compat.loss_function(loss)
    if (
        wrapped is not None
        and wrapped[0] is keras.losses.sparse_categorical_crossentropy
    ):
        return True, wrapped[1].get("ignore_class")
    return None


def _kernel_checks_labels():
    """Whether the sparse cross-entropy kernel itself refuses a bad label.

    TensorFlow's CPU kernel raises for a label outside `[0, classes)` before
    any gradient exists (its GPU kernel gives NaN instead), so on CPU the
    step leaves integer labels to it and spends no op of its own;
    `checks.raise_readable` turns the kernel's error into the same message.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def nonfinite_problem(x, total, where):
    """`(failed, message_fn)`: an evaluation batch's inputs or loss not finite.

    A training step checks its loss and gradients; an evaluation step has no
    gradients, and a layer that swallows a NaN input (`relu(nan) = 0` on
    some CPU kernels) can leave its loss finite: the inputs are checked too.
    In `keras.ops`, for every backend's test step.
    """
    ops = keras.ops
    total = ops.cast(total, "float32")
    flags = [ops.logical_not(ops.isfinite(total))]
    for tensor in keras.tree.flatten(x):
        if tensor is not None and "float" in _dtype(tensor):
            flags.append(ops.logical_not(ops.all(ops.isfinite(tensor))))
    failed = ops.any(ops.stack(flags))
    return (
        failed,
        lambda: kd_checks.format_message(
            "The inputs or the loss of {} are NaN or infinite (loss {}), so its "
            "results would mean nothing. Remove or repair the non-finite inputs "
            "(e.g. keep the rows where `np.isfinite(x).all(axis=1)`).",
            where(),
            total,
        ),
    )
