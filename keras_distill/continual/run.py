"""`learn()` and `compare()`: a whole sequence of tasks, saved and resumable."""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np

from keras_distill import params as kd_params
from keras_distill.continual.heads import (
    _check_count,
    _check_model,
    _check_warmup_epochs,
    _heads,
    add_task_head,
    alpha_for_lambda,
    grow_head,
    old_classes_view,
    warm_up_head,
)
from keras_distill.continual.lwf import LearningWithoutForgetting
from keras_distill.continual.memory import ExemplarMemory
from keras_distill.continual.metrics import SequenceResult
from keras_distill.continual.tasks import _check_tasks

METHODS = ("finetune", "lwf", "icarl", "joint")
_STATE_FILE = "run.json"

# -- A sequence of tasks ---------------------------------------------------------


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_model(model, path):
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def _digest(*arrays):
    """A short hash of the arrays' bytes, dtypes and shapes."""
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _fingerprint(tasks):
    """What identifies each task's data in `run.json`: a resume must match it."""
    return [
        {
            "name": t.name,
            "classes": list(t.classes),
            "train_size": len(t.train[1]),
            "train_data": _digest(*t.train),
            "test_size": len(t.test[1]),
            "test_data": _digest(*t.test),
        }
        for t in tasks
    ]


def _task_changes(saved, current):
    """One phrase per task whose fingerprint differs from the saved run's."""
    if not isinstance(saved, list) or len(saved) != len(current):
        count = len(saved) if isinstance(saved, list) else "?"
        return [f"the run had {count} tasks, now {len(current)}"]
    changes = []
    labels = {
        "name": "name",
        "classes": "classes",
        "train_size": "train size",
        "train_data": "train data",
        "test_size": "test size",
        "test_data": "test data",
    }
    for i, (old, new) in enumerate(zip(saved, current)):
        if not isinstance(old, dict):
            changes.append(f"task {i} was fingerprinted by an older version")
            continue
        fields = [labels[k] for k in new if old.get(k) != new[k]]
        if fields:
            changes.append(f"task {i} ({new['name']}): {', '.join(fields)}")
    return changes


def _accuracy(predicted, labels):
    return float(np.mean(np.argmax(predicted, -1) == labels))


def _evaluate(model, tasks, step, scenario, class_order):
    """Row `step` of the accuracy matrix: accuracy on tasks 0..step."""
    row = [float("nan")] * len(tasks)
    for j, task in enumerate(tasks[: step + 1]):
        x, y = task.test
        outputs = model.predict(x, batch_size=512, verbose=0)
        if scenario == "task":
            outputs = outputs if isinstance(outputs, list) else [outputs]
            row[j] = _accuracy(outputs[j], _labels(y, task, scenario, class_order))
        else:
            row[j] = _accuracy(outputs, _labels(y, task, scenario, class_order))
    return row


def _evaluate_nme(model, memory, tasks, step, class_order):
    """Row `step` of the nearest-mean-of-exemplars classifier's accuracy."""
    seen = sorted(
        {c for task in tasks[: step + 1] for c in task.classes}, key=class_order.get
    )
    row = [float("nan")] * len(tasks)
    for j, task in enumerate(tasks[: step + 1]):
        x, y = task.test
        scores = memory.nearest_mean_scores(model, x, seen)
        labels = np.asarray([class_order[c] for c in np.asarray(y).reshape(-1)])
        row[j] = _accuracy(scores, labels)
    return row


def _compile_plain(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
        * len(model.outputs),
    )


def _build(build_model, num_classes):
    model = build_model(num_classes)
    _check_model(model, "build_model(num_classes)")
    _heads(model)
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] != num_classes:
        raise ValueError(
            "`build_model(num_classes)` must return a model with one output of "
            f"`num_classes` logits. build_model({num_classes}) returned outputs "
            f"{[tuple(o.shape) for o in model.outputs]}."
        )
    return model


