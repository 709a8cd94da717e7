"""keras_distill: knowledge distillation for Keras 3.

Example:

```python
import keras_distill as kd

distiller = kd.Distiller(student=student, teacher=teacher, alpha=0.1, temperature=4.0)
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(train_ds, validation_data=val_ds, epochs=10)
kd.export_student(distiller, "serving/digits")
```
"""

import importlib
import sys

from keras_distill.version import __version__

# The modules whose classes the library saves in `.keras` files or callback
# configs: imported at start-up, so `keras.models.load_model()` works after
# `import keras_distill` alone.
_SAVED_CLASSES = (
    "callbacks",
    "continual",
    "distiller",
    "hints",
    "losses",
    "recipes",
    "schedules",
    "transfer",
)


def _import_saved_classes():
    """Imports (registers) every module of `_SAVED_CLASSES` (idempotent)."""
    for name in _SAVED_CLASSES:
        importlib.import_module(f"keras_distill.{name}")
    globals()["Distiller"] = importlib.import_module(
        "keras_distill.distiller"
    ).Distiller


def _started_as_command() -> bool:
    """Whether this import is `python -m keras_distill ...` locating its `__main__`.

    Python sets `sys.argv[0]` to `"-m"` while it imports the package of a
    `-m` module. The command imports the library itself when a command runs,
    so `python -m keras_distill --help` answers without TensorFlow.
    """
    if getattr(sys.modules.get("keras_distill_cli"), "COMMAND_RUNNING", False):
        return True  # `keras-distill ...`: it checks its config before TensorFlow
    argv = list(getattr(sys, "orig_argv", ()))
    if sys.argv[:1] != ["-m"] or "-m" not in argv[:-1]:
        return False
    return argv[argv.index("-m") + 1] == "keras_distill"


if not _started_as_command():
    _import_saved_classes()

# Other submodules and names are imported on first use, so that
# `import keras_distill` works without the optional extras (keras-tuner,
# tfds) and stays light.
_LAZY_MODULES = (
    "applications",
    "augment",
    "cache",
    "callbacks",
    "checks",
    "continual",
    "curriculum",
    "data",
    "decoding",
    "distribute",
    "export",
    "hints",
    "losses",
    "models",
    "params",
    "recipes",
    "schedules",
    "sequence_kd",
    "serving",
    "targets",
    "text",
    "transfer",
    "tuner",
)
_LAZY_NAMES = {
    "Distiller": "distiller",
    "export_student": "export",
    "tune": "tuner",
    "DistillerHyperModel": "tuner",
}

__all__ = ["__version__", *_LAZY_MODULES, *_LAZY_NAMES]


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"keras_distill.{name}")
    if name in _LAZY_NAMES:
        module = importlib.import_module(f"keras_distill.{_LAZY_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_distill' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
