"""Config-driven runs behind `keras-distill train` and `keras-distill evaluate`."""

import hashlib
import json
import os
import shutil
import time
import warnings

import keras
import numpy as np

from keras_distill import data, models
from keras_distill.app import config as kd_config
from keras_distill.app import report
from keras_distill.distiller import Distiller

RUN_MARKER = "run.json"


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


# The marker a run writes first into its output folder: it says the folder is
# ours (only then may --overwrite clear it) and which config it runs (a rerun
# of the same config resumes).
STATE_MARKER = ".keras-distill-run.json"
# Everything a run writes; --overwrite removes these and nothing else.
WRITTEN = (
    STATE_MARKER,
    RUN_MARKER,
    "teacher.keras",
    "distiller.keras",
    "student.keras",
    "best_distiller.keras",
    "report.png",
    "tuning.png",
    "summary.md",
    "tuning.md",
    "history.json",
    "history.csv",
    # Left by a run killed while saving (`_save_atomically`).
    "teacher.partial.keras",
    "distiller.partial.keras",
    "student.partial.keras",
    "best_distiller.partial.keras",
    "tensorboard",
    "backup",
    "serving",
    "tuner",
)


def config_digest(cfg):
    """A fingerprint of a validated config (what a resumed run must match)."""
    text = json.dumps(
        {k: v for k, v in cfg.items() if not k.startswith("_")},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _file_digest(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sources_digest(cfg):
    """A fingerprint of the files a config reads (what a resumed run must match).

    The config's text names `npz:data.npz` or `teacher.keras`, not their
    contents: a file replaced between a killed run and its rerun would mix
    two data sets (or teachers) in one student. Hashes the contents of an
    `npz:` file and of `.keras` models; an `images:` folder by its file
    names, sizes and modification times (reading every image would cost a
    pass over the data).
    """
    parts = {}
    source = cfg.get("data", "")
    kind, _, rest = source.partition(":")
    if kind == "npz" and os.path.isfile(rest):
        parts["data"] = _file_digest(rest)
    elif kind == "images" and os.path.isdir(rest):
        listing = []
        for root, dirs, files in os.walk(rest):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                listing.append(
                    f"{os.path.relpath(os.path.join(root, name), rest)}"
                    f"\0{stat.st_size}\0{stat.st_mtime_ns}"
                )
        parts["data"] = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    for role in ("teacher", "student"):
        model = (cfg.get(role) or {}).get("model", "")
        if model.endswith(".keras") and os.path.isfile(model):
            parts[role] = _file_digest(model)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _refused_folders(config_path):
    here = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    config_dir = os.path.realpath(os.path.dirname(os.path.abspath(config_path)))
    return {
        here: "the current folder",
        home: "your home folder",
        config_dir: "the config file's own folder",
        os.path.realpath(os.sep): "the root folder",
    }


def prepare_output(path, cfg, command, overwrite=False):
    """Prepares the output folder; returns `"new"` or `"resume"`.

    - empty or missing: a new run;
    - holding this tool's unfinished run of the same config and command,
      reading the same files (`sources_digest`; else refused): the run
      resumes (finished teacher kept, the student's epochs restored by
      `AtomicBackupAndRestore`; a search's finished trials kept);
    - holding this tool's other or finished run: refused unless `overwrite`,
      which removes only the files a run writes (`_remove_run_files`: the
      top-level `WRITTEN` files, and inside `serving/`, `tensorboard/`,
      `backup/`, `tuner/` only the files of the names a run writes
      (`_is_run_file`), never a user's);
    - holding files this tool did not write: refused, even with `overwrite`.
    The current folder, the home folder and the config's folder are never
    used as outputs, and run folders that are symbolic links are refused.
    """
    real = os.path.realpath(path)
    refused = _refused_folders(cfg.get("_source", "."))
    if real in refused:
        raise ValueError(
            f"output {path!r} is {refused[real]}; a run writes and may later clear "
            "its output folder, so give it a folder of its own (e.g. "
            "distill_runs/NAME)."
        )
    _refuse_links(path)
    digest = config_digest(cfg)
    sources = sources_digest(cfg)
    state = _read_state(path)
    entries = set(os.listdir(path)) if os.path.isdir(path) else set()
    if not entries:
        mode = "new"
    elif state is None:
        foreign = sorted(entries - set(WRITTEN))
        raise FileExistsError(
            f"The output folder {path!r} holds files keras-distill did not write "
            f"({', '.join(foreign[:3]) or ', '.join(sorted(entries)[:3])}); it never "
            "deletes those. Choose another `output`."
        )
    elif (
        not overwrite
        and state.get("config") == digest
        and state.get("command") == command
        and not state.get("finished")
    ):
        if state.get("sources") != sources:
            raise FileExistsError(
                f"The output folder {path!r} holds an unfinished run of this config, "
                "but the files it reads changed since (the data file or a .keras "
                f"model of {state.get('config_path')}); resuming would mix them. "
                "Pass --overwrite to start the run again, or choose another `output`."
            )
        mode = "resume"
    elif not overwrite:
        what = "a finished run" if state.get("finished") else "another run"
        raise FileExistsError(
            f"The output folder {path!r} holds {what} ({state.get('command')}, "
            f"config {state.get('config_path')}); choose another `output` or pass "
            "--overwrite to replace it."
        )
    else:
        _remove_run_files(path, state)
        mode = "new"
    os.makedirs(path, exist_ok=True)
    if mode == "new":
        _write_state(
            path,
            {
                "tool": "keras-distill",
                "command": command,
                "config": digest,
                "sources": sources,
                "config_path": os.path.abspath(cfg.get("_source", "")),
                "finished": False,
            },
        )
    return mode


# The folders a run writes into, and which of their files are the run's own:
# TensorBoard's event files, the export's version (and temporary) folders, the
# backups `AtomicBackupAndRestore` names (and Keras's older ones), Keras
# Tuner's project files. Anything else inside them (a user's `serving/mine/`,
# `tensorboard/my_run/`, `backup/notes.txt`) is foreign and stays.
_RUN_FOLDERS = ("tensorboard", "backup", "serving", "tuner")
# The Keras Tuner project of `tune` (`tuner/<project>/...`) and its files.
TUNER_PROJECT = "distiller"
_TUNER_FILES = ("oracle.json", "tuner0.json")
_TRIAL_FILES = ("trial.json", "checkpoint.weights.h5", "build_config.json")


def _refuse_links(path):
    """Refuses an output whose run folders are symbolic links.

    A run writes into `backup/`, `serving/`, ... and later clears them: through
    a link it would write into, and clear, a folder it does not own.
    """
    for name in _RUN_FOLDERS:
        target = os.path.join(path, name)
        if os.path.islink(target):
            raise FileExistsError(
                f"The output folder's {name!r} ({target}) is a symbolic link to "
                f"{os.path.realpath(target)!r}; a run writes into and clears its "
                "folders, so it does not follow links. Remove the link or choose "
                "another `output`."
            )


def _is_run_file(relative):
    parts = relative.split(os.sep)
    if parts[0] == "tensorboard":
        return (
            len(parts) == 3
            and parts[1] in ("train", "validation")
            and parts[2].startswith("events.out.tfevents.")
        )
    if parts[0] == "serving":
        return len(parts) > 2 and (
            parts[1].isdigit() or parts[1].startswith(".tmp-keras-distill-")
        )
    if parts[0] == "backup":
        from keras_distill.callbacks import AtomicBackupAndRestore

        return len(parts) == 2 and AtomicBackupAndRestore.is_own_file(parts[1])
    if parts[0] == "tuner":
        if len(parts) < 3 or parts[1] != TUNER_PROJECT:
            return False
        if len(parts) == 3:
            return parts[2] in _TUNER_FILES
        return (
            len(parts) == 4
            and parts[2].startswith("trial_")
            and parts[2][len("trial_") :].isdigit()
            and parts[3] in _TRIAL_FILES
        )
    return False


def _run_files(path):
    """The files under `_RUN_FOLDERS` a run writes (relative paths), sorted."""
    found = []
    for folder in _RUN_FOLDERS:
        top = os.path.join(path, folder)
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        for root, _, files in os.walk(top):
            for name in files:
                relative = os.path.relpath(os.path.join(root, name), path)
                if _is_run_file(relative):
                    found.append(relative)
    return sorted(found)


def _remove_run_files(path, state):
    """Removes what a run wrote in `path`, never a file it did not write.

    The top-level `WRITTEN` files are removed; inside the run's folders only
    the files the finished run recorded (`state["written"]`), or for an
    unfinished run the files of the run's own kinds (`_is_run_file`), then
    the folders left empty. A foreign file keeps its folders.
    """
    written = _run_files(path)
    if state.get("finished") and isinstance(state.get("written"), list):
        recorded = set(state["written"])
        written = [name for name in written if name in recorded]
    for name in written:
        os.remove(os.path.join(path, name))
    for name in WRITTEN:
        target = os.path.join(path, name)
        if os.path.islink(target):
            os.remove(target)  # the link, never what it points to
        elif name in _RUN_FOLDERS and os.path.isdir(target):
            for root, _, _ in sorted(os.walk(target), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(root)  # only empty folders
                except OSError:
                    pass
        elif not os.path.isdir(target) and os.path.lexists(target):
            os.remove(target)


def _read_state(path):
    try:
        with open(os.path.join(path, STATE_MARKER)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("tool") else None


def _write_state(path, state):
    tmp = os.path.join(path, STATE_MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, os.path.join(path, STATE_MARKER))


def _finish(path):
    state = _read_state(path) or {}
    state["finished"] = True
    state["written"] = _run_files(path)  # what --overwrite may remove
    _write_state(path, state)


class _RemoveIfEmpty:
    """Removes a run folder that a failed run leaves with nothing but its marker."""

    def __init__(self, path):
        self.path = path
        self.existed = os.path.isdir(path) and bool(os.listdir(path))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or self.existed or not os.path.isdir(self.path):
            return False
        if set(os.listdir(self.path)) <= {STATE_MARKER}:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


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


def _model(spec, role, splits):
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
    """Runs a config file: teacher, distillation, report, export. Returns a dict.

    Rerunning the same command after an interruption (Ctrl-C, `kill -9`)
    resumes the run: a finished teacher is loaded, not retrained, and the
    student continues from its last finished epoch with the same alpha,
    temperature, curriculum fraction, optimizer state and data order.
    """
    cfg = kd_config.load(config_path)  # the whole config, before anything runs
    out = cfg["output"]
    with _RemoveIfEmpty(out):
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
            _save_atomically(teacher, teacher_path)
    if teacher.optimizer is None:
        _compile(teacher, cfg["teacher"]["learning_rate"])
    teacher_val = teacher.evaluate(splits.val, verbose=0, return_dict=True)
    keras.utils.set_random_seed(cfg["seed"] + 1)
    student, _ = _model(cfg["student"], "student", splits)
    terms = kd_config.build_terms(cfg["distill"]["loss"], cfg.get("_source", ""))
    distiller = Distiller(
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
    _compile(distiller, cfg["distill"]["learning_rate"])
    from keras_distill.callbacks import AtomicBackupAndRestore, ParameterScheduler

    callbacks = [
        ParameterScheduler(name, kd_config.build_schedule(spec))
        for name, spec in cfg.get("schedules", {}).items()
    ]
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
    _finish(out)
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
    if cfg["data"] in kd_config.TEXT_DATA:
        raise ValueError(
            f"{kd_config._where(cfg['_source'], 'data')}: `keras-distill tune` "
            "searches classifiers; it does not tune language models yet "
            f"(data={cfg['data']!r}). Run `keras-distill train` with chosen "
            "`distill.alpha` and `distill.temperature`."
        )
    if cfg["data"] not in kd_config.IN_MEMORY_DATA and not cfg["data"].startswith(
        "npz:"
    ):
        raise ValueError(
            f"{kd_config._where(cfg['_source'], 'data')}: `keras-distill tune` needs "
            "data that fits in memory: 'digits', 'mnist1d', 'mnist', "
            "'fashion_mnist' or 'npz:PATH'. "
            f"Received: data={cfg['data']!r}"
        )
    # Its own folder, so that `train` and `tune` of one config never collide.
    out = cfg["tune"].get("output") or cfg["output"].rstrip("/") + "_tune"
    with _RemoveIfEmpty(out):
        mode = prepare_output(out, cfg, "tune", overwrite=overwrite)
        return _tune(cfg, out, mode, verbose)


def _tune(cfg, out, mode, verbose):
    """The search; a `mode="resume"` run reuses the saved teacher and trials."""
    from keras_distill import tuner as kd_tuner

    if mode == "resume":
        print(f"== resuming the search in {out}")
    keras.utils.set_random_seed(cfg["seed"])
    arrays = _arrays(cfg)
    splits = data.Splits(None, None, None, arrays["num_classes"], arrays["shape"], "")
    teacher_path = os.path.join(out, "teacher.keras")
    if mode == "resume" and os.path.isfile(teacher_path):
        print(f"== the teacher is trained: loading {teacher_path}")
        teacher = keras.models.load_model(teacher_path)
    else:
        teacher, loaded = _model(cfg["teacher"], "teacher", splits)
        if not loaded:
            _compile(teacher, cfg["teacher"]["learning_rate"])
            print(f"== training the teacher ({cfg['teacher']['epochs']} epochs)")
            teacher.fit(
                *arrays["train"], epochs=cfg["teacher"]["epochs"], verbose=verbose
            )
            # Kept, so that a search killed or interrupted resumes with it.
            _save_atomically(teacher, teacher_path)
    student_spec = dict(cfg["student"])

    def build_student(hp):
        if student_spec["model"] == "student_mlp":
            student_spec["hidden"] = hp.Choice("hidden", [8, 16, 32])
        return _model(student_spec, "student", splits)[0]

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
    _finish(out)
    print(
        "best hyperparameters:",
        ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best_hp.values.items()
        ),
    )
    return result


def _arrays(cfg):
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


def _check_takes_data(name, model, splits, source):
    """Raises if `model`'s input shape is not the shape of `source`'s examples."""
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
            f"data {source!r} has examples of shape {given}. Pass the data it was "
            "trained on (--data)."
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
