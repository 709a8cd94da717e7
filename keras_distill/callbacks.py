"""Callbacks that schedule distillation during `fit()`.

- `ParameterScheduler` applies a schedule to `alpha`, `temperature` (or any
  scalar, non-trainable `keras.Variable` of the model) per epoch or per step.
- `CurriculumScheduler` sets the data fraction of a `Curriculum` per epoch.
- `AtomicBackupAndRestore` backs up the training state each epoch so that a
  run killed at any point (even while writing) resumes.
- `ProgressiveDistillation` runs declared stages (distill -> curriculum ->
  fine-tune), each with its own epochs, alpha, temperature, data fraction and
  learning-rate factor.

All three compute their values from the epoch (or step) number alone, so a
run interrupted and resumed with `keras.callbacks.BackupAndRestore` gets the
same values as an uninterrupted run.

Example:

```python
distiller.fit(train_ds, epochs=10, callbacks=[
    kd.callbacks.ParameterScheduler("temperature", kd.schedules.linear(8.0, 2.0, 9)),
    kd.callbacks.ParameterScheduler("alpha", kd.schedules.cosine(0.1, 0.9, 10)),
])
```
"""

import os
import warnings
import weakref

import keras
import numpy as np

from keras_distill import _compat, schedules
from keras_distill import curriculum as kd_curriculum
from keras_distill import params as kd_params

UNITS = ("epoch", "step")
# model -> (the fit's `params` dict, {parameter name: its ParameterScheduler}).
_CLAIMS = weakref.WeakKeyDictionary()


def scalar_variables(model) -> dict:
    """The public scalar, non-trainable float variables of `model`, by name.

    Looks at the attributes and properties that `model`'s own classes define
    (not Keras's), e.g. a `Distiller`'s `alpha` and `temperature`, and at a
    `Distiller`'s `parameter_variables()` (its terms' weights, e.g.
    `kd_weight`, and their parameters, e.g. `ctkd_reversal`).
    """
    from keras_distill.distiller import Distiller

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
    if isinstance(model, Distiller):
        found.update(model.parameter_variables())
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


def claim(callback, key):
    """Claims `key` (what `callback` sets) for this `fit()`; returns another owner.

    Keras gives every callback of one `fit()` the same `params` dict, so it
    identifies the fit: a claim left by an earlier (maybe interrupted) fit
    never blocks this one. Returns the callback that claimed `key` first in
    this fit, or `None` (then `callback` holds it).
    """
    claims = _CLAIMS.get(callback.model)
    if claims is None or claims[0] is not callback.params:
        claims = (callback.params, {})
        _CLAIMS[callback.model] = claims
    owner = claims[1].setdefault(key, callback)
    return None if owner is callback else owner


