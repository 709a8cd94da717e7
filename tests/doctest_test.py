"""The `pycon` examples in the library's docstrings run and print what they say."""

import doctest
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_distill"
WITH_EXAMPLES = sorted(
    str(p.relative_to(PACKAGE.parent).with_suffix("")).replace("/", ".")
    for p in PACKAGE.rglob("*.py")
    if "```pycon" in p.read_text()
)


def test_there_are_examples():
    assert len(WITH_EXAMPLES) >= 10, WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    module = importlib.import_module(name.removesuffix(".__init__"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} failed"
