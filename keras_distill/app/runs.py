"""Config-driven runs behind `keras-distill train` and `keras-distill evaluate`."""

import json
import os
import time
import warnings

import keras
import numpy as np

from keras_distill import applications, data, models
from keras_distill.app import config as kd_config
from keras_distill.app import report
from keras_distill.app.run_folder import (
    RUN_MARKER,
    TUNER_PROJECT,
    RemoveIfEmpty,
    finish,
    prepare_output,
    trained_teacher,
)
from keras_distill.distiller import Distiller


class LogParameters(keras.callbacks.Callback):
    """Writes the distiller's parameters into the epoch logs.

    `alpha`, `temperature` and those of its terms (`<term>_weight`,
    `<term>_reversal`; `Distiller.parameter_variables()`), so a scheduled
    term weight shows in the history next to the loss it weights.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, variable in self.model.parameter_variables().items():
                logs.setdefault(name, float(keras.ops.convert_to_numpy(variable)))


class EpochCounter(keras.callbacks.Callback):
    """Sets a variable to the epoch at its start (for epoch-keyed shuffling)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


def epoch_keyed_batches(x, y, batch_size, seed, epoch, *weights):
    """Batches of `(x, y)` (or `(x, y, sample_weight)`) shuffled by `(seed,
    epoch)`: the same order for the same epoch in every process, so a resumed
    run sees the data an uninterrupted run sees."""
    import tensorflow as tf

    arrays = [tf.constant(a) for a in (x, y, *weights)]
    count = int(arrays[0].shape[0])

    def one_epoch(_):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order)

    return (
        tf.data.Dataset.from_tensors(0)
        .flat_map(one_epoch)
        .batch(batch_size)
        .map(lambda ids: tuple(tf.gather(a, ids) for a in arrays))
        .apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
        .prefetch(tf.data.AUTOTUNE)
    )


def load_keras_file(path, what):
    """Loads a saved `.keras` model; a missing or broken file is named as such."""
    from keras_distill import export as kd_export

    kd_export.check_keras_file(path, what)
    return keras.models.load_model(path, safe_mode=True)


