"""Every script in examples/ runs offline, in quick mode, and prints a result."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path, tmp_path):
    env = {
        **os.environ,
        "KERAS_DISTILL_QUICK": "1",
        "PYTHONPATH": ROOT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MPLBACKEND": "Agg",
    }
    out = subprocess.run(
        [sys.executable, path],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip(), "the example printed nothing"


def test_there_are_examples():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {
        "quickstart.py",
        "curriculum.py",
        "tuning.py",
        "export_and_serve.py",
        "transfer.py",
        "lifelong.py",
        "continual.py",
        "multi_teacher.py",
        "feature_hints.py",
    } <= names


def _code_lines(text):
    """Code lines without blank lines and lint markers; `epochs(N)` read as N."""
    import re

    lines = []
    for line in text.splitlines():
        line = re.sub(r"\s+# (fmt: skip|noqa: E402)$", "", line)
        line = re.sub(r"epochs=epochs\((\d+)\)", r"epochs=\1", line)
        if line.strip():
            lines.append(line.rstrip())
    return lines


def test_the_quickstart_example_is_the_readmes_quickstart():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = readme.split("## Quickstart", 1)[1].split("```python\n", 1)[1]
    block = block.split("```", 1)[0]
    with open(os.path.join(ROOT, "examples", "quickstart.py")) as f:
        example = f.read().split("# --- the README's Quickstart ---\n", 1)[1]
    assert _code_lines(example) == _code_lines(block)
