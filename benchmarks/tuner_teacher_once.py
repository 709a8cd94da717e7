"""Cost of a tuner search against the bound: N student fits + 1 teacher pass.

Goal: an N-trial search with the teacher paid once costs at most 1.15x what
training its N students alone costs plus one teacher inference pass over the
training and validation data.

Measured side by side, interleaved (`REPS` rounds, the fastest of each kind
reported, so load on the machine slows both alike):

- **search**: `kd.tuner.tuner_class("random")` (what `kd.tune` runs) over
  `kd.DistillerHyperModel`, N trials x E epochs (the teacher's outputs
  computed once, inside the search; trials whose student has the same
  architecture share one compiled distiller);
- the same search with Keras Tuner's `RandomSearch` as is (a new model and a
  cleared session per trial: the step traced again every trial);
- **bound**: one `teacher.predict` over the training and validation arrays,
  plus N plain students (the widths the search drew), each built, compiled
  and fitted on the labels for E epochs with the same validation data, batch
  size, optimizer and kind of input pipeline (`tf.data` from the arrays,
  shuffled, batched: Keras's NumPy adapter is slower per epoch and would
  flatter the search).

Also reported, from instrumentation of the search run: where its time goes
(building and compiling the trials, the first epoch of each fit, which
includes tracing the step, the later epochs, checkpoint writes, the teacher's
pass, and the tuner's own bookkeeping), against the same parts of the
students' fits. `ONLINE=1` also times the same search distilling online (the
teacher in every step), the comparison this benchmark made before.

`HYPERBAND=1` (the default) then compares Hyperband with random search on
the same hypermodel and budget of epochs per trial: trials per hour and the
best validation accuracy of each.

Run: `.venv/bin/python benchmarks/tuner_teacher_once.py` (about 4 minutes;
`TRIALS=4 EPOCHS=3 REPS=1` for a quicker, noisier run; `DISTINCT=1` draws the
students' widths from 16 values, so that trials rarely share an architecture).
"""

import collections
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's keras_distill, not another installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill import data, models  # noqa: E402

TRIALS = int(os.environ.get("TRIALS", 6))
EPOCHS = int(os.environ.get("EPOCHS", 5))
REPS = int(os.environ.get("REPS", 2))
ONLINE = os.environ.get("ONLINE", "0") == "1"
HYPERBAND = os.environ.get("HYPERBAND", "1") == "1"
BATCH = 32
LEARNING_RATE = 1e-2  # DistillerHyperModel's default
BOUND = 1.15


def teacher_model():
    """A teacher much bigger than the student (about 0.6M parameters)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


# DISTINCT=1: widths drawn from 16 values, so that trials rarely share an
# architecture (nothing to reuse: the worst case for the search).
DISTINCT = os.environ.get("DISTINCT", "0") == "1"


def build_student(hp):
    if DISTINCT:
        return models.student_mlp(hidden=hp.Int("hidden", 4, 64, step=4))
    return models.student_mlp(hidden=hp.Choice("hidden", [8, 16, 32]))


class Clock:
    """Adds up wall time per named part."""

    def __init__(self):
        self.parts = collections.defaultdict(float)

    def wrap(self, owner, name, part):
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.parts[part] += time.perf_counter() - start

        setattr(owner, name, timed)
        return original


class EpochTimes(keras.callbacks.Callback):
    """Splits a fit into its first epoch (with tracing) and the later ones."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        part = "first epoch (traces the step)" if epoch == 0 else "later epochs"
        self.clock.parts[part] += time.perf_counter() - self.start


def instrument_search(tuner, hypermodel, clock):
    """Times the parts of a search (monkeypatched on these instances)."""
    import keras_tuner

    clock.wrap(hypermodel, "build", "build and compile the trial")
    clock.wrap(hypermodel, "teacher_logits", "teacher pass (memoised)")
    original_fit = hypermodel.fit

    def fit(hp, model, *args, callbacks=(), **kwargs):
        start = time.perf_counter()
        try:
            return original_fit(
                hp, model, *args, callbacks=[*callbacks, EpochTimes(clock)], **kwargs
            )
        finally:
            clock.parts["fit, total"] += time.perf_counter() - start

    hypermodel.fit = fit
    clock.wrap(tuner, "_try_build", "Keras Tuner's _try_build (clear_session, gc)")
    save = keras_tuner.src.engine.tuner_utils.SaveBestEpoch._save_model

    def timed_save(self):
        start = time.perf_counter()
        try:
            return save(self)
        finally:
            clock.parts["checkpoint writes"] += time.perf_counter() - start

    keras_tuner.src.engine.tuner_utils.SaveBestEpoch._save_model = timed_save
    return lambda: setattr(
        keras_tuner.src.engine.tuner_utils.SaveBestEpoch, "_save_model", save
    )