@keras.saving.register_keras_serializable(package="keras_distill")
class ParameterScheduler(keras.callbacks.Callback):
    """Sets a scalar variable of the model from a schedule during `fit()`.

    Like `keras.callbacks.LearningRateScheduler`, for a `Distiller`'s `alpha`
    (weight of the hard-label loss) and `temperature`, or any other scalar,
    non-trainable float `keras.Variable` attribute of the model. The variable
    is assigned, never replaced, so the traced train step sees the new value
    without retracing. The value is written into the logs under `name`, so it
    shows in the progress bar, `History` and TensorBoard.

    Values are checked before training (at the epochs, or steps when their
    number is known, that bound the schedule's values:
    `kd.schedules.check_points`) and again when applied: a NaN, an `alpha`
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
            "temperature", kd.schedules.linear(8.0, 2.0, 9)
        ),
    ])
    distiller.history.history["temperature"]  # [8.0, 7.33, ..., 2.0]
    ```

    Epochs are counted from 0, so over `epochs=10` a schedule reaches its
    end value on the last epoch when its transition is `10 - 1 = 9` steps
    long; a longer transition is cut off (a warning says so).
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
        # A scheduler reused for another fit (or another model) must not
        # trust the value it set last time: the variable may hold another.
        self._variable = variables[self.name]
        self.value = None

    def _claim(self):
        """Refuses a second `ParameterScheduler` on the same parameter in one fit."""
        owner = claim(self, self.name)
        if owner is not None:
            raise ValueError(
                f"Two `ParameterScheduler`s set {self.name!r} in one fit(): "
                f"{owner!r} and {self!r}. Each parameter can have one schedule; "
                "combine them with `kd.schedules.join`."
            )

    def __repr__(self):
        return (
            f"ParameterScheduler({self.name!r}, {self.schedule!r}, unit={self.unit!r})"
        )

    def _check_ahead(self):
        """Checks every value of the run before the first step."""
        params = self.params or {}
        epochs = params.get("epochs")
        if self.unit == "epoch":
            schedules.check_over(
                self.schedule,
                epochs,
                lambda epoch: check_parameter_value(
                    self.name, float(self.schedule(epoch)), self._where(epoch)
                ),
            )
            self._warn_if_cut_off(epochs)
            return
        steps = params.get("steps")
        if not (epochs and steps and isinstance(self.schedule, schedules.Schedule)):
            return
        schedules.check_over(
            self.schedule,
            int(epochs) * int(steps),
            lambda index: check_parameter_value(
                self.name, float(self.schedule(index)), self._where(index)
            ),
        )

    def _warn_if_cut_off(self, epochs):
        """Warns when training ends before the schedule's transition does."""
        steps = getattr(self.schedule, "transition_steps", None)
        begin = getattr(self.schedule, "transition_begin", 0)
        if not epochs or steps is None or begin + steps <= epochs - 1:
            return
        last = float(self.schedule(epochs - 1))
        end = float(self.schedule(begin + steps))
        if last != end:
            warnings.warn(
                f"The schedule of `{self.name}` reaches its end value {end:g} at "
                f"epoch {begin + steps} (0-based), but training ends at epoch "
                f"{epochs - 1}, where it is {last:g}. For {epochs} epochs, use a "
                f"transition of {epochs - 1 - begin} steps.",
                stacklevel=3,
            )

    def _apply(self, index):
        value = check_parameter_value(
            self.name, self.schedule(index), self._where(index)
        )
        # Always assigned: the variable may have been set since (another
        # fit, a new model, `distiller.alpha = ...`), whatever `self.value` says.
        assign_parameter(self.model, self.name, value, self._where(index))
        if value != self.value:
            if self.verbose:
                io_print = _compat.print_msg
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
            # What the variable holds, not what was last scheduled.
            logs[self.name] = self._held(self.value)

    def _held(self, default):
        variable = getattr(self, "_variable", None)
        if variable is None:
            return default
        held = float(keras.ops.convert_to_numpy(variable))
        # The scheduled number when the variable holds it (as float32), so
        # the logs read 0.1 rather than 0.10000000149.
        return default if np.float32(default) == np.float32(held) else held

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

    def __repr__(self):
        return f"CurriculumScheduler({self.curriculum!r}, {self.pacing!r})"

    def on_train_begin(self, logs=None):
        # Claimed by the variable the fraction is set in: a copy of the
        # curriculum (`copy.copy`) shares it, and two schedulers would fight.
        owner = claim(self, ("curriculum", id(self.curriculum.count)))
        if owner is not None:
            same = owner.curriculum is self.curriculum
            raise ValueError(
                "Two `CurriculumScheduler`s set the fraction of one `Curriculum` in "
                f"one fit(): {owner!r} and {self!r}"
                + ("" if same else " (a copy of it, sharing its fraction variable)")
                + "; the later would override the earlier every epoch. Keep one, "
                "with a single pacing schedule (combine pieces with "
                "`kd.schedules.join`)."
            )
        epochs = (self.params or {}).get("epochs")
        schedules.check_over(self.pacing, epochs, self._fraction)
        self._unchecked_key = None

    def on_epoch_begin(self, epoch, logs=None):
        fraction = self._fraction(epoch)
        self.examples = self.curriculum.set_fraction(fraction, shuffle_key=epoch)
        if getattr(self, "_wiring_checked", None) is not self.params:
            self._unchecked_key = epoch  # checked after this epoch's first batch
        if self.verbose and fraction != self.fraction:
            _compat.print_msg(
                f"epoch {epoch}: curriculum uses the easiest {fraction:.1%} "
                f"({self.examples} examples)."
            )
        self.fraction = fraction

    def on_train_batch_end(self, batch, logs=None):
        if getattr(self, "_unchecked_key", None) is None:
            return
        key, self._unchecked_key = self._unchecked_key, None
        self._wiring_checked = self.params  # once per fit()
        # The curriculum's dataset counts its passes in `shuffle_key`, which
        # `on_epoch_begin` set: unchanged after a batch, the batch came from
        # other data, and the fractions logged would describe nothing.
        if int(keras.ops.convert_to_numpy(self.curriculum.shuffle_key)) == key:
            raise ValueError(
                "`CurriculumScheduler` sets the fraction of a `Curriculum` whose "
                "dataset this fit() does not read: the first batch of epoch "
                f"{key} came from other data (e.g. plain arrays), so the "
                f"curriculum fraction {self.fraction:g} would be logged but not "
                "used. Train on `curriculum.dataset(batch_size)` (the curriculum "
                "given to the callback)."
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.fraction is not None:
            logs["curriculum_fraction"] = self.fraction
            logs["curriculum_examples"] = self.examples


def _fsync(path):
    """Flushes a file (or a folder's entries) to disk where the system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a folder on some systems
    finally:
        os.close(fd)


class AtomicBackupAndRestore(keras.callbacks.Callback):
    """`keras.callbacks.BackupAndRestore` whose backup survives a `kill -9`.

    Keras's callback rewrites `latest.weights.h5` in place, so a process
    killed while writing it leaves a broken file that every rerun fails to
    load. This one writes each backup to a temporary file in `backup_dir`,
    flushes it to disk and renames it into place (`os.replace`, atomic) as
    `epoch-<N>.weights.h5` (`N`: the epochs done); the previous backup is
    kept until the next one is in place. The next `fit()` resumes from the
    newest backup that loads (a damaged one is skipped with a warning), at
    epoch `N`. When training ends (with `delete_checkpoint`), it removes its
    own files and nothing else, and the folder if that leaves it empty.

    A backup holds the model's weights and its optimizer's state (as
    `model.save_weights`); the model must be built before `fit()`.

    Args:
        backup_dir: The folder of the backups, used by this run alone.
        delete_checkpoint: Remove the backups when training ends. Defaults
            to `True`.

    Example:

    ```python
    distiller.fit(train_ds, epochs=20, callbacks=[
        kd.callbacks.AtomicBackupAndRestore("runs/a/backup"),
    ])  # killed, then the same call again: resumes at the last epoch done
    ```
    """

    PREFIX = "epoch-"
    SUFFIX = ".weights.h5"
    PARTIAL = "partial.weights.h5"
    # What Keras's own callback writes there (an older run's backup).
    KERAS_FILES = (
        "latest.weights.h5",
        "training_metadata.json",
        "latest.weights.h5.bkp",
        "training_metadata.json.bkp",
    )

    def __init__(self, backup_dir, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("`backup_dir` must be a folder path. Received: ''")
        self.backup_dir = os.fspath(backup_dir)
        self.delete_checkpoint = delete_checkpoint
        self._epochs_done = 0

    @classmethod
    def is_own_file(cls, name: str) -> bool:
        """Whether a file name in the folder is one this callback writes."""
        number = name[len(cls.PREFIX) : -len(cls.SUFFIX)]
        return (
            name == cls.PARTIAL
            or name in cls.KERAS_FILES
            or (
                name.startswith(cls.PREFIX)
                and name.endswith(cls.SUFFIX)
                and number.isdigit()
            )
        )

    def backups(self) -> list:
        """`(epochs done, path)` of the backups in the folder, newest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = []
        for name in os.listdir(self.backup_dir):
            if name.startswith(self.PREFIX) and self.is_own_file(name):
                epoch = int(name[len(self.PREFIX) : -len(self.SUFFIX)])
                found.append((epoch, os.path.join(self.backup_dir, name)))
        return sorted(found, reverse=True)

    def on_train_begin(self, logs=None):
        self._epochs_done = 0
        backups = self.backups()
        if not backups:
            return
        if not self.model.built:
            raise ValueError(
                f"`AtomicBackupAndRestore` found a backup in {self.backup_dir!r} "
                f"but the model {self.model.name!r} is not built, so it cannot be "
                "restored. Build it (call it on a batch) before `fit()`."
            )
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        failed = []
        for epoch, path in backups:
            try:
                self.model.load_weights(path)
            except Exception as error:  # a damaged file: h5py's OSError, ...
                failed.append(f"{os.path.basename(path)} ({error})")
                continue
            if failed:
                warnings.warn(
                    f"Skipped the backups that do not load: {'; '.join(failed)}; "
                    f"resuming from {os.path.basename(path)}.",
                    stacklevel=2,
                )
            self._epochs_done = epoch
            _compat.set_initial_epoch(self.model, epoch)
            return
        raise ValueError(
            f"No backup in {self.backup_dir!r} loads: {'; '.join(failed)}. Remove "
            "the folder to train from the start."
        )

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done = epoch + 1
        self.save()

    def save(self):
        """Writes the backup of the epochs done so far, atomically."""
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self.backups()[:1]
        partial = os.path.join(self.backup_dir, self.PARTIAL)
        self.model.save_weights(partial, overwrite=True)
        _fsync(partial)
        name = f"{self.PREFIX}{self._epochs_done:09d}{self.SUFFIX}"
        final = os.path.join(self.backup_dir, name)
        os.replace(partial, final)
        _fsync(self.backup_dir)
        keep = {final, *(path for _, path in previous)}
        for _, path in self.backups():
            if path not in keep:
                os.remove(path)

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint or not os.path.isdir(self.backup_dir):
            return
        for name in os.listdir(self.backup_dir):
            path = os.path.join(self.backup_dir, name)
            if self.is_own_file(name) and os.path.isfile(path):
                os.remove(path)
        if not os.path.islink(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)


# The progressive recipe moved to `keras_distill.recipes`; these names stay
# reachable from here: `recipes` (one layer's neighbour, importing this
# module) sets them on this module when it is imported, which `import
# keras_distill` does.
_MOVED_TO_RECIPES = (
    "ProgressiveDistillation",
    "Stage",
    "fit_progressive",
    "progressive_stages",
    "total_epochs",
)


__all__ = [
    "AtomicBackupAndRestore",
    "CurriculumScheduler",
    "ParameterScheduler",
    "assign_parameter",
    "check_parameter_value",
    "scalar_variables",
    *_MOVED_TO_RECIPES,
]