def build_model(spec, role, splits):
    name = spec["model"]
    if name.endswith(".keras"):
        return load_keras_file(name, f"{role}.model"), True
    if name == "causal_lm":
        return (
            models.causal_lm(
                splits.num_classes,
                splits.input_shape[0],
                width=spec["width"],
                layers=spec["layers"],
                heads=max(1, spec["width"] // 32),
                name=role,
            ),
            False,
        )
    if name.startswith(applications.PREFIX):
        return (
            applications.build(
                name,
                splits.input_shape,
                splits.num_classes,
                weights=spec.get("weights"),
                name=role,
            ),
            False,
        )
    builders = {
        "teacher_cnn": models.teacher_cnn,
        "student_cnn": models.student_cnn,
        "student_mlp": models.student_mlp,
    }
    if name not in builders:
        raise ValueError(
            f"{role}.model must be a .keras file or one of {sorted(builders)}. "
            f"Received: {name!r}"
        )
    kwargs = {"input_shape": splits.input_shape, "num_classes": splits.num_classes}
    if name == "student_mlp":
        kwargs["hidden"] = spec.get("hidden", 16)
    return builders[name](name=role, **kwargs), False


_compile = models.compile_classifier


def train(config_path, overwrite=False, verbose="auto"):
    """Runs a config file: teacher, distillation, report, export. Returns a dict.

    Rerunning the same command after an interruption (Ctrl-C, `kill -9`)
    resumes the run: a finished teacher is loaded, not retrained, and the
    student continues from its last finished epoch with the same alpha,
    temperature, curriculum fraction, optimizer state and data order.
    """
    cfg = kd_config.load(config_path)  # the whole config, before anything runs
    out = cfg["output"]
    with RemoveIfEmpty(out):
        mode = prepare_output(out, cfg, "train", overwrite=overwrite)
        return _train(cfg, out, mode, verbose)


def _train(cfg, out, mode, verbose):
    import tensorflow as tf

    if mode == "resume":
        print(f"== resuming the run in {out}")
    keras.utils.set_random_seed(cfg["seed"])
    splits = data.load(
        cfg["data"],
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        **kd_config.data_options(cfg),
    )
    teacher_path = os.path.join(out, "teacher.keras")
    if mode == "resume" and os.path.isfile(teacher_path):
        print(f"== the teacher is trained: loading {teacher_path}")
        teacher, loaded = keras.models.load_model(teacher_path), True
    else:
        teacher, loaded = build_model(cfg["teacher"], "teacher", splits)
        if not loaded:
            _compile(teacher, cfg["teacher"]["learning_rate"])
            print(f"== training the teacher ({cfg['teacher']['epochs']} epochs)")
            teacher.fit(
                splits.train,
                validation_data=splits.val,
                epochs=cfg["teacher"]["epochs"],
                verbose=verbose,
                shuffle=False,  # the input pipeline shuffles itself
            )
            _save_atomically(teacher, teacher_path)
    _check_takes_data("teacher", teacher, splits, cfg["data"])
    if getattr(teacher, "optimizer", None) is None:  # a file saved uncompiled
        _compile(teacher, cfg["teacher"]["learning_rate"])
    teacher_val = teacher.evaluate(splits.val, verbose=0, return_dict=True)
    _check_teacher_learned(teacher_val, splits, cfg["teacher"]["model"])
    keras.utils.set_random_seed(cfg["seed"] + 1)
    student, _ = build_model(cfg["student"], "student", splits)
    _check_takes_data("student", student, splits, cfg["data"])
    distiller = config_distiller(cfg, student, teacher)
    _compile(distiller, cfg["distill"]["learning_rate"])
    from keras_distill.callbacks import AtomicBackupAndRestore

    callbacks = schedule_callbacks(cfg)
    history_csv = os.path.join(out, "history.csv")
    callbacks += [
        LogParameters(),
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard")),
        # Epoch logs kept on disk, so a resumed run reports all its epochs.
        keras.callbacks.CSVLogger(history_csv, append=True),
        # Written atomically: a run killed while backing up still resumes.
        AtomicBackupAndRestore(os.path.join(out, "backup")),
    ]
    train_data = splits.train
    if "curriculum" in cfg:
        train_data, scheduler = _curriculum(cfg, teacher, splits.train)
        callbacks.insert(0, scheduler)
    elif cfg["data"] in kd_config.IN_MEMORY_DATA or cfg["data"].startswith("npz:"):
        # Epoch-keyed order, so a resumed run trains on the same batches.
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        arrays = data.load_arrays(
            cfg["data"], seed=cfg["seed"], **kd_config.data_options(cfg)
        )
        x_train, y_train, *w_train = arrays["train"]
        train_data = epoch_keyed_batches(
            x_train, y_train, cfg["batch_size"], cfg["seed"], epoch, *w_train
        )
        callbacks.insert(0, EpochCounter(epoch))
    print(f"== distilling the student ({cfg['distill']['epochs']} epochs)")
    start = time.perf_counter()
    with warnings.catch_warnings():
        if mode == "resume":
            # The config's fingerprint matched, so the backup's alpha and
            # temperature are this run's own (moved by its schedules): the
            # library's warning about restored values is expected here.
            warnings.filterwarnings(
                "ignore", message="Loading weights restored", category=UserWarning
            )
        distiller.fit(
            train_data,
            validation_data=splits.val,
            epochs=cfg["distill"]["epochs"],
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the input pipelines shuffle themselves
        )
    history = read_history(history_csv)
    seconds = time.perf_counter() - start
    evaluation = splits.test if splits.test is not None else splits.val
    rows = [
        {
            "model": "teacher",
            "parameters": teacher.count_params(),
            "accuracy": float(
                teacher.evaluate(evaluation, verbose=0, return_dict=True)["accuracy"]
            ),
        },
        {
            "model": "student (distilled)",
            "parameters": student.count_params(),
            "accuracy": float(
                distiller.evaluate(evaluation, verbose=0, return_dict=True)["accuracy"]
            ),
        },
    ]
    _save_atomically(distiller, os.path.join(out, "distiller.keras"))
    _save_atomically(student, os.path.join(out, "student.keras"))
    report.plot_run(
        history,
        os.path.join(out, "report.png"),
        teacher_accuracy=teacher_val.get("accuracy"),
        title=f"{cfg['data']}: student distilled from the teacher",
    )
    split_name = "test" if splits.test is not None else "val"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(report.summary_markdown(rows, title=f"Run {out} ({split_name} split)"))
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.items()}, f)
    exported = None
    if cfg["export"]:
        from keras_distill.export import export_student

        exported = export_student(distiller, os.path.join(out, "serving")).path
    result = {"config": cfg, "rows": rows, "train_seconds": seconds, "export": exported}
    with open(os.path.join(out, RUN_MARKER), "w") as f:
        json.dump(result, f, indent=2)
    finish(out)
    print(report.summary_markdown(rows, title=f"Run {out}"))
    return result


