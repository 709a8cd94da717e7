"""Training runs behind `benchmarks/quality.py` (and the demo's MNIST-1D row).

Each method trains the same student, from the same seed, for the same number
of epochs, with the same batch size and the same optimizer: Adam with a
cosine-decayed learning rate (`keras.optimizers.schedules.CosineDecay` over
all the run's steps). Only the training signal differs. `train(method, ...)`
returns the test accuracy and the wall time of one run; `summarise` turns
several seeds into mean, standard deviation and a 95% interval.

The teachers are trained once per data set and seed and cached as `.keras`
files (`teacher(...)`), so a rerun or another process reuses them.

`mnist1d_demo_rows(seeds)` is the small MNIST-1D comparison that the demo
can show: a student from scratch and distilled, with 10% of the labels and
the rest of the training signals as an unlabeled transfer set.
"""

import dataclasses
import math
import os
import time

import numpy as np

DATA_SETS = ("digits", "mnist1d")
# The 28x28 image sets (`kd.data.idx`); "NAME/cnn" is the same data with the
# small CNN student instead of the MLP.
IMAGE_SETS = ("fashion_mnist", "mnist")
# The rows of an image set's table when `--methods` is not given.
IMAGE_METHODS = (
    "scratch",
    "scratch_aug",
    "kd",
    "kd_aug",
    "dkd",
    "kd_std",
    "function_matching",
)

# name -> (title, what it is); the benchmark's rows, in order.
METHODS = {
    "scratch": "student on the labels alone",
    "scratch_aug": (
        "student on the labels, with the function-matching row's "
        "label-preserving augmentations (a control)"
    ),
    "kd": "KD, alpha 0.1, T 4",
    "kd_schedules": "KD, T 8->2 (linear), alpha 0.1->0.5 (cosine)",
    "curriculum": (
        "KD on a teacher-scored curriculum (linear pacing from 25% over half "
        "the epochs)"
    ),
    "progressive": (
        "progressive recipe: distill -> curriculum -> fine-tune (`fit_progressive`)"
    ),
    "dkd": "Decoupled KD (`distillation_loss='dkd'`), T 4",
    "kd_std": (
        "KD with logit standardization (Sun et al. 2024: the `kd` term with "
        "`standardize=True`), alpha 0.1, T 4"
    ),
    "multi_teacher": "KD from two teachers (seeds 0 and 1), averaged",
    "hints": "KD + a FitNets hint (teacher `dense` -> student hidden layer)",
    "function_matching": (
        "function matching: x-only batches, augmentation + mixup seen by "
        "teacher and student, T 1"
    ),
    "kd_aug": (
        "KD (alpha 0.1, T 4) on the label-preserving augmentations, teacher "
        "online on the same batch"
    ),
    "keras_default": (
        "`keras.distillation.Distiller`, `LogitsDistillation(temperature=4)` "
        "with its default loss"
    ),
    "keras_kl": (
        "`keras.distillation.Distiller`, `LogitsDistillation(temperature=4, "
        "loss=keras.losses.KLDivergence())`"
    ),
    "scratch_few": "student on 10% of the labels",
    "kd_few": (
        "KD on 10% of the labels + the other 90% as x-only batches (transfer set)"
    ),
}


# `term:<name>` is a row for any registered logit term (`terms.registry`),
# KD's alpha 0.1 and T 4 with that term as the soft loss: a new method's
# module gets its benchmark row without an edit here.
TERM_PREFIX = "term:"


def term_methods():
    """`term:<name>` for every registered term that reads logits."""
    from keras_distill.terms import registry

    return [TERM_PREFIX + name for name in registry.names("logits")]


def check_method(method):
    """Raises a `ValueError` naming `method` unless the benchmark can run it."""
    if method in METHODS or method in term_methods():
        return
    if method.startswith("progressive:"):
        variant = method.split(":", 1)[1]
        if variant in PROGRESSIVE_VARIANTS:
            return
        raise ValueError(
            f"Unknown progressive variant {variant!r}; one of "
            f"{list(PROGRESSIVE_VARIANTS)}."
        )
    raise ValueError(
        f"Unknown method {method!r}; one of {list(METHODS)}, or a logit term "
        f"as {term_methods()}."
    )


