"""The run folder of `keras-distill train` and `tune`: whose it is, what goes.

A run writes a marker first (`STATE_MARKER`: the config's and its files'
fingerprints); `prepare_output` reads it to decide between a new run, a
resume and a refusal, and `--overwrite` removes only the files a run writes
(`WRITTEN`, and the run's own files inside `RUN_FOLDERS`), never a user's.
"""

import hashlib
import json
import os
import shutil

RUN_MARKER = "run.json"

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


# The config sections that do not change the teacher `train` trains: a `tune`
# of a config differing only in these reuses that teacher (`trained_teacher`).
# A section not named here counts, so a new one never reuses a wrong teacher.
NOT_THE_TEACHER = (
    "output",
    "student",
    "distill",
    "schedules",
    "curriculum",
    "tune",
    "export",
    "token_reduction",
)


def teacher_digest(cfg):
    """A fingerprint of what trains the teacher: the config less `NOT_THE_TEACHER`."""
    return config_digest({k: v for k, v in cfg.items() if k not in NOT_THE_TEACHER})


def trained_teacher(cfg):
    """The `teacher.keras` that this config's `train` run trained, or None.

    Only a run folder of this tool's `train` whose teacher was trained from
    the same data, seed and teacher settings (`teacher_digest`), reading the
    same files (`sources_digest`).
    """
    folder = cfg.get("output")
    path = os.path.join(folder or "", "teacher.keras")
    state = _read_state(folder) if folder else None
    if (
        state is not None
        and state.get("command") == "train"
        and state.get("teacher") == teacher_digest(cfg)
        and state.get("sources") == sources_digest(cfg)
        and os.path.isfile(path)
        and not os.path.islink(path)
    ):
        return path
    return None


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
    # The config key that names this folder, for the messages below.
    key = "tune.output" if command == "tune" else "output"
    real = os.path.realpath(path)
    refused = _refused_folders(cfg.get("_source", "."))
    if real in refused:
        raise ValueError(
            f"{key} {path!r} is {refused[real]}; a run writes and may later clear "
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
            f"deletes those. Choose another `{key}`."
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
                f"Pass --overwrite to start the run again, or choose another `{key}`."
            )
        mode = "resume"
    elif not overwrite:
        what = "a finished run" if state.get("finished") else "another run"
        raise FileExistsError(
            f"The output folder {path!r} holds {what} ({state.get('command')}, "
            f"config {state.get('config_path')}); choose another `{key}` or pass "
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
                "teacher": teacher_digest(cfg),
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
RUN_FOLDERS = ("tensorboard", "backup", "serving", "tuner")
# The Keras Tuner project of `tune` (`tuner/<project>/...`) and its files.
TUNER_PROJECT = "distiller"
_TUNER_FILES = ("oracle.json", "tuner0.json")
_TRIAL_FILES = ("trial.json", "checkpoint.weights.h5", "build_config.json")


def _refuse_links(path):
    """Refuses an output whose run folders are symbolic links.

    A run writes into `backup/`, `serving/`, ... and later clears them: through
    a link it would write into, and clear, a folder it does not own.
    """
    for name in RUN_FOLDERS:
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
    """The files under `RUN_FOLDERS` a run writes (relative paths), sorted."""
    found = []
    for folder in RUN_FOLDERS:
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
        elif name in RUN_FOLDERS and os.path.isdir(target):
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


def finish(path):
    """Marks the run finished; records its files (what --overwrite may remove)."""
    state = _read_state(path) or {}
    state["finished"] = True
    state["written"] = _run_files(path)  # what --overwrite may remove
    _write_state(path, state)


class RemoveIfEmpty:
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