def read_history(path):
    """`{metric: [value per epoch]}` from a `CSVLogger` file.

    An epoch logged twice (a run killed between logging it and backing it
    up, then resumed) keeps its last row.
    """
    import csv

    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row.pop("epoch"))] = row
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value))
    return history


def _save_atomically(model, path):
    """Saves `model` to `path` so that `path` is either absent or complete."""
    tmp = path[: -len(".keras")] + ".partial.keras"
    model.save(tmp)
    os.replace(tmp, path)


def _curriculum(cfg, teacher, train):
    """The staged training data and its `CurriculumScheduler`, from the config."""
    from keras_distill import curriculum
    from keras_distill.callbacks import CurriculumScheduler

    spec = cfg["curriculum"]
    x, y = (np.concatenate(parts) for parts in zip(*train.as_numpy_iterator()))
    print(f"== scoring {len(x)} training examples with the teacher (curriculum)")
    staged = curriculum.Curriculum.from_teacher(
        teacher,
        x,
        y,
        teacher_outputs=cfg["teacher"]["outputs"],
        verbose=0,
        seed=cfg["seed"],
    )
    pacing = curriculum.pacing(spec["pacing"], spec["min_fraction"], spec["epochs"])
    return staged.dataset(cfg["batch_size"]), CurriculumScheduler(staged, pacing)


def tune(config_path, overwrite=False, verbose=0):
    """Runs a Keras Tuner search from a config file; writes a plot and a table."""
    from keras_distill import tuner as kd_tuner

    if kd_tuner.distributed_role() is not None:
        # Each process would train its own teacher, and workers have no results.
        raise ValueError(
            "`keras-distill tune` runs in one process, but KERASTUNER_ORACLE_IP is "
            "set (Keras Tuner's distributed mode). For a distributed search, call "
            "`kd.tune` from a script (docs/tuning.md), or unset the variable."
        )
    cfg = kd_config.load(config_path)
    check_in_memory(cfg, "tune")
    # Its own folder, so that `train` and `tune` of one config never collide.
    out = cfg["tune"].get("output") or cfg["output"].rstrip("/") + "_tune"
    with RemoveIfEmpty(out):
        mode = prepare_output(out, cfg, "tune", overwrite=overwrite)
        return _tune(cfg, out, mode, verbose)


