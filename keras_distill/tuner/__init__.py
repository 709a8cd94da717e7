"""Keras Tuner search over temperature and alpha, paying for the teacher once.

keras-tuner is an optional extra: `pip install keras-distill[tuner]`.

The teacher's outputs on the training and validation data are computed once
per search (per data array) and every trial trains from them, so a trial
costs what training the student alone costs. Trial checkpoints hold the
student's weights only.

During a search run by `kd.tune` (or inside `hypermodel.reusing_models()`),
a trial whose student has the same architecture as an earlier trial's reuses
that trial's compiled distiller, with freshly initialised weights, a reset
optimizer and the new hyperparameters assigned to its variables: its
training step is not traced again (tracing the distiller's step costs more
than a few epochs of a small student).
"""

import contextlib
import json
import os
import warnings

import keras
import numpy as np

from keras_distill import _compat
from keras_distill import losses as kd_losses
from keras_distill import models as kd_models
from keras_distill import params as kd_params
from keras_distill.distiller import Distiller
from keras_distill.targets import TEACHER_LOGITS_KEY
from keras_distill.tuner import checks, search_folder
from keras_distill.version import require


def _keras_tuner():
    return require("keras_tuner", "The tuner")


@keras.saving.register_keras_serializable(package="keras_distill")
class TrialDistiller(Distiller):
    """A Distiller whose weight files hold the student only (tuner trials)."""

    def save_weights(self, filepath, overwrite=True, **kwargs):
        self.student.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        self.student.load_weights(filepath, **kwargs)