def run_search(teacher, train, val, directory, kind="random", clock=None, **extra):
    hypermodel = kd.DistillerHyperModel(teacher, build_student, **extra)
    common = dict(objective="val_accuracy", directory=directory, seed=0, overwrite=True)
    # kd.tune's tuner classes (trials with the same student share one trace),
    # or Keras Tuner's own ("plain": a new model, session cleared, per trial).
    if kind == "plain":
        import keras_tuner as kt

        tuner_class, kind = kt.RandomSearch, "random"
    else:
        tuner_class = kd.tuner.tuner_class(kind)
    if kind == "hyperband":
        tuner = tuner_class(hypermodel, max_epochs=EPOCHS, **common)
    else:
        tuner = tuner_class(hypermodel, max_trials=TRIALS, **common)
    restore = instrument_search(tuner, hypermodel, clock) if clock else None
    start = time.perf_counter()
    try:
        tuner.search(
            *train, validation_data=val, epochs=EPOCHS, batch_size=BATCH, verbose=0
        )
    finally:
        if restore:
            restore()
    seconds = time.perf_counter() - start
    if clock is not None:
        clock.parts["search, total"] = seconds
    return seconds, tuner


def online_search(teacher, train, val, directory):
    import keras_tuner as kt

    base = kd.DistillerHyperModel

    class Online(base):
        def fit(self, hp, model, x, y, validation_data=None, batch_size=32, **kwargs):
            kwargs.pop("shuffle", None)
            return model.fit(
                x, y, validation_data=validation_data, batch_size=batch_size, **kwargs
            )

    tuner = kt.RandomSearch(
        Online(teacher, build_student),
        objective="val_accuracy",
        max_trials=TRIALS,
        directory=directory,
        seed=0,
        overwrite=True,
    )
    start = time.perf_counter()
    tuner.search(
        *train, validation_data=val, epochs=EPOCHS, batch_size=BATCH, verbose=0
    )
    return time.perf_counter() - start


def run_bound(teacher, train, val, widths, clock=None):
    """One teacher pass + one plain student fit per trial (same widths)."""
    import tensorflow as tf

    start = time.perf_counter()
    t0 = time.perf_counter()
    teacher.predict(train[0], batch_size=256, verbose=0)
    teacher.predict(val[0], batch_size=256, verbose=0)
    teacher_seconds = time.perf_counter() - t0
    for hidden in widths:
        t0 = time.perf_counter()
        student = models.compile_classifier(
            models.student_mlp(hidden=hidden), LEARNING_RATE
        )
        if clock is not None:
            clock.parts["build and compile the trial"] += time.perf_counter() - t0
        callbacks = [EpochTimes(clock)] if clock is not None else []
        t0 = time.perf_counter()
        # The same input pipeline as a trial's (Keras's NumPy adapter is
        # slower per epoch), so that the bound is not flattered.
        student.fit(
            tf.data.Dataset.from_tensor_slices(train)
            .shuffle(len(train[0]), seed=0)
            .batch(BATCH)
            .prefetch(tf.data.AUTOTUNE),
            validation_data=tf.data.Dataset.from_tensor_slices(val)
            .batch(256)
            .prefetch(tf.data.AUTOTUNE),
            epochs=EPOCHS,
            verbose=0,
            callbacks=callbacks,
        )
        if clock is not None:
            clock.parts["fit, total"] += time.perf_counter() - t0
    seconds = time.perf_counter() - start
    if clock is not None:
        clock.parts["teacher pass (memoised)"] = teacher_seconds
        clock.parts["search, total"] = seconds
    return seconds