def _tune(cfg, out, mode, verbose):
    """The search; a `mode="resume"` run reuses the saved teacher and trials."""
    from keras_distill import tuner as kd_tuner

    if mode == "resume":
        print(f"== resuming the search in {out}")
    keras.utils.set_random_seed(cfg["seed"])
    arrays = in_memory_arrays(cfg)
    splits = data.Splits(None, None, None, arrays["num_classes"], arrays["shape"], "")
    teacher = in_memory_teacher(cfg, out, mode, arrays, splits, verbose)
    student_spec = dict(cfg["student"])

    def build_student(hp):
        if student_spec["model"] == "student_mlp":
            student_spec["hidden"] = hp.Choice("hidden", [8, 16, 32])
        return build_model(student_spec, "student", splits)[0]

    terms = cfg["tune"].get("terms")
    if terms is not None:
        terms = kd_config.build_terms(terms, cfg.get("_source", ""), ("tune", "terms"))
    best_hp, distiller, search = kd_tuner.tune(
        teacher,
        build_student,
        arrays["train"],
        arrays["val"],
        max_trials=cfg["tune"]["max_trials"],
        epochs=cfg["tune"]["epochs"],
        directory=os.path.join(out, "tuner"),
        project_name=TUNER_PROJECT,
        # The folder is this run's (`prepare_output`): a resumed search keeps
        # its finished trials; a new one starts from an empty folder.
        overwrite=mode != "resume",
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        verbose=0,  # the table is printed below, once
        terms=terms,
    )
    trials = [
        (
            t.hyperparameters.get("temperature"),
            t.hyperparameters.get("alpha"),
            t.score,
            {
                k: v
                for k, v in t.hyperparameters.values.items()
                if k not in ("temperature", "alpha")
            },
        )
        for t in search.oracle.trials.values()
        if t.score is not None
    ]
    report.plot_tuning(trials, os.path.join(out, "tuning.png"))
    with open(os.path.join(out, "tuning.md"), "w") as f:
        f.write(
            "# Tuning trials (best first)\n\n" + kd_tuner.trial_table(search) + "\n"
        )
    print(kd_tuner.trial_table(search))
    _save_atomically(distiller, os.path.join(out, "best_distiller.keras"))
    result = {"best": best_hp.values, "trials": len(trials)}
    with open(os.path.join(out, RUN_MARKER), "w") as f:
        json.dump(result, f, indent=2)
    finish(out)
    print(
        "best hyperparameters:",
        ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best_hp.values.items()
        ),
    )
    return result


def check_in_memory(cfg, command):
    """`tune` and `compare` train many students: classifiers, data in memory."""
    if cfg["data"] in kd_config.TEXT_DATA:
        raise ValueError(
            f"{kd_config.where(cfg['_source'], 'data')}: `keras-distill {command}` "
            "works with classifiers; it does not handle language models yet "
            f"(data={cfg['data']!r}). Run `keras-distill train` with chosen "
            "`distill.alpha` and `distill.temperature`."
        )
    if cfg["data"] not in kd_config.IN_MEMORY_DATA and not cfg["data"].startswith(
        "npz:"
    ):
        raise ValueError(
            f"{kd_config.where(cfg['_source'], 'data')}: `keras-distill {command}` "
            "needs data that fits in memory: 'digits', 'mnist1d', 'mnist', "
            "'fashion_mnist' or 'npz:PATH'. "
            f"Received: data={cfg['data']!r}"
        )


def in_memory_teacher(cfg, out, mode, arrays, splits, verbose):
    """The teacher of `tune` and `compare` (in-memory data), saved in `out`.

    A resumed run's own `teacher.keras`; else the one `train` trained for the
    same data, seed and teacher settings (`trained_teacher`); else the
    config's `.keras` file, or a teacher trained here on `arrays["train"]`.
    """
    teacher_path = os.path.join(out, "teacher.keras")
    trained = trained_teacher(cfg)
    if mode == "resume" and os.path.isfile(teacher_path):
        print(f"== the teacher is trained: loading {teacher_path}")
        return keras.models.load_model(teacher_path)
    if trained is not None:
        # `train` of this config trained this teacher: distil from it too
        # (kept here, so a resumed run does not depend on that run's folder).
        print(f"== the teacher is trained: loading {trained} (the `train` run's)")
        teacher = keras.models.load_model(trained)
        _save_atomically(teacher, teacher_path)
        return teacher
    teacher, loaded = build_model(cfg["teacher"], "teacher", splits)
    if not loaded:
        _compile(teacher, cfg["teacher"]["learning_rate"])
        print(f"== training the teacher ({cfg['teacher']['epochs']} epochs)")
        teacher.fit(*arrays["train"], epochs=cfg["teacher"]["epochs"], verbose=verbose)
        # Kept, so that a run killed or interrupted resumes with it.
        _save_atomically(teacher, teacher_path)
    return teacher


