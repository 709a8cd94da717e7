import pytest

from keras_distill.app import config
from keras_distill.app.config import ConfigError

GOOD = """\
data: digits
output: runs/x
distill:
  alpha: 0.2
  temperature: 3
schedules:
  temperature: {kind: cosine, start: 8.0, end: 2.0, steps: 10}
"""


def test_defaults_are_filled_in():
    cfg = config.parse(GOOD)
    assert cfg["distill"]["alpha"] == 0.2 and cfg["distill"]["temperature"] == 3.0
    assert cfg["teacher"]["model"] == "teacher_cnn" and cfg["batch_size"] == 64
    schedule = config.build_schedule(cfg["schedules"]["temperature"])
    assert float(schedule(0)) == pytest.approx(8.0)
    assert float(schedule(10)) == pytest.approx(2.0)


def test_unknown_key_names_line_and_suggests_closest():
    text = GOOD.replace("  temperature: 3", "  temprature: 3")
    with pytest.raises(
        ConfigError,
        match=r"run.yaml:5: unknown key 'temprature' in distill\. Did you mean 'temperature'\?",
    ):
        config.parse(text, source="run.yaml")


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r":3: unknown key 'epochs' in the top level"):
        config.parse("data: digits\noutput: x\nepochs: 3\n")


def test_wrong_type_names_key_and_line():
    text = GOOD.replace("alpha: 0.2", "alpha: high")
    with pytest.raises(
        ConfigError, match=r":4: distill.alpha must be a number\. Received: 'high'"
    ):
        config.parse(text)
    with pytest.raises(ConfigError, match=r":2: batch_size must be an integer"):
        config.parse("output: x\nbatch_size: 3.5\n")


def test_out_of_range_values():
    with pytest.raises(ConfigError, match=r"alpha=1.5"):
        config.parse(GOOD.replace("alpha: 0.2", "alpha: 1.5"))
    with pytest.raises(ConfigError, match=r"schedules.temperature.kind"):
        config.parse(GOOD.replace("kind: cosine", "kind: wavy"))


def test_required_and_empty():
    with pytest.raises(ConfigError, match="'output' is required"):
        config.parse("data: digits\n")
    with pytest.raises(ConfigError, match="empty"):
        config.parse("")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.parse("data: [unclosed\n")


def test_safe_load_only():
    with pytest.raises(ConfigError, match=r":1: output: could not determine"):
        config.parse("output: !!python/object/apply:os.system ['echo hi']\n")


def test_curriculum_section_is_optional_and_checked():
    assert "curriculum" not in config.parse(GOOD)
    cfg = config.parse(GOOD + "curriculum: {pacing: root}\n")
    assert cfg["curriculum"] == {"pacing": "root", "min_fraction": 0.25, "epochs": 10}
    with pytest.raises(ConfigError, match=r"curriculum: .*kind='wavy'"):
        config.parse(GOOD + "curriculum: {pacing: wavy}\n")
    with pytest.raises(ConfigError, match=r"curriculum: .*min_fraction"):
        config.parse(GOOD + "curriculum: {min_fraction: 1.5}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pace'.*'pacing'"):
        config.parse(GOOD + "curriculum: {pace: root}\n")