def describe(method):
    """The row's one-line description."""
    if method.startswith("progressive:"):
        return PROGRESSIVE_VARIANTS[method.split(":", 1)[1]]
    if method.startswith(TERM_PREFIX):
        from keras_distill.terms import registry

        name = method[len(TERM_PREFIX) :]
        cls, _ = registry.entry(name)
        return f"`distillation_loss={name!r}` ({cls.__name__}), alpha 0.1, T 4"
    return METHODS[method]


@dataclasses.dataclass
class Setup:
    """What every row of one data set shares."""

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    teacher_epochs: int
    hidden: int
    train_examples: int | None = None  # a subset, for quick runs
    label_fraction: float = 0.1
    teacher_dir: str = os.path.join("distill_runs", "quality", "teachers")
    student: str = "mlp"  # or "cnn" (image sets)
    filters: int = 16  # the CNN student's

    def shape(self):
        from keras_distill import data

        if self.name in IMAGE_SETS:
            return data.idx.IMAGE_SHAPE
        return data.DIGITS_SHAPE if self.name == "digits" else data.MNIST1D_SHAPE

    def images(self):
        """Whether this is a 28x28 image set (its own teacher and rows)."""
        return self.name in IMAGE_SETS


def default_setup(name, epochs=None, quick=False):
    """The benchmark's settings for `name`.

    `"digits"`, `"mnist1d"`, or an image set of `IMAGE_SETS` with the MLP
    student (`"fashion_mnist"`) or the small CNN (`"fashion_mnist/cnn"`).
    """
    base, _, student = name.partition("/")
    if name == "digits":
        setup = Setup("digits", epochs or 30, 32, 1e-2, 40, hidden=16)
    elif name == "mnist1d":
        setup = Setup("mnist1d", epochs or 30, 64, 1e-2, 40, hidden=256)
    elif base in IMAGE_SETS and student in ("", "mlp", "cnn"):
        setup = Setup(
            base, epochs or 6, 128, 2e-3, 12, hidden=256, student=student or "mlp"
        )
    else:
        names = list(DATA_SETS) + [f"{n}[/cnn]" for n in IMAGE_SETS]
        raise ValueError(f"`name` must be one of {names}. Received: {name!r}")
    if quick:
        setup = dataclasses.replace(
            setup,
            epochs=epochs or 1,
            teacher_epochs=1,
            train_examples=128,
            teacher_dir=os.path.join("distill_runs", "quality", "teachers_quick"),
        )
    return setup


def arrays(setup):
    """`(x_train, y_train), (x_test, y_test)` of the setup (train subset if quick)."""
    from keras_distill import data

    if setup.images():
        loaded = data.load_arrays(setup.name)
    elif setup.name == "digits":
        loaded = data.load_digits()
    else:
        loaded = data.load_mnist1d()
    (x, y), test = loaded["train"], loaded["test"]
    if setup.train_examples:
        x, y = x[: setup.train_examples], y[: setup.train_examples]
        test = (test[0][: setup.train_examples], test[1][: setup.train_examples])
    return (x, y), test


def augmentation(setup):
    """`(label-preserving part, full augmentation)` of function matching."""
    from keras_distill import augment

    if setup.name == "mnist1d":
        keep = augment.compose(
            augment.shift(4), augment.scale(0.8, 1.2), augment.noise(0.1)
        )
    elif setup.images():  # 28x28: two-pixel shifts; mirrored clothes
        parts = [
            augment.shift(2, axis=1, mode="zeros"),
            augment.shift(2, axis=2, mode="zeros"),
        ]
        if setup.name == "fashion_mnist":
            parts.append(augment.flip(axis=2))
        keep = augment.compose(*parts)
    else:  # 8x8 images: one-pixel shifts (zero fill), a little noise
        keep = augment.compose(
            augment.shift(1, axis=1, mode="zeros"),
            augment.shift(1, axis=2, mode="zeros"),
            augment.noise(0.05),
        )
    return keep, augment.compose(keep, augment.mixup(1.0))


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(setup, steps):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(setup.learning_rate, steps)
    return keras.optimizers.Adam(schedule)


def _steps(n, batch_size):
    return math.ceil(n / batch_size)


_TEACHERS = {}  # path -> loaded teacher, per process
_TEACHER_LOGITS = {}  # path -> the teacher's logits on the training images


