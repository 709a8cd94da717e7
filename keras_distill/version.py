"""The package's version, and which extra installs each optional package.

Standard library only: the `keras-distill` command reads it without
importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

# The import name of each optional package -> (its pip name, the extra that
# installs it). pyproject.toml's `[project.optional-dependencies]` is the
# other half of this table (tests/reliability_packaging_test.py checks both).
EXTRAS = {
    "yaml": ("PyYAML", "app"),
    "matplotlib": ("matplotlib", "app"),
    "sklearn": ("scikit-learn", "data"),
    "mnist1d": ("mnist1d", "data"),
    "tensorflow_datasets": ("tensorflow-datasets", "tfds"),
    "keras_tuner": ("keras-tuner", "tuner"),
    "keras_hub": ("keras-hub", "lm"),
}
# keras-hub pins the full `tensorflow` wheel (which clashes with
# tensorflow-cpu), so no extra can carry it; the Makefile installs it so.
_NO_DEPS = {"keras_hub": "keras-hub==0.32.0 tensorflow-text==2.21.1"}


class MissingExtraError(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra."""


def install_hint(module: str) -> str:
    """The one-line instruction that installs the optional `module`."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise KeyError(
            f"{module!r} is not an optional package of keras_distill; expected one "
            f"of {sorted(EXTRAS)}."
        )
    package, extra = EXTRAS[top]
    if top in _NO_DEPS:
        return f'`pip install ".[{extra}]"` and `pip install --no-deps {_NO_DEPS[top]}`'
    return (
        f'`pip install "keras-distill[{extra}]"` (from a clone: '
        f'`pip install ".[{extra}]"`; or `pip install {package}`)'
    )


def require(module: str, purpose: str):
    """Imports the optional `module`, or raises one line naming its extra.

    Args:
        module: The import name, e.g. `"yaml"` or `"sklearn.datasets"`.
        purpose: What needs it, e.g. `"Reading a YAML config"` (starts the
            message).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: `module` is not installed (a `ModuleNotFoundError`,
            so `except ImportError` still catches it).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        # Only the optional package itself being absent is an extra to install;
        # a broken installation keeps its own error.
        if missing.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtraError(
            f"{purpose} needs the `{module.split('.')[0]}` package, which is not "
            f"installed: {install_hint(module)}.",
            name=missing,
        ) from None
