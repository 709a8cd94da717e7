"""Which Keras backend the `Distiller` trains on: its step, and what needs TF.

The one place that reads `keras.backend.backend()` to choose the step:
`tf_step.TensorFlowStep` on TensorFlow, `jax_step.JaxStep` on JAX. What
works on TensorFlow alone (`tf.distribute` strategies, `kd.distribute`)
raises `check_supported`'s `BackendNotSupportedError` elsewhere, naming the
backend and what to use instead.
"""

import keras

# The backends the Distiller trains on.
SUPPORTED = ("tensorflow", "jax")


class BackendNotSupportedError(NotImplementedError):
    """A feature that the running Keras backend cannot provide."""


def check_supported(feature: str, instead: str, backends=("tensorflow",)) -> None:
    """Raises `BackendNotSupportedError` if `feature` needs another backend.

    Args:
        feature: What was asked for (e.g. "`kd.distribute.fit`").
        instead: What to use on this backend.
        backends: The backends that provide it.
    """
    backend = keras.backend.backend()
    if backend in backends:
        return
    raise BackendNotSupportedError(
        f"{feature} needs the {' or '.join(backends)} backend, but Keras runs on "
        f"{backend} (KERAS_BACKEND={backend}). {instead}"
    )


def check_no_tf_strategy(method: str) -> None:
    """Refuses a `tf.distribute` strategy scope around a JAX `fit()`/`evaluate()`."""
    if keras.backend.backend() == "tensorflow":
        return
    import tensorflow as tf

    if tf.distribute.has_strategy():
        check_supported(
            f"`Distiller.{method}()` under a `tf.distribute` strategy "
            f"({type(tf.distribute.get_strategy()).__name__})",
            "On JAX, distribute with `keras.distribution` instead (e.g. "
            "`keras.distribution.set_distribution(keras.distribution.DataParallel())`"
            " before building the models), or use KERAS_BACKEND=tensorflow.",
        )


class _UnsupportedStep:
    """The step of a backend the Distiller does not train on: a clear error."""

    def make_train_function(self, force=False):
        check_supported(
            "Training a `Distiller`",
            "Use KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax.",
            SUPPORTED,
        )

    make_test_function = make_train_function


def step_class():
    """The step mixin of the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_distill.distiller.tf_step import TensorFlowStep

        return TensorFlowStep
    if backend == "jax":
        from keras_distill.distiller.jax_step import JaxStep

        return JaxStep
    return _UnsupportedStep