def main():
    print("epochs include their validation pass")
    splits = data.load_digits()
    train, val = splits["train"], splits["val"]
    keras.utils.set_random_seed(0)
    teacher = teacher_model()
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*train, epochs=2, verbose=0)
    times = collections.defaultdict(list)
    clocks = {}
    with tempfile.TemporaryDirectory() as directory:
        # The widths the search draws, so the bound trains the same students.
        _, probe = run_search(teacher, train, val, os.path.join(directory, "probe"))
        widths = [t.hyperparameters.get("hidden") for t in probe.oracle.trials.values()]
        for rep in range(REPS):
            last = rep == REPS - 1
            search_clock, bound_clock = (Clock(), Clock()) if last else (None, None)
            seconds, _ = run_search(
                teacher,
                train,
                val,
                os.path.join(directory, f"s{rep}"),
                clock=search_clock,
            )
            times["search"].append(seconds)
            seconds, _ = run_search(
                teacher, train, val, os.path.join(directory, f"p{rep}"), kind="plain"
            )
            times["plain"].append(seconds)
            times["bound"].append(
                run_bound(teacher, train, val, widths, clock=bound_clock)
            )
            if last:
                clocks = {"search": search_clock, "bound": bound_clock}
        if ONLINE:
            times["online"].append(
                online_search(teacher, train, val, os.path.join(directory, "online"))
            )
        hyperband = None
        if HYPERBAND:
            hyperband = compare_hyperband(teacher, train, val, directory)
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{TRIALS} trials x {EPOCHS} epochs on digits ({len(train[0])} training, "
        f"{len(val[0])} validation examples, batch {BATCH}); teacher "
        f"{teacher.count_params():,} parameters, students of widths {widths}; "
        f"{os.cpu_count()} CPU cores; fastest of {REPS} interleaved runs"
    )
    print("| run | wall time (s) |")
    print("|---|---:|")
    print(f"| search, teacher paid once | {best['search']:.2f} |")
    print(f"| bound: {TRIALS} student fits + 1 teacher pass | {best['bound']:.2f} |")
    ratio = best["search"] / best["bound"]
    verdict = "met" if ratio <= BOUND else "NOT met"
    print(f"| search / bound | {ratio:.3f} (goal <= {BOUND}: {verdict}) |")
    print(
        "| search with Keras Tuner's RandomSearch as is (a new model and a "
        f"cleared session per trial) | {best['plain']:.2f} |"
    )
    print(f"| that search / bound | {best['plain'] / best['bound']:.3f} |")
    if ONLINE:
        print(
            f"| search distilling online (teacher in every step) | "
            f"{best['online']:.2f} |"
        )
        print(
            f"| online / teacher paid once | {best['online'] / best['search']:.2f}x |"
        )
    if clocks:
        print("\nWhere the time goes (the last interleaved run of each):")
        print("| part | search (s) | bound (s) | difference (s) |")
        print("|---|---:|---:|---:|")
        search, bound = clocks["search"].parts, clocks["bound"].parts
        # _try_build includes the hypermodel's build; the fits include their
        # epochs (and the search's fit the memoised teacher pass).
        search["Keras Tuner's _try_build (clear_session, gc)"] -= search[
            "build and compile the trial"
        ]
        for parts in (search, bound):
            parts["fit set-up (data pipelines, iterators, callbacks)"] = (
                parts["fit, total"]
                - parts["first epoch (traces the step)"]
                - parts["later epochs"]
                - (parts["teacher pass (memoised)"] if parts is search else 0.0)
            )
        names = [
            "build and compile the trial",
            "Keras Tuner's _try_build (clear_session, gc)",
            "fit set-up (data pipelines, iterators, callbacks)",
            "first epoch (traces the step)",
            "later epochs",
            "teacher pass (memoised)",
        ]
        for name in names + ["checkpoint writes"]:
            label = (
                "of which checkpoint writes (in the epochs' ends)"
                if name == "checkpoint writes"
                else name
            )
            print(
                f"| {label} | {search[name]:.2f} | {bound[name]:.2f} | "
                f"{search[name] - bound[name]:+.2f} |"
            )
        rest = {
            side: parts["search, total"] - sum(parts[n] for n in names)
            for side, parts in (("search", search), ("bound", bound))
        }
        print(
            f"| the rest (the tuner's bookkeeping) | {rest['search']:.2f} | "
            f"{rest['bound']:.2f} | {rest['search'] - rest['bound']:+.2f} |"
        )
        print(
            f"| total | {search['search, total']:.2f} | {bound['search, total']:.2f} "
            f"| {search['search, total'] - bound['search, total']:+.2f} |"
        )
    if hyperband:
        print(
            f"\nHyperband (max_epochs={EPOCHS}, factor 3) vs random search "
            f"({TRIALS} trials x {EPOCHS} epochs), same hypermodel and teacher outputs:"
        )
        print(
            "| tuner | trials | epochs trained | wall time (s) | trials per hour "
            "| best val_accuracy |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in hyperband.items():
            print(
                f"| {name} | {r['trials']} | {r['epochs']} | {r['seconds']:.1f} | "
                f"{3600 * r['trials'] / r['seconds']:,.0f} | {r['best']:.4f} |"
            )


def compare_hyperband(teacher, train, val, directory):
    results = {}
    for kind in ("random", "hyperband"):
        seconds, tuner = run_search(
            teacher, train, val, os.path.join(directory, f"cmp-{kind}"), kind=kind
        )
        trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
        epochs = sum(
            t.hyperparameters.values.get("tuner/epochs", EPOCHS)
            - t.hyperparameters.values.get("tuner/initial_epoch", 0)
            for t in trials
        )
        results[kind] = {
            "trials": len(trials),
            "epochs": int(epochs),
            "seconds": seconds,
            "best": float(np.max([t.score for t in trials])),
        }
    return results


# The blocks of docs/performance.md that `--docs` writes the report into.
DOC_BLOCKS = {"default": "tuner", "distinct": "tuner-distinct"}

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import docblocks

    block = DOC_BLOCKS["distinct" if os.environ.get("DISTINCT") == "1" else "default"]
    with docblocks.report("docs/performance.md", block):
        main()