def _hypermodel_class():
    kt = _keras_tuner()

    class DistillerHyperModel(kt.HyperModel):
        """Builds a `Distiller` per trial; searches temperature and alpha.

        Fixed things (teacher, student builder, ranges) are given here and
        checked here; the search space is declared in `build(hp)`:
        `temperature` (log sampling over `temperature_range`), `alpha`
        (over `alpha_range`) and, when `learning_rate_range` is given, the
        learning rate (log sampling). A user's own `HyperParameters` passed to
        the tuner override any of them (e.g. fix `alpha`). The teacher's
        outputs are computed once per data array and reused by every trial.

        Reference: Hinton et al. 2015 for the loss; Keras Tuner (O'Malley et
        al. 2019) for the search.

        Args:
            teacher: The trained teacher (never modified).
            build_student: A callable `build_student(hp) -> keras.Model`, or a
                `keras.Model` whose architecture is reused (cloned) per trial.
            temperature_range: `(min, max)`, both > 0. Defaults to `(1, 20)`.
            alpha_range: `(min, max)` within [0, 1]. Defaults to `(0, 1)`.
            learning_rate_range: `(min, max)` or `None` for a fixed
                `learning_rate`. Defaults to `None`.
            learning_rate: Learning rate when not searched. Defaults to `1e-2`.
            metrics: Compiled metrics. Defaults to `["accuracy"]`.
            teacher_outputs: `"logits"` or `"probabilities"`: what the
                teacher's last layer returns. Defaults to `"logits"`.
            terms: `None` (every trial uses `"kd"`) or a list of
                distillation terms to choose from, the hyperparameter
                `"distillation_loss"` (a `Choice` of their names): names in
                `kd.terms.names()` (e.g. `["kd", "dkd"]`) or
                `DistillationTerm`s (e.g. `kd.terms.make("kd",
                standardize=True, name="ls_kd")`), each trial getting a
                fresh copy (from its config). Defaults to `None`.

        Example:

        ```python
        hypermodel = kd.DistillerHyperModel(teacher, build_student)
        tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy",
                                         max_trials=10, directory="tuning")
        tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
        ```
        """

        def __init__(
            self,
            teacher,
            build_student,
            temperature_range=(1.0, 20.0),
            alpha_range=(0.0, 1.0),
            learning_rate_range=None,
            learning_rate=1e-2,
            metrics=("accuracy",),
            teacher_outputs="logits",
            name="distiller",
            terms=None,
        ):
            super().__init__(name=name)
            self.terms = _term_choices(terms)
            self.teacher_outputs = kd_losses.check_output_kind(
                teacher_outputs, "teacher_outputs"
            )
            if not isinstance(teacher, keras.Model):
                raise TypeError(
                    f"`teacher` must be a keras.Model. Received: {teacher!r}"
                )
            if not callable(build_student):  # A keras.Model is callable too.
                raise TypeError(
                    "`build_student` must be a callable `build_student(hp)` or a "
                    f"keras.Model. Received: {build_student!r}"
                )
            if not isinstance(build_student, keras.Model):
                checks.check_builder(build_student)
            self.temperature_range = (
                None
                if temperature_range is None
                else checks.param_range(
                    temperature_range, "temperature_range", "temperature"
                )
            )
            self.alpha_range = (
                None
                if alpha_range is None
                else checks.param_range(alpha_range, "alpha_range", "alpha")
            )
            self.learning_rate_range = (
                None
                if learning_rate_range is None
                else checks.check_range(
                    learning_rate_range, "learning_rate_range", 0.0, low_inclusive=False
                )
            )
            searched = [
                r
                for r in (
                    self.temperature_range,
                    self.alpha_range,
                    self.learning_rate_range,
                )
                if r is not None and r[0] != r[1]
            ]
            if len(self.terms or ()) > 1:
                searched.append(self.terms)
            if not searched and isinstance(build_student, keras.Model):
                raise ValueError(
                    "The search space is empty: every range is None or a single "
                    "value and the student is fixed. Give `temperature_range`, "
                    "`alpha_range` or `learning_rate_range` a (min, max) with "
                    "min < max, or `terms` several terms."
                )
            self.teacher = teacher
            self.build_student = build_student
            self.learning_rate = kd_params.check_positive(
                learning_rate, "learning_rate"
            )
            self.metrics = list(metrics)
            self.teacher_calls = 0
            self._targets = {}
            self._datasets = {}
            self._compiled = {}
            self._reuse_depth = 0

        # -- The search space -------------------------------------------------

        def build(self, hp):
            def value(name, bounds, default, **kwargs):
                if bounds is None:
                    return default
                lo, hi = bounds
                if lo == hi:
                    return hp.Fixed(name, lo)
                return hp.Float(
                    name, lo, hi, default=min(max(default, lo), hi), **kwargs
                )

            temperature = value(
                "temperature", self.temperature_range, 4.0, sampling="log"
            )
            alpha = value("alpha", self.alpha_range, 0.1)
            learning_rate = value(
                "learning_rate",
                self.learning_rate_range,
                self.learning_rate,
                sampling="log",
            )
            term = "kd"
            if self.terms is not None:
                names = list(self.terms)
                name = (
                    hp.Choice("distillation_loss", names)
                    if len(names) > 1
                    else hp.Fixed("distillation_loss", names[0])
                )
                term = kd_losses.get_term(self.terms[name])  # a fresh copy
            if isinstance(self.build_student, keras.Model):
                student = keras.models.clone_model(self.build_student)
            else:
                student = self.build_student(hp)
                checks.check_student(student, self.build_student)
            key = _architecture_key(student) if self._reuse_depth else None
            if key is not None:
                # A reused distiller keeps its traced step, so the term is part
                # of the key; a term with state of its own (CTKD's learned
                # temperature) is never reused, since the reset does not know it.
                spec = self.terms[name] if self.terms is not None else "kd"
                stateful = isinstance(term, keras.layers.Layer) and term.weights
                key = None if stateful else key + json.dumps(spec, default=str)
            reused = self._compiled.get(key) if key is not None else None
            if reused is not None:
                return _reset_trial(reused, student, alpha, temperature, learning_rate)
            distiller = TrialDistiller(
                student,
                self.teacher,
                alpha=alpha,
                temperature=temperature,
                teacher_outputs=self.teacher_outputs,
                distillation_loss=term,
            )
            distiller = kd_models.compile_classifier(
                distiller, learning_rate, self.metrics
            )
            if key is not None:
                self._compiled[key] = distiller
            return distiller

        @contextlib.contextmanager
        def reusing_models(self):
            """Within it, trials with the same student architecture share one
            compiled distiller (re-initialised per trial), so its step is
            traced once.

            `kd.tune` searches within it. Do not keep a model that `build`
            returned inside it beyond its trial: a later trial resets it.

            Example:

            ```python
            with hypermodel.reusing_models():
                tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
            ```
            """
            self._reuse_depth += 1
            try:
                yield self
            finally:
                self._reuse_depth -= 1
                if not self._reuse_depth:
                    self._compiled.clear()

        # -- Training from the teacher's outputs, computed once ---------------

        def teacher_logits(self, x):
            """The teacher's logits for array `x`, computed once and memoised.

            Keyed on the array's contents (`_content_key`), so an array
            changed in place gets its own outputs, never stale ones.
            """
            key = checks.content_key(x)
            if key not in self._targets:
                self.teacher_calls += 1
                outputs = self.teacher.predict(x, batch_size=256, verbose=0)
                logits = kd_losses.to_logits(outputs, self.teacher_outputs)
                logits = np.asarray(keras.ops.convert_to_numpy(logits), "float32")
                self._targets[key] = (x, logits)
            return self._targets[key][1]

        def dataset(self, x, y, batch_size=32, shuffle=True, seed=0):
            """`(x, y, {"teacher_logits": ...})` batches for arrays `x`, `y`."""
            import tensorflow as tf

            # The arrays are copied into the pipeline once per search, not
            # once per trial; each trial gets its own shuffle (the same
            # order in every trial, as with a new pipeline).
            key = (checks.content_key(x), checks.content_key(y))
            if key not in self._datasets:
                logits = self.teacher_logits(x)
                slices = tf.data.Dataset.from_tensor_slices(
                    (x, y, {TEACHER_LOGITS_KEY: logits})
                )
                self._datasets[key] = (x, y, slices)  # holds the ids' arrays
            ds = self._datasets[key][2]
            if shuffle:
                ds = ds.shuffle(len(x), seed=seed)
            return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

        def fit(self, hp, model, x, y, validation_data=None, batch_size=32, **kwargs):
            x, y = np.asarray(x), np.asarray(y)
            train = self.dataset(x, y, batch_size=batch_size)
            val = None
            if validation_data is not None:
                x_val, y_val = (np.asarray(a) for a in validation_data[:2])
                val = self.dataset(x_val, y_val, batch_size=256, shuffle=False)
                self._warn_if_untrained(x_val, y_val)
            kwargs.pop("shuffle", None)  # `train` is shuffled already
            return model.fit(train, validation_data=val, shuffle=False, **kwargs)

        def _warn_if_untrained(self, x_val, y_val):
            logits = self.teacher_logits(x_val)
            accuracy = float(np.mean(np.argmax(logits, -1) == y_val.reshape(-1)))
            chance = 1.0 / logits.shape[-1]
            if accuracy <= 1.5 * chance:
                warnings.warn(
                    f"The teacher's validation accuracy is {accuracy:.3f}, about "
                    f"chance ({chance:.3f}) for {logits.shape[-1]} classes: is it "
                    "trained?",
                    stacklevel=3,
                )

    return DistillerHyperModel