def learn(
    tasks,
    build_model,
    directory,
    scenario="class",
    method="lwf",
    epochs=20,
    batch_size=32,
    learning_rate=1e-2,
    alpha=None,
    temperature=2.0,
    warmup_epochs="auto",
    memory_size=200,
    selection="herding",
    seed=0,
    verbose=0,
):
    """Learns `tasks` in order; each step's model teaches the next (resumable).

    Step 0 trains `build_model(classes)` on the first task. Step `i` starts
    from step `i-1`'s model and, with `method`:

    - `"finetune"`: trains it on task `i` alone (the lower bound);
    - `"lwf"`: Learning without Forgetting: task `i`'s labels plus the KD
      term towards step `i-1`'s model on task `i`'s inputs
      (`LearningWithoutForgetting`). Task-incremental: a new head per task
      (`add_task_head`), first trained alone (`warm_up_head`, the paper's
      warm-up). Class-incremental: LwF.MC, one head grown by task `i`'s
      classes (`grow_head`), cross-entropy over every class seen and KD on
      the old classes' logits;
    - `"icarl"`: class-incremental LwF.MC trained on task `i` plus an
      `ExemplarMemory` of `memory_size` stored old examples (iCaRL's memory
      and distillation on old classes; softmax KD rather than iCaRL's
      sigmoids; the network's head classifies in `accuracy`, and iCaRL's
      nearest-mean-of-exemplars classifier in `nme_accuracy`);
    - `"joint"`: a new model trained on every task so far (the upper bound).

    After each step its model is saved to `directory/task_<i+1>.keras` (and
    the memory to `memory_<i+1>.npz`), then the accuracy row on the tasks so
    far is recorded in `directory/run.json`: the commit point. Calling
    `learn()` again with the same arguments continues after the last
    finished task (after a crash or `kill -9`); with other arguments it
    refuses the folder.

    Args:
        tasks: A non-empty list of `Task`s (see `split_classes`). In the
            class-incremental setting no class may be in two tasks.
        build_model: `build_model(num_classes)` returns a new functional or
            Sequential model whose last layer is a `Dense(num_classes)` head
            giving logits.
        directory: Folder for the models and `run.json` (created).
        scenario: `"class"` (one growing head, no task id at test time) or
            `"task"` (a head per task, the task id known). Defaults to
            `"class"`.
        method: `"finetune"`, `"lwf"`, `"icarl"` or `"joint"`. Defaults to
            `"lwf"`.
        epochs: Epochs per task. Defaults to `20`.
        batch_size: Defaults to `32`.
        learning_rate: Adam's learning rate. Defaults to `1e-2`.
        alpha: Weight of the new labels' loss (see
            `LearningWithoutForgetting`). Defaults to `None`: the paper's
            `lambda_o = 1`, `alpha_for_lambda(1.0, temperature)`.
        temperature: KD temperature. Defaults to `2.0`.
        warmup_epochs: The new head's training alone (trunk frozen) before
            each task-incremental step (also for `"finetune"`, so both start
            alike): `"auto"` trains it until its cross-entropy on a held-out
            20% of the new task's training data (stratified, seeded by the
            step's seed) has not improved by more than 1e-4 for 10 epochs
            (at most 200) and keeps its best epoch (see `warm_up_head`); an
            integer trains it for that many epochs on all the data; `0` skips
            it. The epochs
            chosen are recorded in `run.json` (`"warmup_epochs_run"`).
            Defaults to `"auto"`.
        memory_size: Stored examples for `"icarl"` (at least one per class).
            Defaults to `200`.
        selection: `"herding"` or `"random"` exemplars. Defaults to
            `"herding"`.
        seed: Seed of weights and data order (step `i` uses `seed * 1000 +
            i`). Defaults to `0`.
        verbose: Passed to `fit()`. Defaults to `0`.

    Returns:
        A `SequenceResult` (accuracy matrix, metrics, model paths).

    Example:

    ```python
    tasks = kd.continual.split_classes(
        kd.data.load_digits(), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    )
    result = kd.continual.learn(
        tasks, lambda n: kd.models.student_mlp(num_classes=n), "runs/lwf",
        scenario="class", method="icarl", memory_size=100,
    )
    print(kd.continual.format_matrix(result.accuracy))
    ```
    """
    tasks = _check_tasks(tasks, scenario)
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    if method == "icarl" and scenario != "class":
        raise ValueError(
            "method='icarl' is class-incremental (one growing head); use "
            "scenario='class', or method='lwf' for task-incremental learning."
        )
    if not callable(build_model):
        raise ValueError(
            "`build_model` must be a callable `build_model(num_classes) -> "
            f"keras.Model`. Received: build_model={build_model!r}"
        )
    epochs = _check_count(epochs, "epochs")
    batch_size = _check_count(batch_size, "batch_size")
    warmup_epochs = _check_warmup_epochs(warmup_epochs, "warmup_epochs", low=0)
    temperature = kd_params.check("temperature", temperature)
    alpha = (
        alpha_for_lambda(1.0, temperature)
        if alpha is None
        else (kd_params.check("alpha", alpha))
    )
    learning_rate = kd_params.check_positive(learning_rate, "learning_rate")
    if (
        isinstance(memory_size, bool)
        or not isinstance(memory_size, int | np.integer)
        or (memory_size < 0)
    ):
        raise ValueError(
            "`memory_size` (the number of stored old examples) must be an integer "
            f">= 0. Received: memory_size={memory_size!r}"
        )
    memory = None
    if method == "icarl":
        memory = ExemplarMemory(memory_size, selection, seed)
        classes = sum(len(t.classes) for t in tasks)
        if memory.size < classes:
            raise ValueError(
                f"`memory_size` must hold at least one example per class: "
                f"{classes} classes need memory_size >= {classes}. Received: "
                f"memory_size={memory_size!r}"
            )
    config = {
        "scenario": scenario,
        "method": method,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "alpha": alpha,
        "temperature": temperature,
        "warmup_epochs": warmup_epochs,
        "memory": memory.get_config() if memory else None,
        "seed": seed,
        "tasks": _fingerprint(tasks),
    }
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state_path = os.path.join(directory, _STATE_FILE)
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        saved = json.loads(json.dumps(config))
        if state.get("config") != saved:
            old = state.get("config", {})
            differ = sorted(k for k in saved if k != "tasks" and old.get(k) != saved[k])
            if old.get("tasks") != saved["tasks"]:
                changes = _task_changes(old.get("tasks"), saved["tasks"])
                differ.append(f"tasks: {'; '.join(changes)} changed")
            raise ValueError(
                f"{directory!r} holds a continual-learning run with other settings "
                f"({', '.join(differ)} differ); resuming it would mix two runs. "
                "Use another folder, or delete it to start again."
            )
    else:
        _check_no_outputs(directory, len(tasks))
        state = {"config": config, "finished": 0, "accuracy": []}
        _write_json(state_path, state)

    class_order = {c: i for i, c in enumerate(c for t in tasks for c in t.classes)}
    finished = state["finished"]
    model = None
    if 0 < finished < len(tasks):
        model = keras.models.load_model(
            os.path.join(directory, f"task_{finished}.keras"), compile=False
        )
        if memory is not None:
            memory.load(os.path.join(directory, f"memory_{finished}.npz"))
    run = _Run(
        build_model,
        scenario,
        method,
        class_order,
        memory,
        epochs,
        batch_size,
        learning_rate,
        alpha,
        temperature,
        warmup_epochs,
        verbose,
    )
    trained = []
    state.setdefault("warmup_epochs_run", [None] * finished)
    for step in range(finished, len(tasks)):
        step_seed = int(seed) * 1000 + step
        keras.utils.set_random_seed(step_seed)
        task = tasks[step]
        notes = {}
        model = _train_step(model, tasks, step, run, step_seed, notes)
        if memory is not None:
            x, y = task.train
            memory.update(model, x, y)
            memory.save(os.path.join(directory, f"memory_{step + 1}.npz"))
        _save_model(model, os.path.join(directory, f"task_{step + 1}.keras"))
        row = _evaluate(model, tasks, step, scenario, class_order)
        state["accuracy"].append(row)
        if method == "icarl":
            state.setdefault("nme_accuracy", [None] * step).append(
                _evaluate_nme(model, memory, tasks, step, class_order)
            )
        state["warmup_epochs_run"].append(notes.get("warmup_epochs"))
        state["finished"] = step + 1
        _write_json(state_path, state)
        trained.append(step)
    return SequenceResult(
        accuracy=np.asarray(state["accuracy"], "float64"),
        method=method,
        scenario=scenario,
        task_names=[t.name for t in tasks],
        directory=directory,
        trained=trained,
        warmup_epochs=list(state["warmup_epochs_run"]),
        nme_accuracy=(
            np.asarray(state["nme_accuracy"], "float64")
            if "nme_accuracy" in state and None not in state["nme_accuracy"]
            else None
        ),
    )