def image_teacher(input_shape, num_classes=10):
    """The image sets' teacher: two conv blocks, a dense layer, logits.

    About 0.4M parameters; trained with the label-preserving augmentation,
    it is much stronger than the MLP student (the point of the table: a
    teacher worth distilling).
    """
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.3, name="dropout"),
            layers.Dense(128, activation="relu", name="dense"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="teacher_image_cnn",
    )


def _student(setup):
    from keras_distill import models

    if setup.student == "cnn":
        return models.student_cnn(
            input_shape=setup.shape(), num_classes=10, filters=setup.filters
        )
    return models.student_mlp(
        input_shape=setup.shape(), num_classes=10, hidden=setup.hidden
    )


def _teacher_logits(model, x):
    """The teacher's logits on `x` (the training images), once per process."""
    key = (id(model), len(x))
    if key not in _TEACHER_LOGITS:
        _TEACHER_LOGITS[key] = logits_of(model, x)
    return _TEACHER_LOGITS[key]


def teacher(setup, seed=0, verbose=0):
    """The data set's teacher for `seed`: loaded from its cache, else trained and saved.

    Returns:
        `(teacher, test_accuracy, train_seconds)`; `train_seconds` is 0 when
        it was loaded.
    """
    import keras

    from keras_distill import models

    size = setup.train_examples or "all"
    kind = "_cnn_aug" if setup.images() else ""
    path = os.path.join(
        setup.teacher_dir,
        f"{setup.name}{kind}_seed{seed}_e{setup.teacher_epochs}_n{size}.keras",
    )
    (x, y), (x_test, y_test) = arrays(setup)
    seconds = 0.0
    if path in _TEACHERS:
        model = _TEACHERS[path]
    elif os.path.exists(path):
        model = keras.models.load_model(path)
    else:
        keras.utils.set_random_seed(seed)
        fit_data = dict(x=x, y=y)
        if setup.images():
            from keras_distill import augment

            model = image_teacher(setup.shape())
            batch = 128
            optimizer = keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(
                    2e-3, setup.teacher_epochs * _steps(len(x), batch)
                )
            )
            keep, _ = augmentation(setup)
            fit_data = dict(
                x=augment.augment_dataset(
                    _dataset((x, y), batch, 1000 + seed), keep, seed=1000 + seed
                ),
                shuffle=False,
            )
        elif setup.name == "digits":
            model = models.teacher_cnn()
            optimizer = keras.optimizers.Adam(3e-3)
            batch = 32
        else:
            model = models.teacher_cnn1d()
            batch = 64
            optimizer = keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(
                    3e-3, setup.teacher_epochs * _steps(len(x), batch)
                )
            )
        model.compile(optimizer=optimizer, loss=_loss(), metrics=["accuracy"])
        start = time.perf_counter()
        if "y" in fit_data:
            fit_data["batch_size"] = batch
        model.fit(**fit_data, epochs=setup.teacher_epochs, verbose=verbose)
        seconds = time.perf_counter() - start
        os.makedirs(setup.teacher_dir, exist_ok=True)
        model.save(path + ".tmp.keras")
        os.replace(path + ".tmp.keras", path)
    _TEACHERS[path] = model  # frozen by the Distiller; reused by later rows
    return model, accuracy(model, x_test, y_test), seconds


def logits_of(model, x, batch_size=512):
    """`model(x)` in batches, eagerly.

    Not `predict()`: each row's new model would trace a new predict function,
    and TensorFlow warns about retracing after a few (the demo's rows).
    """
    import keras

    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )


def accuracy(model, x, y):
    """Test accuracy of a logits model."""
    return float(np.mean(np.argmax(logits_of(model, x), axis=-1) == y))


def _few_labels_split(y, fraction, seed):
    """Indices of a stratified labelled subset and of the rest."""
    rng = np.random.default_rng(1000 + seed)
    labelled = []
    for c in np.unique(y):
        ids = np.flatnonzero(y == c)
        rng.shuffle(ids)
        labelled.extend(ids[: max(1, round(fraction * len(ids)))])
    labelled = np.sort(np.asarray(labelled))
    rest = np.setdiff1d(np.arange(len(y)), labelled)
    return labelled, rest


