"""The record a search keeps beside Keras Tuner's files (`kd_search.json`).

Keras Tuner reloads a folder's oracle and trials whatever the new arguments;
the settings written here make `kd.tune` refuse to resume another search.
"""

import functools
import hashlib
import json
import os

import keras
import numpy as np


def search_settings(
    tuner, epochs, batch_size, seed, factor, hypermodel, train, val
) -> dict:
    """What makes two `kd.tune` calls one search (`max_trials` may grow).

    Each part of the search space is its own key, so a refusal names it:
    the ranges, the terms, the fixed learning rate and metrics, the student
    builder (its code, or a model's architecture) and the teacher (its
    architecture and weights), as the hypermodel holds them (a default given
    explicitly is the same search).
    """
    digest = hashlib.sha256()
    for part in (*train, *(val or ())):
        array = np.ascontiguousarray(part)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return json.loads(
        json.dumps(
            {
                "tuner": tuner,
                "epochs": int(epochs),
                "batch_size": batch_size,
                "seed": seed,
                "hyperband_factor": factor if tuner == "hyperband" else None,
                "temperature_range": stable(hypermodel.temperature_range),
                "alpha_range": stable(hypermodel.alpha_range),
                "learning_rate_range": stable(hypermodel.learning_rate_range),
                "learning_rate": stable(hypermodel.learning_rate),
                "terms": stable(hypermodel.terms),
                "metrics": stable(hypermodel.metrics),
                "teacher_outputs": hypermodel.teacher_outputs,
                "build_student": builder_fingerprint(hypermodel.build_student),
                "teacher": model_fingerprint(hypermodel.teacher, weights=True),
                "data": digest.hexdigest(),
            },
            default=str,
        )
    )


def _without(value, keys):
    """A model config without `keys` (layer names: `dense_3` in one process is
    `dense_7` in another)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list | tuple):
        return [_without(v, keys) for v in value]
    return value


def model_fingerprint(model, weights=False) -> str:
    """A sha256 of `model`'s architecture (layer names left out) and, with
    `weights=True`, of its weights and without its `trainable` flags (a
    `Distiller` freezes its teacher, which changes nothing it computes)."""
    digest = hashlib.sha256()
    keys = ("name", "trainable") if weights else ("name",)
    try:
        config = _without(model.get_config(), keys)
    except NotImplementedError:  # a subclassed model without get_config
        config = None
    digest.update(
        json.dumps(
            [type(model).__module__, type(model).__qualname__, config],
            sort_keys=True,
            default=str,
        ).encode()
    )
    for weight in model.weights:
        digest.update(str((tuple(weight.shape), str(weight.dtype))).encode())
        if weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(value.tobytes())
    return digest.hexdigest()


def _code(code) -> list:
    """A code object as JSON: its bytecode, constants (nested code too) and names."""
    return [
        code.co_code.hex(),
        [_code(c) if hasattr(c, "co_code") else stable(c) for c in code.co_consts],
        list(code.co_names),
    ]


def builder_fingerprint(build_student) -> str:
    """A sha256 of the student builder.

    A model: its architecture. A function: its code, defaults, the values it
    closes over and the functions and models of its own module it names (a
    model by its architecture), so another builder of the same name differs
    too. A `functools.partial`: its function and arguments.
    """
    seen = set()

    def part(value):
        if isinstance(value, keras.Model):
            return ["model", model_fingerprint(value)]
        if isinstance(value, functools.partial):
            return [
                "partial",
                part(value.func),
                [part(a) for a in value.args],
                {k: part(v) for k, v in sorted(value.keywords.items())},
            ]
        code = getattr(value, "__code__", None)
        if code is None:
            if callable(value) and not isinstance(value, type):
                call = getattr(type(value).__call__, "__code__", None)
                return [stable(value), _code(call) if call else None]
            return stable(value)
        if id(value) in seen:  # recursion
            return getattr(value, "__qualname__", "")
        seen.add(id(value))
        cells = []
        for cell in value.__closure__ or ():
            try:
                cells.append(part(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append(None)
        module = getattr(value, "__module__", None)
        names = {}
        for name in code.co_names:
            named = getattr(value, "__globals__", {}).get(name)
            if isinstance(named, keras.Model) or (
                getattr(named, "__code__", None) is not None
                and getattr(named, "__module__", None) == module
            ):
                names[name] = part(named)
        # Not its name: `lambda hp: ...` nested in another function has another
        # `__qualname__` and builds the same student.
        return [
            _code(code),
            [part(d) for d in (value.__defaults__ or ())],
            cells,
            names,
        ]

    text = json.dumps(part(build_student), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


SEARCH_FILE = "kd_search.json"


def stable(value):
    """`value` as JSON that is the same in every process (no object addresses)."""
    if isinstance(value, dict):
        return {str(k): stable(v) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, list | tuple):
        return [stable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "get_config"):
        return {type(value).__name__: stable(value.get_config())}
    name = getattr(value, "__qualname__", None)
    return (
        f"{getattr(value, '__module__', '')}.{name}" if name else type(value).__name__
    )


def check_same_search(folder, settings, overwrite) -> None:
    """Refuses to resume a search folder that holds another search.

    Keras Tuner reloads the folder's oracle and trials whatever the new
    arguments: another search space or other data would silently return the
    old search's results. The settings are written beside the oracle.
    """
    path = os.path.join(folder, SEARCH_FILE)
    if not overwrite and os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        differ = [k for k in settings if saved.get(k) != settings[k]]
        if differ:
            raise ValueError(
                f"The tuner folder {folder!r} holds another search: "
                f"{'; '.join(_difference(k, saved, settings) for k in differ)}. "
                "Resuming it would return that search's trials. Pass "
                "another `directory`/`project_name`, or `overwrite=True` to start "
                "this search afresh."
            )
    os.makedirs(folder, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f)
    os.replace(path + ".tmp", path)


def _difference(key, saved, settings) -> str:
    """`key` differs: was ..., now ... (a fingerprint is named, not shown)."""
    if key not in saved:
        return f"{key} (not recorded by the earlier search)"
    other = {
        "build_student": "another student builder (`build_student`)",
        "teacher": "another teacher (architecture or weights)",
        "data": "other training or validation data",
    }
    if key in other:
        return other[key]
    return f"{key} was {saved[key]!r}, now {settings[key]!r}"


def check_some_trial_completed(search) -> None:
    """Raises the trials' own error when none completed (else a missing checkpoint)."""
    trials = list(search.oracle.trials.values())
    if not trials or any(t.status == "COMPLETED" for t in trials):
        return
    message = next((t.message for t in trials if t.message), None)
    last = str(message).strip().splitlines()[-1] if message else "no message"
    raise RuntimeError(
        f"Every trial of the search failed ({len(trials)} trials); the first "
        f"error: {last}"
    )
