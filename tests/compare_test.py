"""`keras-distill compare`: scratch, scratch + augmentation and KD, per seed."""

import json

import numpy as np
import pytest

from keras_distill.app import cli, compare

CONFIG = """\
data: digits
output: {out}
teacher: {{epochs: 2}}
student: {{hidden: 8}}
distill: {{epochs: 1}}
"""


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(out=tmp_path / "run"))
    return path


@pytest.mark.slow
def test_compare_trains_every_row_and_judges_it_against_the_control(tmp_path):
    result = compare.compare(str(_config(tmp_path)), seeds=2)
    assert set(result["rows"]) == set(compare.ROWS) and result["split"] == "test"
    for row, entry in result["rows"].items():
        assert len(entry["values"]) == 2
        assert all(0.0 <= v <= 1.0 for v in entry["values"])
        control = result["rows"][result["control"]]["values"]
        if row != result["control"]:
            gain = np.subtract(entry["values"], control)
            assert entry["gain"]["mean"] == pytest.approx(gain.mean())
            assert entry["verdict"] in ("helps", "hurts", "no clear difference")
    folder = tmp_path / "run_compare"
    assert "| kd_aug |" in (folder / "compare.md").read_text()
    assert json.loads((folder / "run.json").read_text())["seeds"] == 2
    assert len((folder / "progress.jsonl").read_text().splitlines()) == 8


class Killed(Exception):
    """Stands for Ctrl-C or kill -9 in the middle of a run."""


def test_an_interrupted_comparison_resumes_where_it_stopped(tmp_path, monkeypatch):
    calls, kill = [], [True]

    def fake_row(row, cfg, teacher, splits, train, evaluation, keep, seed):
        calls.append((row, seed))
        if kill[0] and len(calls) == 3:
            raise Killed
        return 0.5 + 0.1 * compare.ROWS.index(row) + 0.01 * seed

    monkeypatch.setattr(compare, "_train_row", fake_row)
    config = str(_config(tmp_path))
    with pytest.raises(Killed):
        compare.compare(config, seeds=2)
    calls.clear()
    kill[0] = False
    result = compare.compare(config, seeds=2)
    # The two finished rows are not trained again; the rest are.
    assert len(calls) == 6 and ("scratch", 0) not in calls
    # The better row without a teacher is the control: scratch_aug here.
    assert result["control"] == "scratch_aug"
    kd = result["rows"]["kd"]
    assert kd["gain"]["mean"] == pytest.approx(0.1) and kd["verdict"] == "helps"
    assert result["rows"]["scratch"]["verdict"] == "hurts"
    # A finished comparison is refused without --overwrite (nothing replaced).
    with pytest.raises(FileExistsError, match="run_compare"):
        compare.compare(config, seeds=2)


def test_bad_arguments_are_refused(tmp_path, capsys):
    config = str(_config(tmp_path))
    for seeds in (1, 0, True):
        with pytest.raises(ValueError, match="integer >= 2"):
            compare.compare(config, seeds=seeds)
    text = tmp_path / "t.yaml"
    text.write_text(
        f"data: movie_reviews\noutput: {tmp_path / 'lm'}\n"
        "teacher: {model: causal_lm}\nstudent: {model: causal_lm}\n"
    )
    assert cli.main(["compare", str(text)]) == 2
    assert "does not handle language models" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"Received examples of shape \(4, 4, 4, 4\)"):
        compare.augmentation((4, 4, 4, 4))
    assert not (tmp_path / "run_compare").exists()


def test_augmentation_fits_the_examples():
    images = np.ones((2, 8, 8, 1), "float32")
    signals = np.ones((2, 40, 1), "float32")
    for batch in (images, signals):
        out = compare.augmentation(batch.shape[1:])(batch, seed=[0, 1])
        assert out.shape == batch.shape