def schedule_callbacks(cfg):
    """A `ParameterScheduler` per entry of the config's `schedules`."""
    from keras_distill.callbacks import ParameterScheduler

    return [
        ParameterScheduler(name, kd_config.build_schedule(spec))
        for name, spec in cfg.get("schedules", {}).items()
    ]


def config_distiller(cfg, student, teacher):
    """The `Distiller` a config describes (alpha, temperature, terms, weights)."""
    terms = kd_config.build_terms(cfg["distill"]["loss"], cfg.get("_source", ""))
    return Distiller(
        student,
        teacher,
        alpha=cfg["distill"]["alpha"],
        temperature=cfg["distill"]["temperature"],
        teacher_outputs=cfg["teacher"]["outputs"],
        distillation_loss=terms
        if isinstance(cfg["distill"]["loss"], list)
        else terms[0],
        distillation_loss_weights=kd_config.term_weights(cfg, terms),
        token_reduction=cfg["token_reduction"],
    )


def in_memory_arrays(cfg):
    # The same loader (and /255 scaling of integer images) as `train` uses.
    return data.load_arrays(
        cfg["data"], seed=cfg["seed"], **kd_config.data_options(cfg)
    )


def _accuracy(model, evaluation):
    correct = total = 0
    for x, y in evaluation:
        predictions = np.argmax(
            keras.ops.convert_to_numpy(model(x, training=False)), -1
        )
        correct += int(np.sum(predictions == keras.ops.convert_to_numpy(y).reshape(-1)))
        total += len(predictions)
    return correct, total


def _arrays_of(dataset, limit=None):
    """`(x, y)` NumPy arrays from a dataset of batches (at most `limit`)."""
    xs, ys, count = [], [], 0
    for x, y in dataset:
        xs.append(keras.ops.convert_to_numpy(x))
        ys.append(keras.ops.convert_to_numpy(y).reshape(-1))
        count += len(xs[-1])
        if limit is not None and count >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def _check_teacher_learned(logs, splits, model):
    """Raises if a `.keras` teacher scores about chance: random weights, not trained.

    A never-trained teacher file was distilled from without a word.
    """
    accuracy = logs.get("accuracy")
    classes = splits.num_classes
    if not model.endswith(".keras") or accuracy is None or not classes or classes < 2:
        return
    if accuracy <= 1.5 / classes:
        raise ValueError(
            f"The teacher {model!r} scores {accuracy:.3f} accuracy on the validation "
            f"split, about chance for {classes} classes ({1 / classes:.3f}): it looks "
            "untrained (or trained on other data). Train it first, or let the run "
            "train one (`teacher.model` a built-in architecture)."
        )


