"""Callbacks that schedule distillation during `fit()`.

- `ParameterScheduler` applies a schedule to `alpha`, `temperature` (or any
  scalar, non-trainable `keras.Variable` of the model) per epoch or per step.
- `CurriculumScheduler` sets the data fraction of a `Curriculum` per epoch.
- `ProgressiveDistillation` runs declared stages (distill -> curriculum ->
  fine-tune), each with its own epochs, alpha, temperature, data fraction and
  learning-rate factor.

All three compute their values from the epoch (or step) number alone, so a
run interrupted and resumed with `keras.callbacks.BackupAndRestore` gets the
same values as an uninterrupted run.

Example:

```python
distiller.fit(train_ds, epochs=10, callbacks=[
    kd.callbacks.ParameterScheduler("temperature", kd.schedules.linear(8.0, 2.0, 10)),
    kd.callbacks.ParameterScheduler("alpha", kd.schedules.cosine(0.1, 0.9, 10)),
])
```
"""

import warnings
import weakref

import keras
import numpy as np
from keras.src.utils import io_utils

from keras_distill import curriculum as kd_curriculum
from keras_distill import params as kd_params
from keras_distill import schedules

UNITS = ("epoch", "step")
# model -> (the fit's `params` dict, {parameter name: its ParameterScheduler}).
_CLAIMS = weakref.WeakKeyDictionary()


def scalar_variables(model) -> dict:
    """The public scalar, non-trainable float variables of `model`, by name.

    Looks at the attributes and properties that `model`'s own classes define
    (not Keras's), e.g. a `Distiller`'s `alpha` and `temperature`.
    """
    names = set()
    for klass in type(model).__mro__:
        if klass is keras.Model or klass is keras.layers.Layer:
            break
        names.update(n for n, a in vars(klass).items() if isinstance(a, property))
    names.update(vars(model))
    found = {}
    for name in sorted(names):
        if name.startswith("_"):
            continue
        try:
            value = getattr(model, name)
        except Exception:  # A property that cannot be read yet is no variable.
            continue
        if (
            isinstance(value, keras.Variable)
            and tuple(value.shape) == ()
            and not value.trainable
            and "float" in str(value.dtype)
        ):
            found[name] = value
    return found


def check_parameter_value(name: str, value, where: str) -> float:
    """Returns `value` as a float if it is valid for parameter `name`.

    The rules are `keras_distill.params`' (every value finite in float32;
    `alpha` in [0, 1], `temperature` > 0, `hint_weight` >= 0). `where`
    (e.g. `"epoch 3"`) is quoted in the error.
    """
    return kd_params.check(name, value, where)


def assign_parameter(model, name: str, value, where: str) -> float:
    """Checks `value` for `model`'s parameter `name` and assigns it.

    Goes through the model's property setter when it has one (a
    `Distiller`'s `alpha`, `temperature`, `hint_weight`), so the value meets
    the same rules as `distiller.alpha = value`; other scalar variables are
    assigned after the finiteness check.
    """
    number = check_parameter_value(name, value, where)
    setter = getattr(type(model), name, None)
    if isinstance(setter, property) and setter.fset is not None:
        setattr(model, name, number)
    else:
        scalar_variables(model)[name].assign(number)
    return number


