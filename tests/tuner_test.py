import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import models
from tests.helpers import digits, tiny_student, trained_teacher, weights_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def splits():
    (x, y), (xv, yv) = digits()["train"], digits()["val"]
    return (x[:400], y[:400]), (xv[:150], yv[:150])


def counting_teacher():
    """An uncompiled teacher (used as is) that counts calls and predicted rows."""
    teacher = models.teacher_cnn()
    teacher.set_weights(trained_teacher().get_weights())
    teacher.traced_calls, teacher.predicted = 0, 0
    call, predict = teacher.call, teacher.predict

    def counted_call(*args, **kwargs):
        teacher.traced_calls += 1
        return call(*args, **kwargs)

    def counted_predict(x, *args, **kwargs):
        teacher.predicted += len(x)
        return predict(x, *args, **kwargs)

    teacher.call, teacher.predict = counted_call, counted_predict
    return teacher


def build_student(hp):
    return models.student_mlp(hidden=hp.Choice("hidden", [8, 16]))


@pytest.mark.slow
def test_search_runs_teacher_once_keeps_it_and_returns_a_working_distiller(
    splits, tmp_path, capsys
):
    train, val = splits
    teacher = counting_teacher()
    before = [w.copy() for w in teacher.get_weights()]
    best_hp, distiller, tuner = kd.tune(
        teacher,
        build_student,
        train,
        val,
        max_trials=3,
        epochs=2,
        directory=tmp_path,
        overwrite=True,
    )
    assert weights_equal(teacher.get_weights(), before)
    # Once per example of the search: train and validation arrays, one pass each.
    assert teacher.predicted == len(train[0]) + len(val[0])
    traced_by_predict = teacher.traced_calls
    assert traced_by_predict <= 4  # tracing of predict only; trials never call it
    assert set(best_hp.values) >= {"temperature", "alpha", "hidden"}
    assert 1.0 <= best_hp["temperature"] <= 20.0 and 0.0 <= best_hp["alpha"] <= 1.0
    assert "| trial |" in capsys.readouterr().out
    assert isinstance(distiller, kd.Distiller)
    scores = [t.score for t in tuner.oracle.get_best_trials(3)]
    got = distiller.evaluate(*val, verbose=0, return_dict=True)["accuracy"]
    assert got == pytest.approx(scores[0], abs=1e-6)
    # Saved as found, it loads without Keras's optimizer-mismatch warning.
    distiller.save(tmp_path / "best.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras.saving.load_model(tmp_path / "best.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    history = distiller.fit(*train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Trial checkpoints hold the student only.
    for trial in tuner.oracle.trials:
        path = os.path.join(tuner.get_trial_dir(trial), "checkpoint.weights.h5")
        assert os.path.getsize(path) < 4 * 16 * 64 * 2 + 20_000
        assert os.path.getsize(path) < 4 * teacher.count_params() / 4


@pytest.mark.slow
def test_rerun_resumes_without_repeating_trials(splits, tmp_path):
    train, val = splits
    teacher = trained_teacher()
    built = []

    def counted(hp):
        built.append(1)
        return build_student(hp)

    kwargs = dict(epochs=1, directory=tmp_path, project_name="p")
    _, _, first = kd.tune(
        teacher, counted, train, val, max_trials=2, overwrite=True, **kwargs
    )
    scores = {t: first.oracle.trials[t].score for t in first.oracle.trials}
    built.clear()
    _, _, second = kd.tune(
        teacher, counted, train, val, max_trials=3, overwrite=False, **kwargs
    )
    assert len(second.oracle.trials) == 3
    for trial_id, score in scores.items():
        assert second.oracle.trials[trial_id].score == score
    # One new trial was built, plus one rebuild of the best for loading.
    assert len(built) == 2


def test_user_hyperparameters_override_the_search_space(splits):
    import keras_tuner as kt

    hm = kd.DistillerHyperModel(trained_teacher(), build_student)
    hp = kt.HyperParameters()
    hp.Fixed("alpha", 0.25)
    distiller = hm.build(hp)
    assert float(distiller.alpha) == pytest.approx(0.25)
    assert 1.0 <= float(distiller.temperature) <= 20.0
    assert hp.get("temperature") == 4.0  # the declared default


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"alpha_range": (-0.1, 1.0)},
            r"alpha_range.*\[0.0, 1.0\].*alpha_range=\(-0.1, 1.0\)",
        ),
        ({"alpha_range": (0.5, 1.5)}, "alpha_range=\\(0.5, 1.5\\)"),
        ({"temperature_range": (0.0, 5.0)}, r"temperature_range.*> 0.0"),
        ({"temperature_range": (5.0, 2.0)}, "min <= max"),
        (
            {"learning_rate_range": (float("nan"), float("nan"))},
            r"learning_rate_range.*finite numbers.*\(nan, nan\)",
        ),
        (
            {"learning_rate_range": (1e-3, float("inf"))},
            r"learning_rate_range.*finite numbers.*\(0.001, inf\)",
        ),
        ({"learning_rate_range": (-1e-3, 1e-2)}, r"learning_rate_range.*> 0.0"),
        ({"learning_rate": 0.0}, r"`learning_rate` must be > 0.*learning_rate=0.0"),
        ({"learning_rate": float("nan")}, r"`learning_rate` must be a finite"),
        ({"learning_rate": "fast"}, r"`learning_rate` must be a number"),
        (
            {"temperature_range": None, "alpha_range": (0.3, 0.3)},
            "search space is empty",
        ),
    ],
)
def test_bad_search_space(kwargs, message):
    student = models.student_mlp()
    with pytest.raises(ValueError, match=message):
        kd.DistillerHyperModel(trained_teacher(), student, **kwargs)


