"""DIST (Huang et al. 2022), added as one module: every place a term is used."""

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill.app import config
from keras_distill.cache import TeacherCache
from tests.helpers import digits, digits_subset, tiny_student, trained_teacher


def numpy_dist(t, s, temperature, beta=1.0, gamma=1.0):
    """The authors' formulas (DIST_KD's `inter/intra_class_relation`), in NumPy."""

    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def pearson(a, b):  # along axis 1
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / (
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8
        )

    p_s, p_t = softmax(s.astype("float64")), softmax(t.astype("float64"))
    inter = 1 - pearson(p_s, p_t).mean()
    intra = 1 - pearson(p_s.T, p_t.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def test_the_batch_mean_is_the_papers_loss():
    rng = np.random.default_rng(0)
    t, s = (rng.normal(size=(16, 10)).astype("float32") * 3 for _ in range(2))
    term = kd.terms.get_term("dist")
    assert isinstance(term, kd.terms.DISTTerm)
    for temperature, beta, gamma in ((1.0, 1.0, 1.0), (4.0, 2.0, 0.5)):
        term = kd.terms.DISTTerm(beta=beta, gamma=gamma)
        values = np.asarray(term.compute(t, s, None, temperature))
        assert values.shape == (16,)
        np.testing.assert_allclose(
            values.mean(), numpy_dist(t, s, temperature, beta, gamma), rtol=1e-5
        )
    assert float(np.asarray(term.compute(t, t, None, 4.0)).max()) < 1e-4


def test_bad_weights_are_refused_by_name():
    with pytest.raises(ValueError, match="beta"):
        kd.terms.DISTTerm(beta=-1.0)


def test_it_trains_from_python_and_a_yaml_config_and_saves(tmp_path):
    cfg = config.parse("output: x\ndistill: {loss: [kd, {dist: {beta: 2.0}}]}\n")
    terms = config.build_terms(cfg["distill"]["loss"])
    assert [type(t).__name__ for t in terms] == ["KDTerm", "DISTTerm"]
    assert terms[1].beta == 2.0
    x, y = digits_subset(n=128)
    distiller = kd.Distiller(tiny_student(), trained_teacher(), distillation_loss=terms)
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert "dist_loss" in history.history
    assert history.history["dist_loss"][1] < history.history["dist_loss"][0]
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert loaded.distillation_loss[1].beta == 2.0
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )


def test_it_trains_from_the_teacher_cache_as_online(tmp_path):
    x, y = digits_subset(n=96)
    teacher = trained_teacher()
    cache = TeacherCache.build(teacher, x, tmp_path / "cache", verbose=0)
    losses = []
    for data in (cache.dataset(x, y, batch_size=32), None):
        distiller = kd.Distiller(tiny_student(), teacher, distillation_loss="dist")
        distiller.compile(optimizer="adam")
        if data is None:
            result = distiller.evaluate(
                x, y, batch_size=32, verbose=0, return_dict=True
            )
        else:
            result = distiller.evaluate(data, verbose=0, return_dict=True)
        losses.append(result["distillation_loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def test_lwf_distills_every_old_head_with_it():
    x, y = digits_subset(n=64)
    old = kd.continual.add_task_head(keras.models.clone_model(trained_teacher()), 4)
    old_teacher = keras.models.clone_model(old)
    old_teacher.set_weights(old.get_weights())
    student = kd.continual.add_task_head(old, num_classes=3)  # two old heads
    lwf = kd.continual.LearningWithoutForgetting(
        student, old_teacher, distillation_loss="dist"
    )
    lwf.compile(optimizer=keras.optimizers.Adam(0.05))
    lwf.fit(x, y % 3, epochs=2, verbose=0)  # the old heads move away
    y_pred = lwf(x)
    report = lwf.compute_loss_report(x, y % 3, y_pred)
    teacher = [np.asarray(o) for o in old_teacher(x)]
    expected = sum(
        numpy_dist(t, np.asarray(s), 2.0) for t, s in zip(teacher, y_pred[:-1])
    )
    assert expected > 1e-3
    np.testing.assert_allclose(float(report.distillation_loss), expected, rtol=1e-4)


def test_the_tuner_searches_it(tmp_path):
    (x, y), (xv, yv) = digits()["train"], digits()["val"]
    _, distiller, tuner = kd.tune(
        trained_teacher(),
        kd.models.student_mlp(hidden=8),
        (x[:160], y[:160]),
        (xv[:80], yv[:80]),
        max_trials=2,
        epochs=1,
        directory=tmp_path,
        overwrite=True,
        verbose=0,
        temperature_range=(4.0, 4.0),
        alpha_range=(0.5, 0.5),
        terms=["kd", "dist"],
        batch_size=80,
    )
    tried = {
        t.hyperparameters["distillation_loss"] for t in tuner.oracle.trials.values()
    }
    assert tried == {"kd", "dist"}
