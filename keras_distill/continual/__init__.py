"""Lifelong learning: Learning without Forgetting on top of the Distiller.

A model trained on task 1 becomes the teacher for task 2. The new model keeps
the old model's trunk and heads and learns the new task; on the new task's
data (and, with an exemplar memory, a few stored old examples), its old
outputs are distilled towards the old model's responses, so what it knew is
kept, while the new outputs learn the new labels.

Two settings, as the literature separates them (van de Ven, Tuytelaars and
Tolias, "Three types of incremental learning", Nature Machine Intelligence
2022):

- task-incremental (`scenario="task"`): a head per task, the task id known
  at test time (`add_task_head`);
- class-incremental (`scenario="class"`): one head that grows with every
  task, no task id at test time (`grow_head`; LwF.MC and iCaRL-style
  distillation with an `ExemplarMemory`).

`learn()` runs a whole sequence of tasks (each step's model teaches the
next), saves every step's model and resumes after an interruption;
`accuracy_metrics()`, `format_table()` and `plot_accuracy_matrices()` give
the numbers continual-learning papers report.

References: Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI
2017 (https://arxiv.org/abs/1606.09282); Rebuffi, Kolesnikov, Sperl and
Lampert, "iCaRL: Incremental Classifier and Representation Learning", CVPR
2017 (https://arxiv.org/abs/1611.07725).

The package, one concern per module: `heads` (the models of the two
settings, the warm-up, `alpha_for_lambda`), `lwf`
(`LearningWithoutForgetting`), `memory` (`herding`, `ExemplarMemory`),
`tasks` (`Task`, `split_classes`), `metrics` (`accuracy_metrics`, the tables,
the heat map, `SequenceResult`) and `run` (`learn()`, `compare()`). Every
name is also `kd.continual.<name>`.
"""

import importlib

# The classes saved `.keras` files name (`ClassSlice` in class-incremental
# models, `LearningWithoutForgetting` in a saved distiller) are registered at
# start-up, so `keras.models.load_model()` works after `import keras_distill`.
from keras_distill.continual import heads, lwf  # noqa: F401
from keras_distill.continual.heads import ClassSlice
from keras_distill.continual.lwf import LearningWithoutForgetting

# The other modules are imported on first use of one of their names.
_LAZY_MODULES = ("heads", "lwf", "memory", "metrics", "run", "tasks")
_LAZY_NAMES = {
    "add_task_head": "heads",
    "alpha_for_lambda": "heads",
    "grow_head": "heads",
    "holdout_split": "heads",
    "lambda_for_alpha": "heads",
    "old_classes_view": "heads",
    "warm_up_head": "heads",
    "ExemplarMemory": "memory",
    "SELECTIONS": "memory",
    "herding": "memory",
    "SequenceResult": "metrics",
    "accuracy_metrics": "metrics",
    "format_matrix": "metrics",
    "format_table": "metrics",
    "plot_accuracy_matrices": "metrics",
    "METHODS": "run",
    "compare": "run",
    "learn": "run",
    "SCENARIOS": "tasks",
    "Task": "tasks",
    "split_classes": "tasks",
}

__all__ = ["ClassSlice", "LearningWithoutForgetting", *_LAZY_MODULES, *_LAZY_NAMES]


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"keras_distill.continual.{name}")
    if name in _LAZY_NAMES:
        module = importlib.import_module(f"keras_distill.continual.{_LAZY_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_distill.continual' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