def test_untrained_teacher_warns(splits):
    import keras_tuner as kt

    keras.utils.set_random_seed(5)
    hm = kd.DistillerHyperModel(models.teacher_cnn(), build_student)
    model = hm.build(kt.HyperParameters())
    train, val = splits
    with pytest.warns(UserWarning, match="about chance"):
        hm.fit(
            kt.HyperParameters(),
            model,
            *train,
            validation_data=val,
            epochs=1,
            verbose=0,
        )


@pytest.mark.parametrize(
    "env, role",
    [
        ({}, None),
        ({"KERASTUNER_TUNER_ID": "chief"}, None),
        ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_TUNER_ID": "chief"}, "chief"),
        (
            {"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_TUNER_ID": "tuner1"},
            "worker",
        ),
    ],
)
def test_distributed_role_reads_keras_tuner_environment(env, role, monkeypatch):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert kd.tuner.distributed_role() == role


def test_import_without_keras_tuner_gives_install_hint():
    code = (
        "import sys; sys.modules['keras_tuner'] = None\n"
        "import keras_distill as kd\n"
        "try:\n"
        "    kd.tune(None, None, None, None)\n"
        "except ImportError as e:\n"
        "    print('HINT', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert "HINT" in out.stdout and "keras-distill[tuner]" in out.stdout, out.stderr[
        -2000:
    ]


@pytest.mark.parametrize("max_trials", [0, -3, 2.5, True])
def test_tune_refuses_a_search_without_trials(max_trials):
    x, y = digits()["train"]
    with pytest.raises(ValueError, match=r"max_trials"):
        kd.tune(
            trained_teacher(),
            lambda hp: tiny_student(),
            (x, y),
            (x, y),
            max_trials=max_trials,
            directory="/nonexistent/never-used",
        )


@pytest.mark.slow
def test_search_over_the_distillation_term_pays_for_the_teacher_once(splits, tmp_path):
    (x, y), (xv, yv) = splits
    train, val = (x[:160], y[:160]), (xv[:80], yv[:80])
    teacher = counting_teacher()
    terms = ["kd", kd.losses.DKDTerm(beta=2.0, name="dkd_b2")]
    best_hp, distiller, tuner = kd.tune(
        teacher,
        models.student_mlp(hidden=8),  # fixed: only the term is searched
        train,
        val,
        max_trials=2,
        epochs=1,
        directory=tmp_path,
        overwrite=True,
        verbose=0,
        temperature_range=(4.0, 4.0),
        alpha_range=(0.5, 0.5),
        terms=terms,
        batch_size=80,
    )
    assert teacher.predicted == len(train[0]) + len(val[0])
    tried = {
        t.hyperparameters["distillation_loss"] for t in tuner.oracle.trials.values()
    }
    assert tried == {"kd", "dkd_b2"}
    chosen = distiller.distillation_loss
    assert chosen.name == best_hp["distillation_loss"]
    if chosen.name == "dkd_b2":
        assert isinstance(chosen, kd.losses.DKDTerm) and chosen.beta == 2.0
        assert chosen is not terms[1]  # each trial has its own copy
    else:
        assert isinstance(chosen, kd.losses.KDTerm)
    assert "distillation_loss" in kd.tuner.trial_table(tuner)


