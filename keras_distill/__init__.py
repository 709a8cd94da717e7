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

# Every class the library saves in `.keras` files or callback configs is
# registered here, so `keras.models.load_model()` works after
# `import keras_distill` alone.
from keras_distill import (  # noqa: F401
    callbacks,
    continual,
    hints,
    losses,
    recipes,
    schedules,
    transfer,
)
from keras_distill.distiller import Distiller
from keras_distill.version import __version__

# Other submodules and names are imported on first use, so that
# `import keras_distill` works without the optional extras (keras-tuner,
# tfds) and stays light.
_LAZY_MODULES = (
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
    "serving",
    "targets",
    "text",
    "transfer",
    "tuner",
)
_LAZY_NAMES = {
    "export_student": "export",
    "tune": "tuner",
    "DistillerHyperModel": "tuner",
}

__all__ = ["Distiller", "__version__", *_LAZY_MODULES, *_LAZY_NAMES]


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"keras_distill.{name}")
    if name in _LAZY_NAMES:
        module = importlib.import_module(f"keras_distill.{_LAZY_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_distill' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
