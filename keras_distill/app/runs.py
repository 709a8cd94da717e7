"""Config-driven runs behind `keras-distill train` and `keras-distill evaluate`."""

import json
import os
import shutil
import time

import keras
import numpy as np

from keras_distill import data, models
from keras_distill.app import config as kd_config
from keras_distill.app import report
from keras_distill.distiller import Distiller

RUN_MARKER = "run.json"


class LogParameters(keras.callbacks.Callback):
    """Writes the distiller's `alpha` and `temperature` into the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name in ("alpha", "temperature"):
                logs.setdefault(name, float(getattr(self.model, name).numpy()))


def prepare_output(path, overwrite=False):
    """Creates `path`; refuses a folder holding another run unless `overwrite`."""
    if os.path.exists(path) and os.listdir(path):
        if not overwrite:
            raise FileExistsError(
                f"The output folder {path!r} already holds files of another run; "
                "choose another `output` or pass --overwrite."
            )
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)


def _model(spec, role, splits):
    name = spec["model"]
    if name.endswith(".keras"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"{role}.model: no such file {name!r}.")
        return keras.models.load_model(name, safe_mode=True), True
    builders = {"teacher_cnn": models.teacher_cnn, "student_mlp": models.student_mlp}
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
    """Runs a config file: teacher, distillation, report, export. Returns a dict."""
    cfg = kd_config.load(config_path)
    out = cfg["output"]
    prepare_output(out, overwrite=overwrite)
    keras.utils.set_random_seed(cfg["seed"])
    splits = data.load(cfg["data"], batch_size=cfg["batch_size"], seed=cfg["seed"])
    teacher, loaded = _model(cfg["teacher"], "teacher", splits)
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
    elif teacher.optimizer is None:
        _compile(teacher, cfg["teacher"]["learning_rate"])
    teacher_val = teacher.evaluate(splits.val, verbose=0, return_dict=True)
    student, _ = _model(cfg["student"], "student", splits)
    distiller = Distiller(
        student,
        teacher,
        alpha=cfg["distill"]["alpha"],
        temperature=cfg["distill"]["temperature"],
        teacher_outputs=cfg["teacher"]["outputs"],
        distillation_loss=cfg["distill"]["loss"],
    )
    _compile(distiller, cfg["distill"]["learning_rate"])
    from keras_distill.callbacks import ParameterScheduler

    callbacks = [
        ParameterScheduler(name, kd_config.build_schedule(spec))
        for name, spec in cfg.get("schedules", {}).items()
    ]
    callbacks += [
        LogParameters(),
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard")),
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
    ]
    train_data = splits.train
    if "curriculum" in cfg:
        train_data, scheduler = _curriculum(cfg, teacher, splits.train)
        callbacks.insert(0, scheduler)
    print(f"== distilling the student ({cfg['distill']['epochs']} epochs)")
    start = time.perf_counter()
    history = distiller.fit(
        train_data,
        validation_data=splits.val,
        epochs=cfg["distill"]["epochs"],
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the input pipelines shuffle themselves
    ).history
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
    distiller.save(os.path.join(out, "distiller.keras"))
    student.save(os.path.join(out, "student.keras"))
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
    print(report.summary_markdown(rows, title=f"Run {out}"))
    return result


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
    out = cfg["output"]
    prepare_output(out, overwrite=overwrite)
    keras.utils.set_random_seed(cfg["seed"])
    if not cfg["data"] == "digits" and not cfg["data"].startswith("npz:"):
        raise ValueError(
            "`keras-distill tune` needs data that fits in memory: 'digits' or "
            f"'npz:PATH'. Received: data={cfg['data']!r}"
        )
    arrays = _arrays(cfg)
    splits = data.Splits(None, None, None, arrays["num_classes"], arrays["shape"], "")
    teacher, loaded = _model(cfg["teacher"], "teacher", splits)
    if not loaded:
        _compile(teacher, cfg["teacher"]["learning_rate"])
        print(f"== training the teacher ({cfg['teacher']['epochs']} epochs)")
        teacher.fit(*arrays["train"], epochs=cfg["teacher"]["epochs"], verbose=verbose)
    student_spec = dict(cfg["student"])

    def build_student(hp):
        if student_spec["model"] == "student_mlp":
            student_spec["hidden"] = hp.Choice("hidden", [8, 16, 32])
        return _model(student_spec, "student", splits)[0]

    best_hp, distiller, search = kd_tuner.tune(
        teacher,
        build_student,
        arrays["train"],
        arrays["val"],
        max_trials=cfg["tune"]["max_trials"],
        epochs=cfg["tune"]["epochs"],
        directory=os.path.join(out, "tuner"),
        overwrite=True,
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
    )
    trials = [
        (t.hyperparameters.get("temperature"), t.hyperparameters.get("alpha"), t.score)
        for t in search.oracle.trials.values()
        if t.score is not None
    ]
    report.plot_tuning(trials, os.path.join(out, "tuning.png"))
    with open(os.path.join(out, "tuning.md"), "w") as f:
        f.write(
            "# Tuning trials (best first)\n\n" + kd_tuner.trial_table(search) + "\n"
        )
    print(kd_tuner.trial_table(search))
    distiller.save(os.path.join(out, "best_distiller.keras"))
    result = {"best": best_hp.values, "trials": len(trials)}
    with open(os.path.join(out, RUN_MARKER), "w") as f:
        json.dump(result, f, indent=2)
    print("best hyperparameters:", best_hp.values)
    return result


def _arrays(cfg):
    # The same loader (and /255 scaling of integer images) as `train` uses.
    return data.load_arrays(cfg["data"], seed=cfg["seed"])


def evaluate(model_path, source="digits", batch_size=64):
    """Evaluates a saved distiller or student on `source`'s test split."""
    model = keras.models.load_model(model_path, safe_mode=True)
    student = model.student if isinstance(model, Distiller) else model
    splits = data.load(source, batch_size=batch_size)
    evaluation = splits.test if splits.test is not None else splits.val
    correct = total = 0
    for x, y in evaluation:
        predictions = np.argmax(
            keras.ops.convert_to_numpy(student(x, training=False)), -1
        )
        correct += int(np.sum(predictions == keras.ops.convert_to_numpy(y)))
        total += len(predictions)
    result = {
        "model": model_path,
        "data": source,
        "examples": total,
        "accuracy": correct / total,
    }
    print(report.summary_markdown([result], title="Evaluation"))
    return result