@pytest.mark.parametrize(
    "terms, message",
    [
        ([], r"non-empty list"),
        ("kd", r"non-empty list.*terms='kd'"),
        (["kd", "dkdd"], r"terms\[1\]='dkdd'\. Did you mean 'dkd'"),
        (["kd", kd.losses.KDTerm(standardize=True)], r"two terms named 'kd'"),
    ],
)
def test_bad_term_choices(terms, message):
    with pytest.raises(ValueError, match=message):
        kd.DistillerHyperModel(trained_teacher(), models.student_mlp(), terms=terms)


def test_a_reused_trial_model_trains_exactly_like_a_fresh_one(splits):
    import keras_tuner as kt

    (x, y), _ = splits
    x, y = x[:64], y[:64]
    keras.utils.set_random_seed(0)
    hypermodel = kd.DistillerHyperModel(models.teacher_cnn(), build_student)

    def hp(hidden, temperature, alpha):
        values = kt.HyperParameters()
        values.Fixed("hidden", hidden)
        values.Fixed("temperature", temperature)
        values.Fixed("alpha", alpha)
        return values

    def train(model):
        data = hypermodel.dataset(x, y, batch_size=16)
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return model.student.get_weights()

    keras.utils.set_random_seed(3)
    fresh = hypermodel.build(hp(8, 2.0, 0.3))  # outside: never reused
    expected = train(fresh)
    with hypermodel.reusing_models():
        keras.utils.set_random_seed(4)
        first = hypermodel.build(hp(8, 7.0, 0.9))
        train(first)  # moves the weights and Adam's moments
        keras.utils.set_random_seed(3)
        again = hypermodel.build(hp(8, 2.0, 0.3))
        other = hypermodel.build(hp(16, 2.0, 0.3))
    assert again is first and other is not first
    assert float(again.temperature) == 2.0 and float(again.alpha) == pytest.approx(0.3)
    assert int(again.optimizer.iterations) == 0
    got = train(again)  # fresh weights, fresh optimizer: the fresh model's result
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert hypermodel.build(hp(8, 2.0, 0.3)) is not first  # outside again


@pytest.mark.slow
def test_hyperband_search_resumes_trials_from_their_checkpoints(splits, tmp_path):
    train, val = splits
    best_hp, distiller, tuner = kd.tune(
        trained_teacher(),
        lambda hp: models.student_mlp(hidden=8),
        (train[0][:256], train[1][:256]),
        val,
        epochs=2,
        tuner="hyperband",
        hyperband_factor=2,
        directory=tmp_path,
        verbose=0,
    )
    trials = list(tuner.oracle.trials.values())
    # Brackets of factor 2 up to 2 epochs: some trials continue an earlier
    # trial's checkpoint ("tuner/trial_id") for their second epoch.
    continued = [t for t in trials if "tuner/trial_id" in t.hyperparameters.values]
    assert len(trials) >= 3 and continued
    assert all(t.hyperparameters.values["tuner/initial_epoch"] == 1 for t in continued)
    assert isinstance(distiller, kd.Distiller)
    score = tuner.oracle.get_best_trials(1)[0].score
    got = distiller.evaluate(*val, verbose=0, return_dict=True)["accuracy"]
    assert got == pytest.approx(score, abs=1e-6)


def test_architecture_key_tells_students_apart_and_skips_unbuilt_ones():
    from keras_distill.tuner import _architecture_key

    same = [models.student_mlp(hidden=8, name=f"s{i}") for i in range(2)]
    assert _architecture_key(same[0]) == _architecture_key(same[1])
    assert _architecture_key(models.student_mlp(hidden=16)) != _architecture_key(
        same[0]
    )

    class Unbuilt(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(x)

    assert _architecture_key(Unbuilt()) is None  # weights unknown: never reused
