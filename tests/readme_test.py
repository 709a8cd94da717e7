"""The README's Python blocks run as written, in order, in a fresh process."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(page=README):
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run_program(program, cwd, timeout):
    """`program` in a fresh Python process; the completed process, checked."""
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_readme_has_a_complete_quickstart():
    blocks = python_blocks()
    assert blocks, "no python blocks in README.md"
    first = blocks[0]
    for name in ("load_digits", "teacher_cnn", "Distiller(", "fit(", "export_student"):
        assert name in first, name


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path):
    result = run_program("\n\n".join(python_blocks()), tmp_path, timeout=900)
    # The first accuracy printed is the Quickstart's distilled student.
    accuracy = float(re.findall(r"'accuracy': ([0-9.]+)", result.stdout)[0])
    assert accuracy > 0.85  # about 0.93
    assert "student perplexity:" in result.stdout
    assert (tmp_path / "distiller.keras").is_file()
    assert (tmp_path / "serving" / "digits" / "1" / "saved_model.pb").is_file()


def test_the_readme_names_every_registered_term():
    # The README's term list is checked against the registry, so a new
    # method's module cannot land without its line (docs/terms.md's rows are
    # checked by tests/terms_conformance_test.py).
    from keras_distill.terms import registry

    text = README.read_text()
    section = text[text.index("## Distillation terms") :]
    section = section[: section.index("\n## ", 1)]
    missing = [n for n in registry.names() if f'`"{n}"`' not in section]
    assert not missing, f"README.md's 'Distillation terms' lacks {missing}"


@pytest.mark.slow
def test_the_adding_a_method_page_runs_as_written(tmp_path):
    """docs/adding_a_method.md's Python blocks, in order, in a fresh process."""
    blocks = python_blocks(README.parent / "docs" / "adding_a_method.md")
    assert len(blocks) >= 2
    program = "\n\n".join(blocks) + "\nprint([type(t).__name__ for t in terms])\n"
    result = run_program(program, tmp_path, timeout=600)
    assert "'kd_loss', 'l1_loss'" in result.stdout
    assert "['KDTerm', 'L1Logits']" in result.stdout
