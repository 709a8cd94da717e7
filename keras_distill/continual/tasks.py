"""A sequence of tasks: `Task`, `split_classes` and their checks."""

import dataclasses

import numpy as np

SCENARIOS = ("task", "class")

# -- Tasks -----------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """One task of a sequence: its training and test arrays and its classes.

    Labels are the original class ids (e.g. 6 and 7), not renumbered.

    Attributes:
        train: `(x, y)` training arrays.
        test: `(x, y)` test arrays.
        classes: The task's class ids, in order.
        name: A display name. Defaults to the classes, e.g. `"6-7"`.
    """

    train: tuple
    test: tuple
    classes: tuple
    name: str = ""

    def __post_init__(self):
        self.classes = tuple(int(c) for c in self.classes)
        if not self.name:
            self.name = "-".join(str(c) for c in self.classes)


def split_classes(arrays, groups, train_split="train", test_split="test"):
    """Splits a data set into one `Task` per group of classes.

    Args:
        arrays: A dict of `(x, y)` splits, e.g. `kd.data.load_digits()`.
        groups: The classes of each task, e.g. `[[0, 1], [2, 3], ...]`.
        train_split: Key of the training split. Defaults to `"train"`.
        test_split: Key of the test split. Defaults to `"test"`.

    Returns:
        A list of `Task`s.

    Example:

    ```python
    tasks = kd.continual.split_classes(
        kd.data.load_digits(), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    )
    ```
    """
    groups = [list(g) for g in groups]
    if not groups or any(not g for g in groups):
        raise ValueError(
            f"`groups` must be a non-empty list of non-empty class lists. "
            f"Received: groups={groups!r}"
        )
    tasks = []
    for group in groups:
        parts = []
        for split in (train_split, test_split):
            x, y = arrays[split]
            keep = np.isin(y, group)
            missing = sorted(set(group) - set(np.unique(y[keep]).tolist()))
            if missing:
                raise ValueError(
                    f"Classes {missing} of group {group} have no examples in the "
                    f"{split!r} split."
                )
            parts.append((x[keep], y[keep]))
        tasks.append(Task(parts[0], parts[1], tuple(group)))
    return tasks


def _check_tasks(tasks, scenario):
    if scenario not in SCENARIOS:
        raise ValueError(
            f"`scenario` must be one of {SCENARIOS} (task- or class-incremental). "
            f"Received: scenario={scenario!r}"
        )
    if not isinstance(tasks, list | tuple) or not tasks:
        raise ValueError(
            "`tasks` must be a non-empty list of `kd.continual.Task`s (see "
            f"`split_classes`). Received: tasks={tasks!r}"
        )
    tasks = list(tasks)
    seen = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ValueError(
                f"`tasks[{i}]` must be a `kd.continual.Task`. Received: {task!r}"
            )
        if len(set(task.classes)) != len(task.classes):
            raise ValueError(
                f"Task {i} ({task.name}) lists a class twice: {task.classes}."
            )
        for split, (x, y) in (("train", task.train), ("test", task.test)):
            y = np.asarray(y)
            if len(y) == 0 or len(x) != len(y):
                raise ValueError(
                    f"Task {i} ({task.name}) needs a non-empty {split} split with "
                    f"as many inputs as labels. Received {len(x)} inputs and "
                    f"{len(y)} labels."
                )
            present = set(np.unique(y).tolist())
            extra = sorted(present - set(task.classes))
            if extra:
                raise ValueError(
                    f"Task {i} ({task.name}) has {split} labels {extra} outside its "
                    f"classes {task.classes}."
                )
            absent = [c for c in task.classes if c not in present]
            if absent:
                raise ValueError(
                    f"Task {i} ({task.name}) lists classes {absent} that have no "
                    f"example in its {split} split (labels present: "
                    f"{sorted(present)}); a class must be learned and tested. "
                    "Drop them from `classes` or add their examples."
                )
        if scenario == "class":
            for c in task.classes:
                if c in seen:
                    raise ValueError(
                        "In class-incremental learning every class belongs to one "
                        f"task. Class {c} is in task {seen[c]} and task {i} "
                        f"({task.name})."
                    )
                seen[c] = i
    return tasks
