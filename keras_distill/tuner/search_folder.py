"""The record a search keeps beside Keras Tuner's files (`kd_search.json`).

Keras Tuner reloads a folder's oracle and trials whatever the new arguments;
the settings written here make `kd.tune` refuse to resume another search.
"""

import hashlib
import json
import os

import numpy as np


def search_settings(
    tuner, epochs, batch_size, seed, factor, hypermodel_kwargs, train, val
) -> dict:
    """What makes two `kd.tune` calls one search (`max_trials` may grow)."""
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
                "search_space": stable(hypermodel_kwargs),
                "data": digest.hexdigest(),
            },
            default=str,
        )
    )


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
        differ = sorted(k for k in settings if saved.get(k) != settings[k])
        if differ:
            raise ValueError(
                f"The tuner folder {folder!r} holds another search "
                f"({', '.join(differ)} differ); resuming it would return that "
                "search's trials. Pass "
                "another `directory`/`project_name`, or `overwrite=True` to start "
                "this search afresh."
            )
    os.makedirs(folder, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f)
    os.replace(path + ".tmp", path)


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
