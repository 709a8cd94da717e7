"""Every registered term meets the term contract (a new term is covered by registering).

Parametrized over `kd.terms.names()`: one value per example, the
sample-weighted mean against NumPy, the config round trip, finite in
float16, the teacher cache (top-k where the term declares `accepts_topk`,
dense otherwise), LwF where the term reads logits without labels, a
distiller saved and loaded in a fresh process, and a row in docs/terms.md.
"""

import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import targets
from tests.helpers import digits_subset, tiny_student, trained_teacher

NAMES = kd.terms.names()
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "terms.md"


def inputs(term, batch=8, seed=0):
    """Teacher and student values the term reads: logits, else 4-D features."""
    rng = np.random.default_rng(seed)
    shape = (batch, 5) if "logits" in term.reads else (batch, 4, 4, 3)
    t, s = (rng.normal(size=shape).astype("float32") * 2 for _ in range(2))
    labels = rng.integers(0, 5, size=(batch,))
    return t, s, labels


def test_the_registry_has_the_built_in_methods():
    for name in ("kd", "mse", "dkd", "ctkd", "rkd_distance", "pkt", "sp", "at", "dist"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_one_value_per_example_and_the_weighted_mean(name):
    term = kd.terms.make(name)
    t, s, labels = inputs(term)
    values = np.asarray(term.compute(t, s, labels, 4.0))
    assert values.shape == (8,) and np.all(np.isfinite(values))
    weights = np.linspace(0.0, 2.0, 8).astype("float32")
    reduced = float(term.reduced(t, s, labels, 4.0, weights))
    np.testing.assert_allclose(
        reduced, (weights * values).sum() / 8, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        float(term.reduced(t, s, labels, 4.0)), values.mean(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_config_round_trip_gives_the_same_term(name):
    term = kd.terms.make(name)
    config = keras.saving.serialize_keras_object(term)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(term) and again.get_config() == term.get_config()
    t, s, labels = inputs(term)
    np.testing.assert_allclose(
        np.asarray(again.compute(t, s, labels, 2.0)),
        np.asarray(term.compute(t, s, labels, 2.0)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("name", NAMES)
def test_finite_on_float16_inputs(name):
    term = kd.terms.make(name)
    t, s, labels = inputs(term)
    values = np.asarray(
        term.compute(t.astype("float16"), s.astype("float16"), labels, 4.0)
    )
    assert values.dtype == np.float32 and np.all(np.isfinite(values))


@pytest.mark.parametrize("name", NAMES)
def test_the_declarations_are_well_formed(name):
    term = kd.terms.make(name)
    assert term.name == name and name.isidentifier()
    assert set(term.reads) <= set(kd.terms.SOURCES) and term.reads
    for flag in (
        "needs_labels",
        "elementwise",
        "uses_temperature",
        "accepts_topk",
        "relational",
    ):
        assert isinstance(getattr(term, flag), bool), flag
    assert isinstance(term.epoch_logs(), dict)
    assert isinstance(term.parameter_variables(), dict)


@pytest.mark.parametrize(
    "name", [n for n in NAMES if "logits" in kd.terms.TERMS[n].reads]
)
def test_the_teacher_cache_feeds_it(name):
    term = kd.terms.make(name)
    t, s, labels = inputs(term)
    if term.accepts_topk:
        k = t.shape[-1]  # k = classes: the top-k form is exact
        topk = {
            targets.TOPK_LOGITS_KEY: np.sort(t, axis=-1)[:, ::-1][:, :k],
            targets.TOPK_INDICES_KEY: np.argsort(-t, axis=-1)[:, :k],
            targets.TOPK_REST_KEY: np.full((8,), -np.inf, "float32"),
        }
        np.testing.assert_allclose(
            np.asarray(term.compute_topk(topk, s, labels, 4.0)),
            np.asarray(term.compute(t, s, labels, 4.0)),
            rtol=1e-4,
            atol=1e-5,
        )
    else:
        with pytest.raises(NotImplementedError, match="top-k"):
            term.compute_topk({}, s, labels, 4.0)
    x = np.zeros((8, 1), "float32")
    student = keras.Sequential([keras.Input((1,)), keras.layers.Dense(5)])
    teacher = keras.Sequential([keras.Input((1,)), keras.layers.Dense(5)])
    distiller = kd.Distiller(student, teacher, distillation_loss=term)
    dense = {targets.TEACHER_LOGITS_KEY: t}
    report = distiller.compute_loss_report(x, labels, s, None, dense)
    np.testing.assert_allclose(
        float(report.distillation_loss),
        float(term.reduced(t, s, labels, 4.0)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in NAMES
        if "logits" in kd.terms.TERMS[n].reads and not kd.terms.TERMS[n].needs_labels
    ],
)
def test_lwf_distills_the_old_heads_with_it(name):
    x, y = digits_subset(n=32)
    old = kd.continual.add_task_head(keras.models.clone_model(trained_teacher()), 4)
    teacher = keras.models.clone_model(old)
    teacher.set_weights(old.get_weights())
    lwf = kd.continual.LearningWithoutForgetting(
        kd.continual.add_task_head(old, 3), teacher, distillation_loss=name
    )
    report = lwf.compute_loss_report(x, y % 3, lwf(x))
    assert np.isfinite(float(report.total))


def test_lwf_refuses_a_term_that_needs_labels():
    old = kd.continual.add_task_head(keras.models.clone_model(trained_teacher()), 4)
    with pytest.raises(ValueError, match="needs? labels"):
        kd.continual.LearningWithoutForgetting(
            kd.continual.add_task_head(old, 3), old, distillation_loss="dkd"
        )


LOAD = """
import sys, keras, numpy as np
import keras_distill
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    model = keras.models.load_model(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.load(path + ".npy"), atol=1e-6)
    print(path, [t.name for t in model.distillation_terms])
"""


def test_a_distiller_with_each_term_loads_in_a_fresh_process(tmp_path):
    x, y = digits_subset(n=64)
    teacher = trained_teacher()
    paths = []
    for name in NAMES:
        term = kd.terms.make(name)
        if "logits" not in term.reads:
            hints = [kd.hints.Hint("conv2", "conv1", loss=term, adaptor=None)]
            distiller = kd.Distiller(kd.models.student_cnn(), teacher, hints=hints)
        else:
            distiller = kd.Distiller(tiny_student(), teacher, distillation_loss=term)
        distiller.compile(optimizer="adam")
        distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
        path = str(tmp_path / f"{name}.keras")
        distiller.save(path)
        np.save(path + ".npy", distiller.predict(x[:8], verbose=0))
        paths.append(path)
    np.save(tmp_path / "x.npy", x[:8])
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "x.npy"), *paths],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == len(NAMES)


def test_docs_terms_has_a_row_for_every_registered_class():
    text = DOCS.read_text()
    for name in NAMES:
        cls = kd.terms.TERMS[name]
        assert f"`{cls.__name__}`" in text, (
            f"docs/terms.md has no row for {cls.__name__}"
        )