def _check_takes_data(name, model, splits, source):
    """Raises if `model`'s input shape (or class count) is not `source`'s."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):  # a subclassed model: not known
        shape = None
    classes = shape[-1] if isinstance(shape, tuple) and shape else None
    if isinstance(classes, int) and splits.num_classes not in (None, classes):
        # Was the loss kernel's error inside the teacher's evaluation.
        raise ValueError(
            f"The {name} ({model.name}) outputs {classes} classes, but the data "
            f"{source!r} has {splits.num_classes}. Use a {name} of "
            f"{splits.num_classes} classes, or the data it was trained on."
        )
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or splits.input_shape is None:
        return
    expected = tuple(inputs[0].shape[1:])
    given = tuple(splits.input_shape)
    if len(expected) != len(given) or any(
        e is not None and e != g for e, g in zip(expected, given)
    ):
        raise ValueError(
            f"The {name} ({model.name}) takes inputs of shape {expected}, but the "
            f"data {source!r} has examples of shape {given}. Pass data of the "
            "shape it takes (`data:` in a config, `--data` to evaluate)."
        )


def evaluate(
    model_path,
    source="digits",
    batch_size=64,
    teacher=None,
    serving=True,
    int8=False,
):
    """Evaluates a saved distiller or student on `source`'s test split.

    For a distiller (or a student with `teacher=`), the teacher and the
    student are reported side by side: parameters, test accuracy and, with
    `serving`, what serving each costs: both are exported as SavedModels (to
    a temporary folder, without warm-up requests) and measured in one
    interleaved run (`report.serving_comparison`): size on disk, latency of
    one-example requests (p50, p99), throughput at batch 256.

    Args:
        model_path: A saved `Distiller` or student (`.keras`).
        source: The data (as in a run config). Defaults to `"digits"`.
        batch_size: Defaults to `64`.
        teacher: Optional path of a saved teacher to compare a plain student
            with. Defaults to `None` (a distiller's own teacher).
        serving: Export and measure the models. Defaults to `True`.
        int8: Also quantize the student to int8 TFLite (calibrated on 200
            training examples) and report its accuracy, size and speed.
            Defaults to `False`.

    Returns:
        A dict: `model`, `data`, `examples`, `accuracy` (the student's) and
        `rows` (one dict per model).
    """
    import tempfile

    model = load_keras_file(model_path, "model")
    student = model.student if isinstance(model, Distiller) else model
    if teacher is not None:
        teacher_model = load_keras_file(teacher, "--teacher")
    else:
        teacher_model = model.teacher if isinstance(model, Distiller) else None
    splits = data.load(source, batch_size=batch_size)
    evaluation = splits.test if splits.test is not None else splits.val
    models = {"student": student}
    if teacher_model is not None:
        models = {"teacher": teacher_model, "student": student}
    for name, candidate in models.items():
        _check_takes_data(name, candidate, splits, source)
    rows = {}
    for name, candidate in models.items():
        correct, total = _accuracy(candidate, evaluation)
        rows[name] = {
            "model": name,
            "parameters": int(candidate.count_params()),
            "accuracy": correct / total,
        }
    if serving:
        x_test, y_test = _arrays_of(evaluation)
        representative = _arrays_of(splits.train, limit=200)[0] if int8 else None
        with tempfile.TemporaryDirectory(prefix="keras-distill-evaluate-") as tmp:
            measured = report.serving_comparison(
                {n: (m, os.path.join(tmp, n)) for n, m in models.items()},
                x_test,
                y_test,
                quantize="student" if int8 else None,
                representative=representative,
                warmup_requests=0,
            )
        for name, m in measured.items():
            row = rows.setdefault(
                name,
                {
                    "model": name,
                    "parameters": m["parameters"],
                    "accuracy": m["accuracy"],
                },
            )
            row.update(
                {
                    "size_kib": round(m["size_bytes"] / 1024, 1),
                    "latency_p50_ms": round(m["latency_p50_ms"], 3),
                    "latency_p99_ms": round(m["latency_p99_ms"], 3),
                    "throughput_batch_256": int(round(m["throughput"])),
                }
            )
    result = {
        "model": model_path,
        "data": source,
        "examples": total,
        "accuracy": rows["student"]["accuracy"],
        "rows": list(rows.values()),
    }
    print(
        report.summary_markdown(
            result["rows"], title=f"Evaluation of {model_path} on {source}"
        )
    )
    if serving:
        print(
            "(serving: exported SavedModels reloaded with TensorFlow alone, measured "
            "interleaved in this run; latency of one-example requests in ms, "
            "throughput in examples/s)"
        )
    return result