def _dataset(parts, batch_size, seed):
    import tensorflow as tf

    n = len(parts[0]) if isinstance(parts, tuple) else len(parts)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train(method, setup, seed, verbose=0):
    """Trains one student with `method` and returns `(test_accuracy, seconds)`."""
    import keras

    import keras_distill as kd
    from keras_distill import augment, recipes

    check_method(method)
    (x, y), (x_test, y_test) = arrays(setup)
    epochs, batch = setup.epochs, setup.batch_size
    steps = epochs * _steps(len(x), batch)
    teachers = [teacher(setup, 0)[0]]
    if method == "multi_teacher":
        teachers.append(teacher(setup, 1)[0])
    keras.utils.set_random_seed(seed)
    student = _student(setup)
    fit = dict(epochs=epochs, verbose=verbose)

    def labelled():
        """`fit()`'s data of the un-augmented rows: the arrays, or, on the
        image sets, batches carrying the teacher's logits computed once (the
        same targets as running the frozen teacher in every step, faster)."""
        if not setup.images():
            return dict(x=x, y=y, batch_size=batch)
        from keras_distill import targets

        logits = _teacher_logits(teachers[0], x)
        ds = _dataset((x, y, {targets.TEACHER_LOGITS_KEY: logits}), batch, seed)
        return dict(x=ds, shuffle=False)

    def distiller(**kwargs):
        kwargs.setdefault("alpha", 0.1)
        kwargs.setdefault("temperature", 4.0)
        model = kd.Distiller(
            student, teachers if len(teachers) > 1 else teachers[0], **kwargs
        )
        model.compile(
            optimizer=_optimizer(setup, steps), loss=_loss(), metrics=["accuracy"]
        )
        return model

    start = time.perf_counter()
    if method == "scratch":
        student.compile(optimizer=_optimizer(setup, steps), loss=_loss())
        student.fit(x, y, batch_size=batch, **fit)
    elif method == "scratch_aug":
        keep, _ = augmentation(setup)
        ds = augment.augment_dataset(_dataset((x, y), batch, seed), keep, seed=seed)
        student.compile(optimizer=_optimizer(setup, steps), loss=_loss())
        student.fit(ds, shuffle=False, **fit)
    elif method == "kd":
        distiller().fit(**labelled(), **fit)
    elif method == "multi_teacher":
        distiller().fit(x, y, batch_size=batch, **fit)
    elif method == "dkd":
        distiller(distillation_loss="dkd").fit(**labelled(), **fit)
    elif method == "kd_std":
        from keras_distill.terms import registry

        standardized = registry.make("kd", standardize=True)
        distiller(distillation_loss=standardized).fit(**labelled(), **fit)
    elif method.startswith(TERM_PREFIX):
        term = method[len(TERM_PREFIX) :]
        distiller(distillation_loss=term).fit(**labelled(), **fit)
    elif method == "hints":
        hint = kd.hints.Hint("dense", student.layers[1].name)
        distiller(hints=[hint]).fit(x, y, batch_size=batch, **fit)
    elif method == "kd_schedules":
        last = max(epochs - 1, 1)
        distiller().fit(
            x,
            y,
            batch_size=batch,
            callbacks=[
                kd.callbacks.ParameterScheduler(
                    "temperature", kd.schedules.linear(8.0, 2.0, last)
                ),
                kd.callbacks.ParameterScheduler(
                    "alpha", kd.schedules.cosine(0.1, 0.5, last)
                ),
            ],
            **fit,
        )
    elif method == "curriculum":
        model = distiller()
        data = kd.curriculum.Curriculum.from_teacher(
            teachers[0], x, y, verbose=0, seed=seed
        )
        pacing = kd.curriculum.pacing("linear", 0.25, max(epochs // 2, 1))
        model.fit(
            data.dataset(batch),
            shuffle=False,
            callbacks=[kd.callbacks.CurriculumScheduler(data, pacing)],
            **fit,
        )
    elif method == "progressive":
        if epochs < 3:
            raise ValueError("The progressive row needs epochs >= 3.")
        model = distiller(temperature=6.0)
        # The cosine decay already lowers the learning rate, so the fine-tune
        # stage keeps factor 1.0 (a factor needs a constant learning rate).
        recipes.fit_progressive(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=batch,
            finetune_learning_rate_factor=1.0,
            seed=seed,
            verbose=verbose,
        )
    elif method == "kd_aug":
        keep, _ = augmentation(setup)
        ds = augment.augment_dataset(_dataset((x, y), batch, seed), keep, seed=seed)
        distiller().fit(ds, shuffle=False, **fit)
    elif method.startswith("progressive:"):
        stages = progressive_variant(method.split(":", 1)[1], epochs)
        model = distiller(
            alpha=float(stages[0].alpha(0)), temperature=float(stages[0].temperature(0))
        )
        data = kd.curriculum.Curriculum.from_teacher(
            teachers[0], x, y, verbose=0, seed=seed
        )
        callback = recipes.ProgressiveDistillation(stages, data)
        model.fit(
            data.dataset(batch),
            shuffle=False,
            callbacks=[callback],
            **{**fit, "epochs": callback.total_epochs},
        )
    elif method == "function_matching":
        _, mixed = augmentation(setup)
        ds = augment.function_matching_dataset(x, batch, mixed, seed=seed)
        distiller(temperature=1.0).fit(ds, shuffle=False, **fit)
    elif method in ("keras_default", "keras_kl"):
        from keras import distillation

        loss = (
            {} if method == "keras_default" else {"loss": keras.losses.KLDivergence()}
        )
        model = distillation.Distiller(
            teacher=teachers[0],
            student=student,
            distillation_losses=distillation.LogitsDistillation(
                temperature=4.0, **loss
            ),
            student_loss_weight=0.1,
        )
        model.compile(
            optimizer=_optimizer(setup, steps), loss=_loss(), metrics=["accuracy"]
        )
        model.fit(x, y, batch_size=batch, **fit)
    elif method in ("scratch_few", "kd_few"):
        labelled, rest = _few_labels_split(y, setup.label_fraction, seed)
        labelled_ds = _dataset((x[labelled], y[labelled]), batch, seed)
        few_steps = _steps(len(labelled), batch)
        if method == "scratch_few":
            student.compile(
                optimizer=_optimizer(setup, epochs * few_steps), loss=_loss()
            )
            student.fit(labelled_ds, shuffle=False, **fit)
        else:
            # One epoch of labelled batches, then one of x-only batches of the
            # rest (the KD term alone), `epochs` times.
            unlabelled_ds = _dataset(x[rest], batch, seed)
            steps = epochs * (few_steps + _steps(len(rest), batch))
            model = distiller()
            for _ in range(epochs):
                model.fit(labelled_ds, epochs=1, shuffle=False, verbose=verbose)
                model.fit(unlabelled_ds, epochs=1, shuffle=False, verbose=verbose)
    seconds = time.perf_counter() - start
    return accuracy(student, x_test, y_test), seconds


PROGRESSIVE_VARIANTS = {
    "default": (
        "fit_progressive's stages: 40% distill (T 6, 80% easiest), 40% "
        "curriculum (T 6->2 cosine, data 80%->100%), 20% fine-tune (alpha 1)"
    ),
    "kd_finetune": "the default, but the fine-tune stage keeps KD (alpha 0.5, T 2)",
    "anneal": (
        "annealing KD (Jafari et al. 2021): all data, T 8->1 (cosine) over 90%, "
        "then 10% fine-tune at alpha 0.5"
    ),
    "short_curriculum": (
        "curriculum from 50% (root pacing) over the first 30%, KD T 4 "
        "throughout, no label-only stage"
    ),
}


def progressive_variant(name, epochs):
    """The stages of one `PROGRESSIVE_VARIANTS` entry for `epochs` epochs."""
    from keras_distill import curriculum, recipes, schedules

    if name == "default" or name == "kd_finetune":
        distill = max(1, round(0.4 * epochs))
        finetune = max(1, round(0.2 * epochs))
        stages = recipes.progressive_stages(
            distill,
            epochs - distill - finetune,
            finetune,
            alpha=0.1,
            temperature=6.0,
            min_fraction=0.8,
            finetune_learning_rate_factor=1.0,
        )
        if name == "kd_finetune":
            stages[-1] = recipes.Stage(finetune, 0.5, 2.0, 1.0, name="finetune")
        return stages
    if name == "anneal":
        finetune = max(1, round(0.1 * epochs))
        main = epochs - finetune
        return [
            recipes.Stage(
                main, 0.1, schedules.cosine(8.0, 1.0, max(main - 1, 1)), name="anneal"
            ),
            recipes.Stage(finetune, 0.5, 1.0, name="finetune"),
        ]
    if name == "short_curriculum":
        ramp = max(1, round(0.3 * epochs))
        return [
            recipes.Stage(
                ramp, 0.1, 4.0, curriculum.pacing("root", 0.5, ramp), name="curriculum"
            ),
            recipes.Stage(epochs - ramp, 0.1, 4.0, name="distill"),
        ]
    raise ValueError(
        f"Unknown progressive variant {name!r}; one of {list(PROGRESSIVE_VARIANTS)}."
    )


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def summarise(values):
    """`{"n", "mean", "std", "low", "high", "min", "max"}` of per-seed values.

    `std` is the sample standard deviation (ddof=1) and `low`/`high` the 95%
    confidence interval of the mean (Student's t); NaN for a single seed.
    """
    values = np.asarray(values, dtype="float64")
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "low": mean - half,
        "high": mean + half,
        "min": float(values.min()) if n else float("nan"),
        "max": float(values.max()) if n else float("nan"),
    }


def mnist1d_demo_rows(
    seeds=(0, 1, 2),
    epochs=30,
    label_fraction=0.1,
    verbose=0,
    quick=False,
    teacher_dir=None,
):
    """The demo's MNIST-1D rows: scratch vs KD with 10% labels and a transfer set.

    With a tenth of the labels, the same 256-unit MLP trained from scratch
    and distilled from the cached 1-D CNN teacher (the other 90% of the
    training signals as x-only batches). Cheap enough for the demo (about
    10-20 s per seed on 2 CPU cores); see `benchmarks/quality.py` for the
    full-label comparison, where plain KD does not help.

    Args:
        seeds: Student seeds. Defaults to `(0, 1, 2)`.
        epochs: Student epochs. Defaults to `30`.
        label_fraction: Fraction of labelled training signals. Defaults to
            `0.1`.
        verbose: Passed to `fit()`. Defaults to `0`.
        quick: A smoke run on 128 signals with a one-epoch teacher.
            Defaults to `False`.
        teacher_dir: Where the teacher is cached. Defaults to
            `distill_runs/quality/teachers` (`teachers_quick` when `quick`).

    Returns:
        A list of dicts with the demo's `Row` fields (`model`, `parameters`,
        `test_accuracy` (mean), `test_loss` (NaN: not measured here),
        `train_seconds` (mean), `accuracy_min`, `accuracy_max`, `seeds`),
        teacher first.
    """
    setup = dataclasses.replace(
        default_setup("mnist1d", quick=quick),
        epochs=epochs,
        label_fraction=label_fraction,
    )
    if teacher_dir:
        setup = dataclasses.replace(setup, teacher_dir=teacher_dir)
    model, teacher_accuracy, teacher_seconds = teacher(setup, 0, verbose=verbose)
    rows = [
        {
            "model": "MNIST-1D teacher (1-D CNN, all labels)",
            "parameters": int(model.count_params()),
            "test_accuracy": teacher_accuracy,
            "test_loss": float("nan"),
            "train_seconds": teacher_seconds,
            "accuracy_min": teacher_accuracy,
            "accuracy_max": teacher_accuracy,
            "seeds": 1,
        }
    ]
    from keras_distill import models

    parameters = models.student_mlp(
        input_shape=setup.shape(), num_classes=10, hidden=setup.hidden
    ).count_params()
    percent = round(100 * label_fraction)
    for method, title in (
        ("scratch_few", f"MNIST-1D student, {percent}% labels (scratch)"),
        ("kd_few", f"MNIST-1D student, {percent}% labels + transfer set (distilled)"),
    ):
        runs = [train(method, setup, seed, verbose=verbose) for seed in seeds]
        stats = summarise([a for a, _ in runs])
        rows.append(
            {
                "model": title,
                "parameters": int(parameters),
                "test_accuracy": stats["mean"],
                "test_loss": float("nan"),
                "train_seconds": float(np.mean([s for _, s in runs])),
                "accuracy_min": stats["min"],
                "accuracy_max": stats["max"],
                "seeds": len(seeds),
            }
        )
    return rows
