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


TERMS = """\
output: runs/x
distill:
  loss:
    - kd: {standardize: true}
    - dkd: {alpha: 1.0, beta: 2.0}
  loss_weights: [0.7, 0.3]
  epochs: 20
schedules:
  dkd_weight: {kind: linear, start: 0.05, end: 0.3, steps: 19}
"""


def test_every_registered_logit_term_is_accepted_by_name():
    from keras_distill import terms

    for name in terms.names("logits"):
        cls = terms.TERMS[name]
        cfg = config.parse(f"output: x\ndistill: {{loss: {name}}}\n")
        (term,) = config.build_terms(cfg["distill"]["loss"])
        assert type(term) is cls and term.name == name
        assert config.term_weights(cfg, [term]) is None  # one term: the plain loss


def test_weighted_terms_with_options_and_a_weight_schedule():
    from keras_distill import losses

    cfg = config.parse(TERMS)
    kd_term, dkd_term = config.build_terms(cfg["distill"]["loss"])
    assert isinstance(kd_term, losses.KDTerm) and kd_term.standardize is True
    assert isinstance(dkd_term, losses.DKDTerm) and not dkd_term.standardize
    assert (dkd_term.alpha, dkd_term.beta) == (1.0, 2.0)
    assert config.term_weights(cfg, [kd_term, dkd_term]) == [0.7, 0.3]
    schedule = config.build_schedule(cfg["schedules"]["dkd_weight"])
    assert float(schedule(19)) == pytest.approx(0.3)
    # Scheduling the weight of a single term gives it a weight variable.
    cfg = config.parse(
        "output: x\ndistill: {loss: dkd}\n"
        "schedules:\n  dkd_weight: {kind: linear, start: 0.05, end: 1.0, steps: 19}\n"
    )
    assert config.term_weights(cfg, config.build_terms("dkd")) == [1.0]


def test_ctkd_wraps_a_term_with_options_and_schedules_its_reversal():
    from keras_distill import losses

    cfg = config.parse(
        "output: x\ndistill:\n  loss: {ctkd: {term: {dkd: {beta: 1.0}}, t_end: 10.0}}\n"
        "schedules:\n  ctkd_reversal: {kind: cosine, start: 0.0, end: 1.0, steps: 10}\n"
    )
    (term,) = config.build_terms(cfg["distill"]["loss"])
    assert isinstance(term, losses.CTKDTerm) and term.t_end == 10.0
    assert isinstance(term.term, losses.DKDTerm) and term.term.beta == 1.0


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "- dkd: {alpha",
            "- dkdd: {alpha",
            r"r.yaml:5: distill.loss\[1\]: unknown "
            r"distillation term 'dkdd'\. Did you mean 'dkd'\? Known terms: kd, mse, mae, cosine, dkd",
        ),
        (
            "beta: 2.0",
            "bta: 2.0",
            r"r.yaml:5: distill.loss\[1\].dkd: unknown option "
            r"'bta' of the term dkd\. Did you mean 'beta'\? Its options: alpha, beta, "
            r"standardize, name\.",
        ),
        (
            "beta: 2.0",
            "beta: -2.0",
            r"r.yaml:5: distill.loss\[1\].dkd: `beta` must "
            r"be >= 0\. Received: beta=-2.0",
        ),
        (
            "standardize: true",
            "standardize: 1",
            r"r.yaml:4: distill.loss\[0\].kd: "
            r"`standardize` must be True or False",
        ),
        (
            "[0.7, 0.3]",
            "[0.7]",
            r"r.yaml:6: distill.loss_weights needs one weight per "
            r"term of distill.loss \(2: kd, dkd\)\. Received 1: \[0.7\]",
        ),
        (
            "[0.7, 0.3]",
            "[0.7,\n    -0.3]",
            r"r.yaml:7: distill.loss_weights\[1\]: "
            r"`dkd_weight` must be >= 0 \(the weight of a distillation term\)",
        ),
        (
            "[0.7, 0.3]",
            "[0.7, heavy]",
            r"r.yaml:6: distill.loss_weights\[1\] must be a "
            r"number",
        ),
        (
            "dkd_weight:",
            "dkd_wieght:",
            r"r.yaml:9: unknown key 'dkd_wieght' in "
            r"schedules.*Did you mean 'dkd_weight'\? Valid keys: alpha, temperature, "
            r"kd_weight, dkd_weight\.",
        ),
        (
            "start: 0.05",
            "start: -0.05",
            r"r.yaml:9: schedules.dkd_weight: `dkd_weight`"
            r" must be >= 0 .* at epoch 0",
        ),
        (
            "- dkd: {alpha: 1.0, beta: 2.0}",
            "- kd",
            r"r.yaml:5: distill.loss\[1\]: the "
            r"term name 'kd' is used twice.*\{kd: \{name: kd_2\}\}",
        ),
        (
            "- kd: {standardize: true}",
            "- 3",
            r"r.yaml:4: distill.loss\[0\] must be a "
            r"term name",
        ),
    ],
)
def test_term_mistakes_name_the_line_and_the_expected_value(old, new, message):
    assert old in TERMS
    with pytest.raises(ConfigError, match=message):
        config.parse(TERMS.replace(old, new), source="r.yaml")


