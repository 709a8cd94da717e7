"""Distillation terms: one module per method, registered by name.

A term (`DistillationTerm`) compares the teacher's and the student's logits
or features and returns one value per example; it declares what it needs
and supports (see `base`). `register("name")` makes a term a plug-in usable
from Python, YAML configs and the tuner; `get_term` resolves a name, a
term, a saved config or an older loss object into a term.

Every module of this package except its infrastructure (`base`,
`registry`, `common`, `legacy`) is a method and is imported here, which
registers its terms: a new method is one new module, nothing else.

Example:

```python
import keras_distill as kd

term = kd.terms.get_term("dkd")        # DKDTerm()
kd.terms.names("features")             # the terms a Hint may use
```
"""

import importlib
import pkgutil

from keras_distill.terms.base import SOURCES, DistillationTerm
from keras_distill.terms.registry import (
    TERMS,
    TermLoss,
    entry,
    get_term,
    make,
    names,
    register,
)

_INFRASTRUCTURE = ("base", "registry", "common", "legacy")
# The methods, one module each, imported for their registration.
# The first methods keep their historic order in listings; later ones follow
# alphabetically.
_FIRST = ("kd", "mse", "feature", "dkd", "ctkd", "rkd", "pkt", "sp", "at")
BUILTIN_MODULES = tuple(
    sorted(
        (
            info.name
            for info in pkgutil.iter_modules(__path__)
            if not info.name.startswith("_") and info.name not in _INFRASTRUCTURE
        ),
        key=lambda name: (_FIRST.index(name) if name in _FIRST else len(_FIRST), name),
    )
)
for _module in BUILTIN_MODULES:
    importlib.import_module(f"keras_distill.terms.{_module}")

from keras_distill.terms.at import AttentionTransferTerm  # noqa: E402
from keras_distill.terms.ctkd import CTKDTerm  # noqa: E402
from keras_distill.terms.dkd import DKDTerm  # noqa: E402
from keras_distill.terms.feature import FeatureDistanceTerm  # noqa: E402
from keras_distill.terms.kd import KDTerm  # noqa: E402
from keras_distill.terms.mse import LogitMSETerm, MSETerm  # noqa: E402
from keras_distill.terms.pkt import PKTTerm  # noqa: E402
from keras_distill.terms.rkd import RKDAngleTerm, RKDDistanceTerm  # noqa: E402
from keras_distill.terms.sp import SimilarityPreservingTerm  # noqa: E402

__all__ = [
    "SOURCES",
    "TERMS",
    "DistillationTerm",
    "TermLoss",
    "entry",
    "get_term",
    "make",
    "names",
    "register",
    "AttentionTransferTerm",
    "CTKDTerm",
    "DKDTerm",
    "FeatureDistanceTerm",
    "KDTerm",
    "LogitMSETerm",
    "MSETerm",
    "PKTTerm",
    "RKDAngleTerm",
    "RKDDistanceTerm",
    "SimilarityPreservingTerm",
]


def __getattr__(name):
    # A registered term class by its class name (`kd.terms.DISTTerm`).
    for cls in TERMS.values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'keras_distill.terms' has no attribute {name!r}")
