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


def is_plain_functional(model) -> bool:
    """Whether `model` is exactly a functional or Sequential model (no subclass)."""
    from keras.src.models.functional import Functional

    return type(model) in (keras.Model, keras.Sequential, Functional)


def has_variable_learning_rate(optimizer) -> bool:
    """Whether the optimizer's learning rate is a float variable (no schedule)."""
    return isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable)


def set_initial_epoch(model, epoch: int) -> None:
    """Makes the running `fit()` start at `epoch` (as `BackupAndRestore` does).

    Relies on the TensorFlow trainer reading `model._initial_epoch` after
    the callbacks' `on_train_begin`.
    """
    model._initial_epoch = int(epoch)


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


def step_count(optimizer):
    """The number of training steps `optimizer` has run (a variable or tensor).

    `optimizer.iterations` counts updates: with `gradient_accumulation_steps`
    it is the raw step count divided by that number. Relies on Keras's
    optimizers holding the raw count in `_iterations` (a
    `LossScaleOptimizer` counts in its inner optimizer).
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    count = getattr(inner, "_iterations", None)
    return optimizer.iterations if count is None else count


class DeferredUpdates(keras.StatelessScope):
    """A `keras.StatelessScope` around a model's call that keeps its writes.

    In the scope, assignments to Keras variables (BatchNormalization's moving
    statistics, a dropout layer's seed) are recorded rather than made, and
    later reads in the scope see the recorded values. `apply()`, called
    after the scope, makes them. The losses the layers add (`add_loss`,
    e.g. activity regularizers) are handed back to `model`'s layers on exit,
    so `model.losses` holds them as after a plain call.

    No variable may be created in the scope (Keras refuses, or defers its
    initialization): use it only around a call of a built model (`usable`).
    Relies on `keras.Variable.assign` (so `assign_add`/`assign_sub`) calling
    the scope's `add_update`, and on each layer keeping its losses in
    `_losses` and the ids of those added in a scope in `_loss_ids`.

    Example:

    ```python
    deferred = DeferredUpdates(model)
    with deferred:
        outputs = model(x, training=True)
    ...  # check the outputs
    deferred.apply()
    ```
    """

    def __init__(self, model):
        super().__init__(collect_losses=True)
        self.model = model
        self.variables = []

    @staticmethod
    def usable(model):
        """Whether `model` and all its layers are built (so create no variable)."""
        return model.built and all(layer.built for layer in sublayers(model))

    def add_update(self, update):
        if self.get_current_value(update[0]) is None:
            self.variables.append(update[0])
        super().add_update(update)

    def __exit__(self, *args, **kwargs):
        super().__exit__(*args, **kwargs)
        for layer in [self.model, *sublayers(self.model)]:
            ids = getattr(layer, "_loss_ids", ())
            layer._losses.extend(loss for loss in self.losses if id(loss) in ids)

    def apply(self):
        """Assigns each recorded variable its last recorded value."""
        for variable in self.variables:
            variable.assign(self.get_current_value(variable))


# The key of the tensor that holds a step's scalar logs (see `packed_logs`).
_PACKED_LOGS = "keras_distill/packed_logs:"


def packed_logs_function(trainer, step_function):
    """Keras's compiled train or test function, with the logs in one tensor.

    Each value a compiled step returns costs the `fit()` loop per step (the
    function's outputs, then one conversion to a Python number each), about
    1% of a small student's step per value. The Distiller logs several
    (`loss`, `student_loss`, `distillation_loss`, ...), so its step returns
    its scalar float32 logs stacked in one tensor, and this function gives
    them back by name, as NumPy scalars, in their order. Other values (none
    by default) are returned as they are.

    Relies on the TensorFlow trainer's `_make_function(step_function)`,
    which builds what `make_train_function` / `make_test_function` store.
    Returns None on other backends (the caller keeps Keras's own function).
    """
    if keras.backend.backend() != "tensorflow" or not hasattr(
        trainer, "_make_function"
    ):
        return None
    import numpy as np
    import tensorflow as tf

    layouts = []  # one `(order, packed names)` per traced structure

    def packed_step(data):
        logs = step_function(data)
        if not isinstance(logs, dict):
            return logs
        names = [
            key
            for key, value in logs.items()
            if tf.is_tensor(value)
            and value.dtype == tf.float32
            and value.shape.rank == 0
        ]
        if len(names) < 2:
            return logs
        layout = (list(logs), names)
        if layout not in layouts:
            layouts.append(layout)
        packed = {key: value for key, value in logs.items() if key not in names}
        packed[f"{_PACKED_LOGS}{layouts.index(layout)}"] = tf.stack(
            [logs[key] for key in names]
        )
        return packed

    function = trainer._make_function(packed_step)

    def unpacked(iterator):
        logs = function(iterator)
        if not isinstance(logs, dict):
            return logs
        key = next((k for k in logs if k.startswith(_PACKED_LOGS)), None)
        if key is None:
            return logs
        order, names = layouts[int(key[len(_PACKED_LOGS) :])]
        logs = dict(logs)
        logs.update(zip(names, np.asarray(logs.pop(key))))
        return {name: logs[name] for name in order}

    return unpacked


def compiled_loss(model):
    """The loss `compile()` built for `model` (Keras's `_compile_loss`), or None."""
    return getattr(model, "_compile_loss", None)


def compile_config(model) -> dict:
    """The arguments `model.compile()` was called with (`_compile_config`)."""
    config = getattr(model, "_compile_config", None)
    return getattr(config, "config", None) or {}


def loss_tracker(model):
    """The `Mean` metric behind the `loss` log (Keras's `_loss_tracker`)."""
    return model._loss_tracker


def compiled_metrics(model):
    """The compiled metrics container (Keras's `_compile_metrics`), or None."""
    return getattr(model, "_compile_metrics", None)


def dataset_inputs(dataset):
    """The datasets `dataset` (a `tf.data.Dataset`) is made from, or `[]`.

    TensorFlow's private `_inputs()`: an unknown dataset class has none.
    """
    try:
        return list(dataset._inputs())
    except (AttributeError, NotImplementedError, TypeError):
        return []


# The names of the JAX trainer's state groups, in the order of its tuples.
_JAX_STATE_KEYS = {
    "train": (
        "trainable_variables",
        "non_trainable_variables",
        "optimizer_variables",
        "metrics_variables",
    ),
    "test": ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


class JaxLiveVariables:
    """Keeps a few variables readable and assignable during a JAX `fit()`.

    Keras's JAX trainer moves every variable's value into the state it
    passes from step to step and leaves the variables empty until the epoch
    ends (`_purge_model_variables`: `_value = None`, which reads as the
    initial value), so a callback that reads `optimizer.iterations` or sets
    `distiller.temperature = 2.0` mid-epoch would read a wrong value and its
    assignment would be lost. For the variables given (a few scalars):
    `after(state)` makes each hold its value in the step's new state (the
    same array, no copy), and `before(state)` puts a value assigned since
    into the state the next step gets. `into_trainer(model)` does the same
    for the state Keras assigns back at the end of an epoch.

    Relies on the JAX trainer's state tuples (`_JAX_STATE_KEYS`), on a JAX
    variable holding its array in `_value`, and on `model._jax_state`.
    """

    def __init__(self, model, variables, kind):
        groups = [model.trainable_variables, model.non_trainable_variables]
        if kind == "train":
            groups.append(model.optimizer.variables)
        groups.append(model.metrics_variables)
        where = {
            id(v): (g, i) for g, group in enumerate(groups) for i, v in enumerate(group)
        }
        self.kind = kind
        self.slots = [(v, *where[id(v)]) for v in variables if id(v) in where]
        self._given = {}  # id(variable) -> the array `after` gave it

    def before(self, state):
        """`state` with the values assigned since the last step."""
        changed = [
            (v, g, i)
            for v, g, i in self.slots
            if v._value is not None and v._value is not self._given.get(id(v))
        ]
        if not changed:
            return state
        state = [list(group) for group in state]
        for variable, g, i in changed:
            state[g][i] = variable._value
        return tuple(state)

    def after(self, state):
        """Makes each variable hold its value in `state` (the step's new state)."""
        for variable, g, i in self.slots:
            variable._value = state[g][i]
            self._given[id(variable)] = state[g][i]

    def into_trainer(self, model):
        """Puts the variables' values into the state Keras assigns back."""
        state = getattr(model, "_jax_state", None)
        if not state:
            return
        keys = _JAX_STATE_KEYS[self.kind]
        for variable, g, i in self.slots:
            group = state.get(keys[g])
            if variable._value is not None and group is not None:
                group = list(group)
                group[i] = variable._value
                state[keys[g]] = group


def set_jax_trainer_state(model, state, kind):
    """Makes `state` (a step's state tuple) what `fit()` assigns back at its end.

    The JAX trainer keeps the last step's state in `model._jax_state` and
    assigns it to the variables when `fit()`/`evaluate()` ends, also when a
    step raised; a failed step's state (the old values, selected) must be
    that one, as the arrays of the state before it were donated to it.
    """
    model._jax_state = dict(zip(_JAX_STATE_KEYS[kind], state))
    model._jax_state_synced = False


def jax_endpoint(archive, name, fn, input_signature):
    """`fn` (of JAX arrays) as a `tf.function` bound to `archive`'s variables.

    What `ExportArchive.add_endpoint` makes on the JAX backend (jax2tf),
    without adding the endpoint: the caller wraps it in its own serving
    function. Relies on `ExportArchive._backend_add_endpoint`.
    """
    return archive._backend_add_endpoint(name, fn, input_signature)