def _class_count(hypermodel, x) -> int:
    """The number of classes the search distils: the teacher's outputs on
    one example (the Distiller refuses a student of another count). The
    teacher, not a student: building one would call the user's builder an
    extra time.
    """
    outputs = hypermodel.teacher(np.asarray(x[:1]), training=False)
    return int(keras.ops.shape(keras.tree.flatten(outputs)[0])[-1])


def _term_choices(terms):
    """`{name: spec}` of the terms to search (a name or a term's saved config)."""
    if terms is None:
        return None
    if not isinstance(terms, list | tuple) or not terms:
        raise ValueError(
            "`terms` must be a non-empty list of distillation terms (names such "
            f"as 'kd' and 'dkd', or `DistillationTerm`s). Received: terms={terms!r}"
        )
    choices = {}
    for i, spec in enumerate(terms):
        term = kd_losses.get_term(spec, f"terms[{i}]")
        if term.name in choices:
            raise ValueError(
                f"`terms` holds two terms named {term.name!r} (the choice is made "
                "by name); pass `name=` to one of them. Received: terms="
                f"{terms!r}"
            )
        choices[term.name] = (
            spec if isinstance(spec, str) else keras.saving.serialize_keras_object(term)
        )
    return choices


def _architecture_key(student):
    """The student's architecture as text (layer names left out), or None.

    `None` (never reused) for a student that is not built yet (its weights
    are unknown) or that has no config: its config and the shapes and dtypes
    of its weights make the key.
    """

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "name"}
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        return value

    if not student.weights:
        return None
    try:
        config = student.get_config()
    except NotImplementedError:  # a subclassed model without get_config
        return None
    weights = [(tuple(w.shape), str(w.dtype)) for w in student.weights]
    return json.dumps(
        [type(student).__module__, type(student).__qualname__, strip(config), weights],
        sort_keys=True,
        default=str,
    )