def _as_callable(value, name: str, check=None):
    """A number becomes a constant schedule (checked by `check`); else callable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if check is not None:
            check(value)
        return schedules.constant(value)
    if not callable(value):
        raise TypeError(
            f"`{name}` must be a `keras_distill.schedules.Schedule`, a number or "
            f"a callable of the epoch. Received: {name}={value!r}"
        )
    return value


def _epoch_values(schedule, epochs):
    return [float(schedule(epoch)) for epoch in range(int(epochs or 0))]


@keras.saving.register_keras_serializable(package="keras_distill")
class ParameterScheduler(keras.callbacks.Callback):
    """Sets a scalar variable of the model from a schedule during `fit()`.

    Like `keras.callbacks.LearningRateScheduler`, for a `Distiller`'s `alpha`
    (weight of the hard-label loss) and `temperature`, or any other scalar,
    non-trainable float `keras.Variable` attribute of the model. The variable
    is assigned, never replaced, so the traced train step sees the new value
    without retracing. The value is written into the logs under `name`, so it
    shows in the progress bar, `History` and TensorBoard.

    Values are checked before training (for every epoch, and every step when
    the number of steps is known) and again when applied: a NaN, an `alpha`
    outside [0, 1] or a `temperature <= 0` raises an error quoting the epoch
    (0-based) or step and the value.

    The value depends only on the epoch index (or the optimizer's iteration
    count for `unit="step"`), so resuming with `BackupAndRestore` continues
    the schedule where it stopped.

    Args:
        name: Name of the variable attribute, e.g. `"alpha"` or
            `"temperature"`.
        schedule: A `keras_distill.schedules.Schedule`, a number (constant),
            or any callable of the epoch/step returning a number (not
            serializable).
        unit: `"epoch"` (set at the start of each epoch) or `"step"` (set
            before each batch from `optimizer.iterations`). Defaults to
            `"epoch"`.
        verbose: `1` prints each new value. Defaults to `0`.

    Example:

    ```python
    distiller.fit(train_ds, epochs=10, callbacks=[
        kd.callbacks.ParameterScheduler(
            "temperature", kd.schedules.linear(8.0, 2.0, 10)
        ),
    ])
    distiller.history.history["temperature"]  # [8.0, 7.4, ..., 2.6]
    ```
    """

    def __init__(self, name, schedule, unit="epoch", verbose=0):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"`name` must be the name of a model variable, e.g. 'alpha'. "
                f"Received: name={name!r}"
            )
        if unit not in UNITS:
            raise ValueError(f"`unit` must be one of {UNITS}. Received: unit={unit!r}")
        self.name = name
        self.schedule = _as_callable(schedule, "schedule")
        self.unit = unit
        self.verbose = verbose
        self.value = None

    def _where(self, index):
        return f"{self.unit} {index}" + (" (0-based)" if self.unit == "epoch" else "")

    def on_train_begin(self, logs=None):
        variables = scalar_variables(self.model)
        if self.name not in variables:
            raise ValueError(
                f"`ParameterScheduler` cannot schedule {self.name!r}: "
                f"{type(self.model).__name__} has no scalar non-trainable "
                f"variable of that name. Valid names: {sorted(variables)}."
            )
        self._claim()
        self._check_ahead()

    def _claim(self):
        """Refuses a second `ParameterScheduler` on the same parameter in one fit."""
        # Keras gives every callback of one `fit()` the same `params` dict, so
        # it identifies the fit: a claim left by an earlier (maybe
        # interrupted) fit never blocks this one.
        claims = _CLAIMS.get(self.model)
        if claims is None or claims[0] is not self.params:
            claims = (self.params, {})
            _CLAIMS[self.model] = claims
        owner = claims[1].get(self.name)
        if owner is not None and owner is not self:
            raise ValueError(
                f"Two `ParameterScheduler`s set {self.name!r} in one fit(): "
                f"{owner!r} and {self!r}. Each parameter can have one schedule; "
                "combine them with `kd.schedules.join`."
            )
        claims[1][self.name] = self

    def __repr__(self):
        return (
            f"ParameterScheduler({self.name!r}, {self.schedule!r}, unit={self.unit!r})"
        )

    def _check_ahead(self):
        """Checks every value of the run before the first step."""
        params = self.params or {}
        epochs = params.get("epochs")
        if self.unit == "epoch":
            for epoch, value in enumerate(_epoch_values(self.schedule, epochs)):
                check_parameter_value(self.name, value, self._where(epoch))
            return
        steps = params.get("steps")
        if not (epochs and steps and isinstance(self.schedule, schedules.Schedule)):
            return
        values = self.schedule(np.arange(int(epochs) * int(steps)))
        for index, value in enumerate(np.atleast_1d(values).tolist()):
            check_parameter_value(self.name, value, self._where(index))

    def _apply(self, index):
        value = check_parameter_value(
            self.name, self.schedule(index), self._where(index)
        )
        if value != self.value:
            assign_parameter(self.model, self.name, value, self._where(index))
            if self.verbose:
                io_print = io_utils.print_msg
                io_print(f"{self._where(index)}: setting {self.name} to {value:.6g}.")
        self.value = value

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            self._apply(
                int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.unit == "step" and logs is not None:
            logs[self.name] = self.value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.value is not None:
            logs[self.name] = self.value

    def get_config(self):
        return {
            "name": self.name,
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "unit": self.unit,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


class CurriculumScheduler(keras.callbacks.Callback):
    """Feeds the easiest examples first: sets a `Curriculum`'s fraction per epoch.

    At the start of each epoch the pacing schedule gives the fraction of the
    easiest examples to use; the curriculum's dataset reads it when Keras
    starts iterating it for that epoch. The fraction and the number of
    examples are logged as `curriculum_fraction` and `curriculum_examples`.
    Pacing values outside (0, 1] raise an error before training, quoting the
    epoch and the value.

    Reference: Bengio et al., "Curriculum Learning", ICML 2009; Hacohen and
    Weinshall, "On The Power of Curriculum Learning in Training Deep
    Networks", ICML 2019 (https://arxiv.org/abs/1904.03626).

    Args:
        curriculum: A `keras_distill.curriculum.Curriculum`; train on
            `curriculum.dataset(...)`.
        pacing: A schedule of the epoch giving the fraction, e.g.
            `kd.curriculum.pacing("linear", 0.2, 6)`, or a number.
        verbose: `1` prints each new fraction. Defaults to `0`.

    Example:

    ```python
    curriculum = kd.curriculum.Curriculum.from_teacher(teacher, x, y)
    distiller.fit(curriculum.dataset(batch_size=64), epochs=10, callbacks=[
        kd.callbacks.CurriculumScheduler(
            curriculum, kd.curriculum.pacing("root", 0.25, 6)
        ),
    ])
    ```
    """

    def __init__(self, curriculum, pacing, verbose=0):
        super().__init__()
        if not isinstance(curriculum, kd_curriculum.Curriculum):
            raise TypeError(
                "`curriculum` must be a `keras_distill.curriculum.Curriculum`. "
                f"Received: {curriculum!r} of type {type(curriculum).__name__}"
            )
        self.curriculum = curriculum
        self.pacing = _as_callable(
            pacing, "pacing", lambda v: kd_curriculum.check_fraction(v, "`pacing`")
        )
        self.verbose = verbose
        self.fraction = None
        self.examples = None

    def _fraction(self, epoch):
        return kd_curriculum.check_fraction(
            self.pacing(epoch), f"The curriculum fraction at epoch {epoch} (0-based)"
        )

    def on_train_begin(self, logs=None):
        for epoch in range(int((self.params or {}).get("epochs") or 0)):
            self._fraction(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        fraction = self._fraction(epoch)
        self.examples = self.curriculum.set_fraction(fraction, shuffle_key=epoch)
        if self.verbose and fraction != self.fraction:
            io_utils.print_msg(
                f"epoch {epoch}: curriculum uses the easiest {fraction:.1%} "
                f"({self.examples} examples)."
            )
        self.fraction = fraction

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.fraction is not None:
            logs["curriculum_fraction"] = self.fraction
            logs["curriculum_examples"] = self.examples


def _positive(value, name, where=None):
    return kd_params.Param(name, 1.0, 0.0, low_open=True).check(value, where)


@keras.saving.register_keras_serializable(package="keras_distill")
class Stage:
    """One stage of `ProgressiveDistillation`.

    Each value is a number, or a schedule of the epoch counted from the start
    of the stage.

    Args:
        epochs: Number of epochs, an int >= 1.
        alpha: Weight of the hard-label loss, in [0, 1].
        temperature: Distillation temperature, > 0.
        data_fraction: Fraction of the easiest examples used, in (0, 1];
            values below 1 need a `Curriculum`. Defaults to `1.0`.
        learning_rate_factor: Multiplies the optimizer's base learning rate,
            > 0. Defaults to `1.0`.
        name: A label for logs and printing. Defaults to `"stage<i>"`.
    """

    def __init__(
        self,
        epochs,
        alpha,
        temperature,
        data_fraction=1.0,
        learning_rate_factor=1.0,
        name=None,
    ):
        if (
            isinstance(epochs, bool)
            or not float(schedules._number(epochs, "epochs")).is_integer()
            or epochs < 1
        ):
            raise ValueError(
                f"A stage needs `epochs` >= 1 (a whole number). Received: "
                f"epochs={epochs!r}"
            )
        self.epochs = int(epochs)
        self.alpha = self._value(alpha, "alpha")
        self.temperature = self._value(temperature, "temperature")
        self.data_fraction = self._value(data_fraction, "data_fraction")
        self.learning_rate_factor = self._value(
            learning_rate_factor, "learning_rate_factor"
        )
        self.name = name
        for field in ("alpha", "temperature", "data_fraction", "learning_rate_factor"):
            for epoch in range(self.epochs):
                self.check(field, getattr(self, field)(epoch), epoch)

    @staticmethod
    def _value(value, field):
        if isinstance(value, dict):
            value = keras.saving.deserialize_keras_object(value)
        return schedules.as_schedule(value, field)

    def check(self, field, value, epoch):
        """Raises a ValueError if `value` is invalid for `field`."""
        where = f"epoch {epoch} (0-based) of {self.name or 'a stage'}"
        if field == "data_fraction":
            return kd_curriculum.check_fraction(value, f"`data_fraction` at {where}")
        if field == "learning_rate_factor":
            return _positive(value, "learning_rate_factor", where)
        return check_parameter_value(field, value, where)

    def get_config(self):
        config = {"epochs": self.epochs, "name": self.name}
        for field in ("alpha", "temperature", "data_fraction", "learning_rate_factor"):
            value = getattr(self, field)
            if isinstance(value, schedules.Constant):
                config[field] = value.value_
            else:
                config[field] = keras.saving.serialize_keras_object(value)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Stage({args})"


def _as_stages(stages):
    if isinstance(stages, Stage | dict):
        stages = [stages]
    stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
    if not stages:
        raise ValueError("`stages` must hold at least one stage. Received: []")
    for i, stage in enumerate(stages):
        if stage.name is None:
            stage.name = f"stage{i + 1}"
    return stages


def total_epochs(stages) -> int:
    """The number of epochs of a list of stages (pass it to `fit(epochs=...)`)."""
    return sum(stage.epochs for stage in _as_stages(stages))


def progressive_stages(
    distill_epochs: int,
    curriculum_epochs: int,
    finetune_epochs: int,
    alpha: float = 0.1,
    temperature: float = 6.0,
    min_fraction: float = 0.5,
    finetune_learning_rate_factor: float = 0.1,
    end_temperature: float = 2.0,
) -> list:
    """The progressive recipe: distill -> curriculum -> fine-tune, as stages.

    1. distill: low `alpha`, high `temperature`, on the easiest
       `min_fraction` of the data;
    2. curriculum: the data grows linearly from `min_fraction` to all of it
       (ending at 1.0 on the last epoch of the stage) while the temperature
       anneals (cosine) from `temperature` to `end_temperature`;
    3. fine-tune: `alpha=1` (hard labels only), all the data, the learning
       rate scaled by `finetune_learning_rate_factor`.

    Without a `Curriculum` pass `min_fraction=1.0` (all data throughout).

    Args:
        distill_epochs: Epochs of stage 1, >= 1.
        curriculum_epochs: Epochs of stage 2, >= 1.
        finetune_epochs: Epochs of stage 3, >= 1.
        alpha: Hard-label weight in stages 1-2. Defaults to `0.1`.
        temperature: Temperature of stage 1. Defaults to `6.0`.
        min_fraction: Data fraction of stage 1, in (0, 1]. Defaults to `0.5`.
        finetune_learning_rate_factor: Learning-rate factor of stage 3.
            Defaults to `0.1`.
        end_temperature: Temperature at the end of stage 2. Defaults to
            `2.0`.

    Returns:
        A list of three `Stage`s.

    Example:

    ```python
    stages = kd.callbacks.progressive_stages(4, 4, 2)
    kd.callbacks.total_epochs(stages)  # 10
    ```
    """
    min_fraction = kd_curriculum.check_fraction(min_fraction, "`min_fraction`")
    curriculum_epochs = int(curriculum_epochs)
    step = (1.0 - min_fraction) / max(curriculum_epochs, 1)
    return [
        Stage(distill_epochs, alpha, temperature, min_fraction, name="distill"),
        Stage(
            curriculum_epochs,
            alpha,
            schedules.cosine(
                temperature, end_temperature, max(curriculum_epochs - 1, 0)
            ),
            schedules.linear(min_fraction + step, 1.0, max(curriculum_epochs - 1, 0)),
            name="curriculum",
        ),
        Stage(
            finetune_epochs,
            1.0,
            end_temperature,
            1.0,
            finetune_learning_rate_factor,
            name="finetune",
        ),
    ]


class ProgressiveDistillation(keras.callbacks.Callback):
    """Runs declared stages: e.g. distill -> curriculum -> fine-tune.

    Each `Stage` declares its epochs, `alpha`, `temperature`, data fraction
    and learning-rate factor (numbers or schedules of the epoch within the
    stage). The stages are joined into one schedule per quantity
    (`kd.schedules.join`), applied at the start of every epoch: `alpha` and
    `temperature` through `ParameterScheduler`s, the data fraction through a
    `CurriculumScheduler` (when a `Curriculum` is given), the learning rate
    by assigning `base_learning_rate * factor` to the optimizer. Logged:
    `stage` (1-based), `alpha`, `temperature`, `learning_rate` and, with a
    curriculum, `curriculum_fraction` and `curriculum_examples`.

    Every value is a function of the epoch index alone, so resuming with
    `keras.callbacks.BackupAndRestore` reproduces the uninterrupted run. The
    base learning rate is `learning_rate` when given; else it is read from
    the optimizer at the first epoch of `fit()` (dividing out the previous
    epoch's factor when the run starts at a later epoch, as on resume).

    Args:
        stages: A list of `Stage`s (or dicts of `Stage` arguments), e.g.
            from `progressive_stages()`.
        curriculum: A `keras_distill.curriculum.Curriculum` to train on
            (`curriculum.dataset(...)`); required when a stage uses less than
            all the data. Defaults to `None`.
        learning_rate: The base learning rate. Defaults to `None` (read from
            the optimizer).
        verbose: `1` prints each stage as it starts. Defaults to `0`.

    Example:

    ```python
    stages = kd.callbacks.progressive_stages(4, 4, 2)
    curriculum = kd.curriculum.Curriculum.from_teacher(teacher, x, y)
    progressive = kd.callbacks.ProgressiveDistillation(stages, curriculum)
    distiller.fit(curriculum.dataset(64), epochs=progressive.total_epochs,
                  callbacks=[progressive])
    ```
    """

    def __init__(self, stages, curriculum=None, learning_rate=None, verbose=0):
        super().__init__()
        self.stages = _as_stages(stages)
        self.curriculum = curriculum
        self.learning_rate = (
            None
            if learning_rate is None
            else _positive(learning_rate, "learning_rate")
        )
        self.verbose = verbose
        ends = np.cumsum([stage.epochs for stage in self.stages]).tolist()
        self.boundaries = ends[:-1]

        def joined(field):
            return schedules.join(
                [getattr(stage, field) for stage in self.stages], self.boundaries
            )

        self.alpha_schedule = joined("alpha")
        self.temperature_schedule = joined("temperature")
        self.fraction_schedule = joined("data_fraction")
        self.learning_rate_factor_schedule = joined("learning_rate_factor")
        self._children = [
            ParameterScheduler("alpha", self.alpha_schedule),
            ParameterScheduler("temperature", self.temperature_schedule),
        ]
        if curriculum is not None:
            self._children.append(
                CurriculumScheduler(curriculum, self.fraction_schedule)
            )
        else:
            for stage in self.stages:
                for epoch in range(stage.epochs):
                    fraction = stage.data_fraction(epoch)
                    if fraction < 1.0:
                        raise ValueError(
                            f"{stage.name} uses data_fraction={fraction!r} at its "
                            f"epoch {epoch}, which needs a `curriculum`; pass "
                            "`curriculum=` or use data_fraction=1.0."
                        )
        self._base_learning_rate = None
        self.stage = None

    @property
    def total_epochs(self) -> int:
        """The number of epochs of all stages."""
        return sum(stage.epochs for stage in self.stages)

    def stage_index(self, epoch: int) -> int:
        """0-based index of the stage that `epoch` falls in (the last after)."""
        return int(np.searchsorted(self.boundaries, epoch, side="right"))

    def set_model(self, model):
        super().set_model(model)
        for child in self._children:
            child.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for child in self._children:
            child.set_params(params)

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and epochs != self.total_epochs:
            warnings.warn(
                f"`fit(epochs={epochs})` differs from the {self.total_epochs} "
                f"epochs of the stages; "
                + (
                    "the last stage continues."
                    if epochs > self.total_epochs
                    else "the later stages will not run."
                ),
                stacklevel=2,
            )
        for child in self._children:
            child.on_train_begin(logs)
        self._base_learning_rate = None
        optimizer = getattr(self.model, "optimizer", None)
        constant_lr = all(
            float(self.learning_rate_factor_schedule(e)) == 1.0
            for e in range(max(epochs or 0, self.total_epochs))
        )
        if not constant_lr and (
            optimizer is None
            or not isinstance(
                getattr(optimizer, "_learning_rate", None), keras.Variable
            )
        ):
            raise ValueError(
                "`learning_rate_factor` needs an optimizer with a float learning "
                "rate (a variable), not a `LearningRateSchedule`. Received "
                f"optimizer={optimizer!r}."
            )
        self._scale_learning_rate = not constant_lr

    def _learning_rate_at(self, epoch):
        optimizer = self.model.optimizer
        if self._base_learning_rate is None:
            if self.learning_rate is not None:
                base = self.learning_rate
            else:
                current = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                previous = (
                    float(self.learning_rate_factor_schedule(epoch - 1))
                    if epoch > 0
                    else 1.0
                )
                base = current / previous
            self._base_learning_rate = base
        return self._base_learning_rate * float(
            self.learning_rate_factor_schedule(epoch)
        )

    def on_epoch_begin(self, epoch, logs=None):
        index = self.stage_index(epoch)
        if self.verbose and index != self.stage:
            stage = self.stages[index]
            io_utils.print_msg(
                f"epoch {epoch}: {stage.name} (stage {index + 1}/{len(self.stages)})"
            )
        self.stage = index
        for child in self._children:
            child.on_epoch_begin(epoch, logs)
        if self._scale_learning_rate:
            self.model.optimizer.learning_rate = self._learning_rate_at(epoch)

    def on_epoch_end(self, epoch, logs=None):
        for child in self._children:
            child.on_epoch_end(epoch, logs)
        if logs is not None:
            logs["stage"] = self.stage + 1
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None:
                logs["learning_rate"] = float(
                    keras.ops.convert_to_numpy(optimizer.learning_rate)
                )


def fit_progressive(
    distiller,
    x,
    y,
    epochs: int,
    validation_data=None,
    batch_size: int = 64,
    min_fraction: float = 0.8,
    finetune_learning_rate_factor: float = 0.1,
    seed: int = 0,
    callbacks=None,
    verbose=0,
):
    """Trains a compiled `Distiller` with the progressive recipe, in one call.

    Scores `x` with the distiller's teacher (`Curriculum.from_teacher`),
    splits `epochs` into distill (40%), curriculum (40%) and fine-tune (20%)
    stages (`progressive_stages`, each at least one epoch), and runs `fit()`
    with `ProgressiveDistillation`. The distiller's current `alpha` and
    `temperature` are the stage-1 values.

    Args:
        distiller: A compiled `keras_distill.Distiller`.
        x: Training inputs (arrays).
        y: Integer training labels.
        epochs: Total epochs, >= 3.
        validation_data: Passed to `fit()`. Defaults to `None`.
        batch_size: Defaults to `64`.
        min_fraction: Data fraction of the distill stage. Defaults to `0.8`
            (on digits, starting from 50% lowered the validation accuracy of
            a 20-epoch run by about 1 point).
        finetune_learning_rate_factor: Learning-rate factor of the fine-tune
            stage. Defaults to `0.1`.
        seed: Seed of the curriculum's shuffles. Defaults to `0`.
        callbacks: More callbacks for `fit()`. Defaults to `None`.
        verbose: Passed to `fit()` and the scoring pass. Defaults to `0`.

    Returns:
        The `History` of `fit()`.

    Example:

    ```python
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    kd.callbacks.fit_progressive(distiller, x_train, y_train, epochs=30,
                                 validation_data=(x_val, y_val))
    ```
    """
    epochs = schedules._steps(epochs, "epochs")
    if epochs < 3:
        raise ValueError(
            f"The progressive recipe needs `epochs` >= 3 (one per stage). "
            f"Received: epochs={epochs!r}"
        )
    distill_epochs = max(1, round(0.4 * epochs))
    finetune_epochs = max(1, round(0.2 * epochs))
    curriculum_epochs = epochs - distill_epochs - finetune_epochs
    if curriculum_epochs < 1:
        distill_epochs, curriculum_epochs = distill_epochs - 1, 1
    temperature = float(keras.ops.convert_to_numpy(distiller.temperature))
    stages = progressive_stages(
        distill_epochs,
        curriculum_epochs,
        finetune_epochs,
        alpha=float(keras.ops.convert_to_numpy(distiller.alpha)),
        temperature=temperature,
        min_fraction=min_fraction,
        finetune_learning_rate_factor=finetune_learning_rate_factor,
        end_temperature=min(2.0, temperature),
    )
    data = kd_curriculum.Curriculum.from_teacher(
        distiller, x, y, verbose=verbose, seed=seed
    )
    progressive = ProgressiveDistillation(stages, data, verbose=verbose)
    return distiller.fit(
        data.dataset(batch_size),
        epochs=progressive.total_epochs,
        validation_data=validation_data,
        callbacks=[progressive, *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # The curriculum shuffles; Keras would warn otherwise.
    )


__all__ = [
    "CurriculumScheduler",
    "ParameterScheduler",
    "ProgressiveDistillation",
    "Stage",
    "check_parameter_value",
    "fit_progressive",
    "progressive_stages",
    "scalar_variables",
    "total_epochs",
]