def _check_no_outputs(directory, num_tasks):
    """Raises if a new run's folder already holds a file it would write.

    Without `run.json` no earlier run wrote them: they are the user's, and
    saving the steps would overwrite them.
    """
    names = [f"task_{i}.keras" for i in range(1, num_tasks + 1)]
    names += [f"memory_{i}.npz" for i in range(1, num_tasks + 1)]
    found = [name for name in names if os.path.lexists(os.path.join(directory, name))]
    if found:
        raise FileExistsError(
            f"{directory!r} holds {', '.join(found)} but no {_STATE_FILE} of a "
            "continual-learning run, so these files are not a run's; learn() would "
            "overwrite them. Use another folder, or move them away."
        )


def _labels(task_y, task, scenario, class_order):
    if scenario == "task":
        return np.asarray([task.classes.index(int(v)) for v in task_y], "int64")
    return np.asarray([class_order[int(v)] for v in task_y], "int64")


@dataclasses.dataclass(frozen=True)
class _Run:
    """The settings of one `learn()` call that every step reads."""

    build_model: object
    scenario: str
    method: str
    class_order: dict
    memory: object
    epochs: int
    batch_size: int
    learning_rate: float
    alpha: float
    temperature: float
    warmup_epochs: object
    verbose: object


def _train_step(model, tasks, step, run, step_seed, notes):
    """Trains step `step` of `run` from `model` (the previous step's); returns it."""
    build_model, scenario, method = run.build_model, run.scenario, run.method
    class_order, memory, learning_rate = run.class_order, run.memory, run.learning_rate
    task = tasks[step]
    x, y = task.train
    fit = {"epochs": run.epochs, "batch_size": run.batch_size, "verbose": run.verbose}
    if method == "joint":
        return _train_joint(
            tasks[: step + 1], build_model, scenario, class_order, learning_rate, fit
        )
    if step == 0:
        model = _build(build_model, len(task.classes))
        _compile_plain(model, learning_rate)
        model.fit(x, _labels(y, task, scenario, class_order), shuffle=True, **fit)
        return model
    weight = 1.0 if method == "finetune" else run.alpha
    if scenario == "task":
        student = add_task_head(model, len(task.classes))
        labels = _labels(y, task, scenario, class_order)
        if run.warmup_epochs:
            history = warm_up_head(
                student,
                x,
                labels,
                epochs=run.warmup_epochs,
                learning_rate=learning_rate,
                batch_size=run.batch_size,
                seed=step_seed,
            )
            notes["warmup_epochs"] = int(history.best_epoch)
        trained = student
    else:
        seen = int(model.outputs[0].shape[-1])
        trained = grow_head(model, len(task.classes))
        # LwF.MC without a memory: the labels' cross-entropy over the new
        # classes only, the old logits kept by the KD term alone.
        new_only = method == "lwf"
        student = old_classes_view(trained, seen, new_classes_only=new_only)
        if memory is not None and len(memory):
            x_old, y_old = memory.arrays()
            x = np.concatenate([x, x_old])
            y = np.concatenate([np.asarray(y), y_old])
        labels = _labels(y, task, scenario, class_order) - (seen if new_only else 0)
    lwf = LearningWithoutForgetting(
        student, model, alpha=weight, temperature=run.temperature
    )
    lwf.compile(optimizer=keras.optimizers.Adam(learning_rate))
    lwf.fit(x, labels, shuffle=True, **fit)
    return trained


