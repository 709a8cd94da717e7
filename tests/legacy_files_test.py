"""Files saved before the terms/ and distiller/ packages (issue 28) still load.

`tests/data/legacy/*.keras` were written by main 8fac406 (see
`tests/data/legacy/make_legacy_files.py`); each loads in a fresh process
with today's code and predicts exactly what it predicted when it was saved.
"""

import pathlib
import subprocess
import sys

import pytest

LEGACY = pathlib.Path(__file__).parent / "data" / "legacy"
CASES = ["kd", "terms", "hints", "ensemble", "lwf"]

LOAD = """
import sys
import keras, numpy as np
import keras_distill
model = keras.models.load_model(sys.argv[1])
saved = np.load(sys.argv[2])
out = model.predict(saved["x"], verbose=0)
out = out[-1] if isinstance(out, list) else out
np.testing.assert_allclose(out, saved["predictions"], rtol=1e-6, atol=1e-6)
print(type(model).__name__, [t.name for t in model.distillation_terms])
"""


def test_every_case_has_its_file():
    assert sorted(p.stem for p in LEGACY.glob("*.keras")) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_a_file_saved_before_the_move_loads_and_predicts_the_same(name):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD,
            str(LEGACY / f"{name}.keras"),
            str(LEGACY / f"{name}.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
