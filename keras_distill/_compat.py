"""Every use of Keras internals, in one place.

The library otherwise uses only Keras's public API. A Keras upgrade that
moves or renames one of these touches this file alone; each function says
what it relies on.
"""

import keras


def print_msg(message: str) -> None:
    """Prints like Keras's own callbacks do (respects Keras's print routing)."""
    from keras.src.utils import io_utils

    io_utils.print_msg(message)


def unscale_loss_for_distribution(value):
    """Undoes the loss scaling Keras applies under a distribution strategy."""
    from keras.src.losses import loss as loss_module

    return loss_module.unscale_loss_for_distribution(value)


def sublayers(model):
    """Every sublayer of `model`, recursively, without `model` itself."""
    return list(model._flatten_layers(include_self=False))


def is_functional(model) -> bool:
    """Whether `model` is a functional or Sequential model (a layer graph)."""
    from keras.src.models.functional import Functional

    return isinstance(model, keras.Sequential | Functional)


def has_variable_learning_rate(optimizer) -> bool:
    """Whether the optimizer's learning rate is a float variable (no schedule)."""
    return isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable)


def tuner_checkpoint_path(tuner, trial_id: str) -> str:
    """The path Keras Tuner saves a trial's model weights to."""
    return tuner._get_checkpoint_fname(trial_id)


def assign_add(variable, value):
    """`variable.assign_add(value)` in one op where the backend allows it.

    Relies on a Keras variable of the TensorFlow backend holding its
    `tf.Variable` in `_value`: `keras.Variable.assign_add` reads, adds and
    assigns (three ops), `tf.Variable.assign_add` is one.
    """
    raw = getattr(variable, "_value", None)
    if keras.backend.backend() == "tensorflow" and hasattr(raw, "assign_add"):
        return raw.assign_add(keras.ops.cast(value, raw.dtype))
    return variable.assign_add(value)


def add_to_mean(metric, value, weight) -> None:
    """`metric.update_state(value, sample_weight=weight)` for a scalar `value`.

    Relies on `keras.metrics.Mean` holding its state in `total` and `count`.
    The same sums as `update_state` (the scalar counted `weight` times), in
    three ops instead of its thirteen (no broadcasting, no reductions): the
    Distiller updates several loss trackers in every step.
    """
    weight = keras.ops.cast(weight, metric.total.dtype)
    assign_add(metric.total, keras.ops.cast(value, metric.total.dtype) * weight)
    assign_add(metric.count, weight)


def tuner_try_build(tuner, hp):
    """Keras Tuner's `Tuner._try_build(hp)` without clearing the session.

    Keras Tuner (1.4) calls `keras.backend.clear_session()` and runs
    `gc.collect()` twice before every trial. With TensorFlow's traced graphs
    alive each collection takes a few hundred ms, and clearing the session
    empties TensorFlow's kernel cache, so a compiled model reused from an
    earlier trial instantiates its traced step again (1-2 s on 2 CPU cores),
    which is as long as a few epochs of a small student. Python's automatic
    garbage collection still runs. Relies on
    `Tuner._build_hypermodel`, `Tuner.max_model_size` and
    `keras_tuner.src.engine.tuner.maybe_compute_model_size`.
    """
    import keras_tuner
    from keras_tuner.src.engine import tuner as tuner_module

    model = tuner._build_hypermodel(hp)
    if not isinstance(model, keras.Model):
        raise keras_tuner.errors.FatalTypeError(
            "Expected the model-building function, or HyperModel.build() to return "
            f"a valid Keras Model instance. Received: {model} of type {type(model)}."
        )
    size = tuner_module.maybe_compute_model_size(model)
    if tuner.max_model_size and size > tuner.max_model_size:
        raise keras_tuner.errors.FailedTrialError(
            f"Oversized model: {size} parameters. Skip model."
        )
    return model


def loss_function(loss):
    """`(fn, kwargs)` of a `keras.losses.LossFunctionWrapper` (e.g. SCCE), else None.

    Relies on the wrapper holding its function in `fn` and its arguments
    (`from_logits`, `ignore_class`, ...) in `_fn_kwargs`.
    """
    from keras.src.losses.losses import LossFunctionWrapper

    if not isinstance(loss, LossFunctionWrapper):
        return None
    return loss.fn, dict(getattr(loss, "_fn_kwargs", None) or {})