def _train_joint(tasks, build_model, scenario, class_order, learning_rate, fit):
    """A new model trained on every task in `tasks` (the upper bound)."""
    xs = np.concatenate([t.train[0] for t in tasks])
    if scenario == "class":
        model = _build(build_model, sum(len(t.classes) for t in tasks))
        ys = np.concatenate(
            [_labels(t.train[1], t, scenario, class_order) for t in tasks]
        )
        _compile_plain(model, learning_rate)
        model.fit(xs, ys, shuffle=True, **fit)
        return model
    model = _build(build_model, len(tasks[0].classes))
    for task in tasks[1:]:
        model = add_task_head(model, len(task.classes))
    labels, weights = [], []
    for k, task in enumerate(tasks):
        y = np.zeros(len(xs), "int64")
        w = np.zeros(len(xs), "float32")
        start = sum(len(t.train[1]) for t in tasks[:k])
        end = start + len(task.train[1])
        y[start:end] = _labels(task.train[1], task, scenario, class_order)
        w[start:end] = 1.0
        labels.append(y)
        weights.append(w)
    _compile_plain(model, learning_rate)
    model.fit(
        xs,
        labels if len(tasks) > 1 else labels[0],
        sample_weight=weights if len(tasks) > 1 else weights[0],
        shuffle=True,
        **fit,
    )
    return model


def compare(tasks, build_model, directory, methods=METHODS, **kwargs):
    """Runs `learn()` for several methods (baselines included), one subfolder each.

    Args:
        tasks: The `Task`s.
        build_model: As in `learn()`.
        directory: Parent folder; method `m` runs in `directory/m`.
        methods: The methods. Defaults to all: `("finetune", "lwf",
            "icarl", "joint")` (drop `"icarl"` for `scenario="task"`).
        **kwargs: Passed to `learn()`.

    Returns:
        `{method: SequenceResult}`.
    """
    methods = list(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(
            f"`methods` must be a non-empty list drawn from {METHODS}. Received: "
            f"methods={methods!r}"
        )
    return {
        m: learn(
            tasks,
            build_model,
            os.path.join(os.fspath(directory), m),
            method=m,
            **kwargs,
        )
        for m in methods
    }