def test_two_terms_of_one_kind_need_their_own_names():
    cfg = config.parse(
        "output: x\ndistill:\n  loss: [kd, {kd: {standardize: true, name: ls_kd}}]\n"
        "schedules:\n  ls_kd_weight: {kind: constant, value: 2.0}\n"
    )
    terms = config.build_terms(cfg["distill"]["loss"])
    assert [t.name for t in terms] == ["kd", "ls_kd"]
    with pytest.raises(
        ConfigError, match=r":2: distill.loss: .*cannot be named 'student'"
    ):
        config.parse("output: x\ndistill: {loss: {kd: {name: student}}}\n")
    with pytest.raises(
        ConfigError, match=r":2: distill.loss.ctkd: .*Did you mean 'dkd'"
    ):
        config.parse("output: x\ndistill: {loss: {ctkd: {term: dkx}}}\n")
    with pytest.raises(ConfigError, match=r":2: distill.loss must name at least one"):
        config.parse("output: x\ndistill: {loss: []}\n")


def test_tune_terms_are_checked_like_distill_loss():
    cfg = config.parse("output: x\ntune:\n  terms: [kd, {dkd: {beta: 2.0}}]\n")
    kd_term, dkd_term = config.build_terms(cfg["tune"]["terms"], path=("tune", "terms"))
    assert (kd_term.name, dkd_term.name, dkd_term.beta) == ("kd", "dkd", 2.0)
    assert "terms" not in config.parse("output: x\n")["tune"]
    with pytest.raises(
        ConfigError, match=r"r.yaml:3: tune.terms\[1\]: unknown distillation term 'dk'"
    ):
        config.parse("output: x\ntune:\n  terms: [kd, dk]\n", source="r.yaml")


def test_the_example_configs_are_valid():
    import pathlib

    folder = pathlib.Path(__file__).resolve().parent.parent / "examples" / "configs"
    paths = sorted(folder.glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        cfg = config.load(path)
        config.build_terms(cfg["distill"]["loss"], str(path))
    terms = config.load(folder / "digits_terms.yaml")
    assert terms["distill"]["loss_weights"] == [0.7, 0.3]
    assert set(terms["schedules"]) == {"dkd_weight"}


@pytest.mark.parametrize("section", ["teacher", "distill"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("-0.05", r"must be > 0.*Received: -0.05"),
        ("0", r"must be > 0.*Received: 0"),
        (".nan", r"must be a finite number"),
        (".inf", r"must be a finite number"),
        ("1.0e+39", r"float32"),
    ],
)
def test_learning_rates_must_be_finite_and_positive(section, value, message):
    text = f"output: x\n{section}:\n  learning_rate: {value}\n"
    with pytest.raises(
        ConfigError, match=rf"run.yaml:3: .*{section}.learning_rate.*{message}"
    ):
        config.parse(text, source="run.yaml")
    config.parse(text.replace(value, "0.001"), source="run.yaml")