def _reset_trial(distiller, student, alpha, temperature, learning_rate):
    """`distiller` as a fresh trial: `student`'s initial weights, a reset
    optimizer, the trial's hyperparameters (all assigned, so the traced
    step stays valid)."""
    distiller.student.set_weights(student.get_weights())
    optimizer = distiller.optimizer
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    optimizer.learning_rate.assign(learning_rate)
    distiller.alpha = alpha
    distiller.temperature = temperature
    distiller.reset_metrics()
    distiller.stop_training = False
    return distiller


def __getattr__(name):
    if name == "DistillerHyperModel":
        cls = _hypermodel_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'keras_distill.tuner' has no attribute {name!r}")


def distributed_role():
    """This process's part in a distributed search: `"chief"`, `"worker"` or `None`.

    Read from Keras Tuner's environment, as Keras Tuner reads it: the search is
    distributed when `KERASTUNER_ORACLE_IP` is set, and this process is the
    chief (the oracle's server) when `KERASTUNER_TUNER_ID` contains `"chief"`.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def tuner_class(kind):
    """The Keras Tuner class `kd.tune` uses for `kind`.

    A subclass of `keras_tuner.RandomSearch`, `BayesianOptimization` or
    `Hyperband` that searches within `DistillerHyperModel.reusing_models()`
    (trials with the same student architecture are traced once) and records
    the trials this process ran.

    Args:
        kind: `"random"`, `"bayesian"` or `"hyperband"`.

    Example:

    ```python
    tuner = kd.tuner.tuner_class("hyperband")(
        hypermodel, objective="val_accuracy", max_epochs=9, directory="tuning"
    )
    ```
    """
    return _tuner_class(_keras_tuner(), kind)


def _tuner_class(kt, kind):
    bases = {
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }
    if kind not in bases:
        raise ValueError(
            f"`tuner` must be 'random', 'bayesian' or 'hyperband'. Received: {kind!r}"
        )

    class DistillTuner(bases[kind]):
        """Records the ids of the trials this process ran (`trials_run`),
        searches within `DistillerHyperModel.reusing_models()` and keeps
        the session (and the reused models' instantiated steps) between
        trials: Keras Tuner's per-trial `clear_session()` and two full garbage
        collections cost more than a small student's epochs."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.trials_run = []

        def on_trial_begin(self, trial):
            self.trials_run.append(trial.trial_id)
            super().on_trial_begin(trial)

        def _try_build(self, hp):
            return _compat.tuner_try_build(self, hp)

        def search(self, *args, **kwargs):
            # Trials with the same student architecture share one traced step.
            reusing = getattr(self.hypermodel, "reusing_models", None)
            with reusing() if reusing else contextlib.nullcontext():
                return super().search(*args, **kwargs)

    return DistillTuner


def trial_table(tuner, num_trials=None):
    """The finished trials as a Markdown table, best first.

    In a distributed search only the chief has the trials.
    """
    if not hasattr(tuner.oracle, "trials"):
        raise ValueError(
            "This tuner is a worker of a distributed search: the trials are on "
            "the chief (KERASTUNER_TUNER_ID=chief). Make the table there."
        )
    trials = tuner.oracle.get_best_trials(num_trials or len(tuner.oracle.trials))
    names = sorted({n for t in trials for n in t.hyperparameters.values})
    lines = [
        "| trial | " + " | ".join(names) + " | score |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for t in trials:
        values = [t.hyperparameters.values.get(n) for n in names]
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in values]
        score = "-" if t.score is None else f"{t.score:.4f}"
        lines.append(f"| {t.trial_id} | " + " | ".join(cells) + f" | {score} |")
    return "\n".join(lines)


def tune(
    teacher,
    build_student,
    train,
    val,
    max_trials=10,
    epochs=5,
    tuner="random",
    directory="distill_runs/tuning",
    project_name="distiller",
    overwrite=False,
    batch_size=32,
    seed=0,
    verbose=1,
    hyperband_factor=3,
    **hypermodel_kwargs,
):
    """Searches temperature and alpha (and more), then rebuilds the best distiller.

    `terms=["kd", "dkd"]` (passed to `DistillerHyperModel`) also searches
    the distillation term.

    Runs in Keras Tuner's distributed mode too (the `KERASTUNER_*` environment
    variables, see `docs/tuning.md`), with the same script in every process:
    the chief serves the oracle and, once every trial is done, prints the
    table and rebuilds the best distiller; a worker runs the trials it is
    handed, computing the teacher's outputs once for itself, and returns
    `(None, None, tuner)`.

    Args:
        teacher: The trained teacher.
        build_student: `build_student(hp) -> keras.Model`, or a model to clone.
        train: `(x, y)` training arrays.
        val: `(x, y)` validation arrays.
        max_trials: Trials to run. Defaults to `10`.
        epochs: Epochs per trial. Defaults to `5`.
        tuner: `"random"`, `"bayesian"` or `"hyperband"`. Hyperband
            (Li et al. 2018) trains many trials for a few epochs and
            continues only the best (from their checkpoints) up to `epochs`;
            its brackets, not `max_trials`, set how many trials run.
            Defaults to `"random"`.
        directory: Tuner folder; in a distributed search, a folder every
            process sees (the chief loads the best trial's student weights
            from it). Defaults to `"distill_runs/tuning"`.
        project_name: Tuner project name. Defaults to `"distiller"`.
        overwrite: Start afresh; when `False` a rerun resumes and skips
            finished trials. In a distributed search only the chief deletes
            the folder: workers never do, as they start while others run
            trials. Defaults to `False`.
        batch_size: Defaults to `32`.
        seed: Tuner seed. Defaults to `0`.
        verbose: `0` prints nothing; `1` prints the trial table (the chief)
            or the trials run (a worker), with quiet trials; `2` also shows
            each trial's epochs (Keras `verbose=2`). Defaults to `1`.
        hyperband_factor: Hyperband's reduction factor (a whole number >= 2:
            each round keeps 1 in `factor` trials). Used with
            `tuner="hyperband"` only. Defaults to `3`.
        **hypermodel_kwargs: Passed to `DistillerHyperModel` (ranges, ...).

    Returns:
        `(best_hyperparameters, distiller, tuner)`: the distiller is rebuilt
        from the best hyperparameters with the best trial's student weights.
        On a worker of a distributed search, `(None, None, tuner)`;
        `tuner.trials_run` lists the ids of the trials this process ran.

    Example:

    ```python
    best_hp, distiller, _ = kd.tune(teacher, build_student, (x, y), (x_val, y_val),
                                    max_trials=8)
    print(best_hp.values)
    ```
    """
    for name, value in (("max_trials", max_trials), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(
                f"`{name}` must be a whole number >= 1. Received: {name}={value!r}"
            )
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={value!r}")
    kt = _keras_tuner()
    tuner_class = _tuner_class(kt, tuner)
    role = distributed_role()
    hypermodel = _hypermodel_class()(teacher, build_student, **hypermodel_kwargs)
    # Before the search: a bad label otherwise fails every trial, and the
    # search ends in a missing trial checkpoint.
    checks.check_split(train, "train")
    if val is not None:
        checks.check_split(val, "val")
    classes = _class_count(hypermodel, train[0])
    checks.check_labels(train[1], classes, "A training")
    if val is not None:
        checks.check_labels(val[1], classes, "A validation")
    if role != "worker":
        search_folder.check_same_search(
            os.path.join(directory, project_name),
            search_folder.search_settings(
                tuner,
                epochs,
                batch_size,
                seed,
                hyperband_factor,
                hypermodel,
                train,
                val,
            ),
            overwrite,
        )
    common = dict(
        objective="val_accuracy",
        directory=directory,
        project_name=project_name,
        overwrite=overwrite and role != "worker",
        seed=seed,
    )
    if tuner == "hyperband":
        if (
            isinstance(hyperband_factor, bool)
            or not isinstance(hyperband_factor, int | np.integer)
            or hyperband_factor < 2
        ):
            raise ValueError(
                "`hyperband_factor` must be a whole number >= 2. Received: "
                f"hyperband_factor={hyperband_factor!r}"
            )
        search = tuner_class(
            hypermodel, max_epochs=epochs, factor=int(hyperband_factor), **common
        )
    else:
        search = tuner_class(hypermodel, max_trials=max_trials, **common)
    # On the chief this serves the oracle until every trial is done; the
    # trials (and the teacher's outputs) are computed on the workers only.
    search.search(
        train[0],
        train[1],
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size,
        verbose=2 if verbose and verbose >= 2 else 0,
    )
    if role == "worker":
        # The chief stops serving once the last worker is done: ask it nothing.
        ran = ", ".join(search.trials_run) or "none"
        if verbose:
            print(f"{search.tuner_id} ran trials: {ran}; the results are on the chief.")
        return None, None, search
    if verbose:
        print(trial_table(search))
    search_folder.check_some_trial_completed(search)
    best_hp = search.get_best_hyperparameters(1)[0]
    best = search.oracle.get_best_trials(1)[0]
    checkpoint = _compat.tuner_checkpoint_path(search, best.trial_id)
    import tensorflow as tf

    if role == "chief" and not tf.io.gfile.exists(checkpoint):
        warnings.warn(
            f"The best trial's checkpoint {checkpoint} is not there: the workers "
            "do not share `directory` with the chief, so the best distiller is "
            "not rebuilt (None). Use a folder every process sees.",
            stacklevel=2,
        )
        return best_hp, None, search
    return best_hp, _plain_distiller(search.load_model(best), teacher), search


def _plain_distiller(trial, teacher):
    """The best trial as a plain, compiled `Distiller`.

    Trials are `TrialDistiller`s (their weight files hold the student only),
    a class that exists only inside a search; the returned distiller saves
    and loads after `import keras_distill` alone.
    """
    distiller = Distiller(
        trial.student,
        teacher,
        alpha=float(keras.ops.convert_to_numpy(trial.alpha)),
        temperature=float(keras.ops.convert_to_numpy(trial.temperature)),
        teacher_outputs=trial.teacher_outputs,
        distillation_loss=trial.distillation_loss,  # the best trial's term
    )
    learning_rate = float(keras.ops.convert_to_numpy(trial.optimizer.learning_rate))
    distiller = kd_models.compile_classifier(distiller, learning_rate)
    # Built now, so a saved best distiller holds the optimizer's variables it
    # will have when trained: loading it warns of no mismatch ("Skipping
    # variable loading for optimizer").
    distiller.optimizer.build(distiller.trainable_variables)
    return distiller
