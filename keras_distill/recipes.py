"""The progressive recipe: distill -> curriculum -> fine-tune, as stages.

A `Stage` declares its epochs, `alpha`, `temperature`, data fraction and
learning-rate factor; `ProgressiveDistillation` runs a list of stages in one
`fit()` (through `ParameterScheduler`s and a `Curriculum`), and
`fit_progressive` is the one-call driver. `progressive_stages` builds the
default three-stage recipe.

Example:

```python
stages = kd.recipes.progressive_stages(distill_epochs=4, curriculum_epochs=6,
                                       finetune_epochs=2)
kd.recipes.fit_progressive(distiller, x, y, stages=stages)
```
"""

import warnings

import keras
import numpy as np

from keras_distill import _compat, schedules
from keras_distill import callbacks as kd_callbacks
from keras_distill import curriculum as kd_curriculum
from keras_distill import params as kd_params
from keras_distill.callbacks import (
    CurriculumScheduler,
    ParameterScheduler,
    check_parameter_value,
)


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
            or not float(schedules.number(epochs, "epochs")).is_integer()
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
            None if learning_rate is None else _positive(learning_rate, "learning_rate")
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
        # At the points that bound the schedule's values (not every epoch:
        # `fit(epochs=10**12)` with EarlyStopping must start at once).
        factor = self.learning_rate_factor_schedule
        constant_lr = all(
            float(factor(e)) == 1.0
            for e in schedules.check_points(factor, max(epochs or 0, self.total_epochs))
        )
        if not constant_lr and (
            optimizer is None or not _compat.has_variable_learning_rate(optimizer)
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
            _compat.print_msg(
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

    Measured by `benchmarks/quality.py --experiment progressive` (5 seeds,
    equal epochs): these stages beat plain KD on the digits but not on
    MNIST-1D, and no variant tried beat it on both; treat the recipe as an
    option to measure on your data, not as a sure gain.

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
    epochs = schedules.whole_number(epochs, "epochs")
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


# The names this module took over from `callbacks` stay reachable there
# (`kd.callbacks.Stage`), without `callbacks` importing this module.
for _name in kd_callbacks._MOVED_TO_RECIPES:
    setattr(kd_callbacks, _name, globals()[_name])
