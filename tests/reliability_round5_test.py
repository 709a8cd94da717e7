"""Issue 29's probe (reliability, round 5): four silently wrong results."""

import keras
import numpy as np
import pytest

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(activation=None):
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(10, activation=activation)]
    )


# -- r16: kd.tune resumes only the same search ------------------------------------


def _tune(tmp_path, teacher, build_student, **kwargs):
    return kd.tune(
        teacher,
        build_student,
        (X, Y),
        (X, Y),
        max_trials=kwargs.pop("max_trials", 1),
        epochs=1,
        directory=str(tmp_path),
        verbose=0,
        **kwargs,
    )


def _relu_student(hp):
    return _model("relu")


def _plain_student(hp):
    return _model()


@pytest.mark.parametrize(
    "change, match",
    [
        # Each was silently resumed on main: the old search's results came back.
        ({"teacher": "other"}, r"another teacher"),
        ({"build_student": _relu_student}, r"another student builder"),
        ({"build_student": "model"}, r"another student builder"),
        (
            {"temperature_range": (1.0, 5.0)},
            r"temperature_range was \[1.0, 20.0\], now \[1.0, 5.0\]",
        ),
    ],
)
def test_tune_refuses_another_search_space(tmp_path, change, match):
    pytest.importorskip("keras_tuner")
    teacher = _model()
    _tune(tmp_path, teacher, _plain_student)
    change = dict(change)
    other_teacher = change.pop("teacher", None)
    if other_teacher:
        teacher = _model()  # the same architecture, other weights
    builder = change.pop("build_student", _plain_student)
    if builder == "model":  # the same shapes as the first builder's
        builder = _model("relu")
    with pytest.raises(ValueError, match=match):
        _tune(tmp_path, teacher, builder, **change)


def test_tune_resumes_the_same_search_space(tmp_path):
    pytest.importorskip("keras_tuner")
    teacher = _model()
    _tune(tmp_path, teacher, _model())
    # The defaults given explicitly, a student rebuilt (other layer names)
    # and more trials: the same search resumes.
    _, _, search = _tune(
        tmp_path, teacher, _model(), temperature_range=(1, 20), max_trials=2
    )
    assert len(search.oracle.trials) == 2


# -- u07: two CurriculumSchedulers on one curriculum's fraction --------------------


def _curriculum():
    return kd.curriculum.Curriculum.from_teacher(_model(), X, Y, verbose=0, seed=1)


def _distiller():
    distiller = kd.Distiller(_model(), _model())
    distiller.compile(optimizer="adam")
    return distiller


def test_schedulers_of_a_curriculum_and_its_copy_refused():
    import copy

    curriculum = _curriculum()
    twin = copy.copy(curriculum)  # shares the fraction variable
    schedulers = [
        kd.callbacks.CurriculumScheduler(curriculum, 0.5),
        kd.callbacks.CurriculumScheduler(twin, 1.0),
    ]
    distiller = _distiller()
    before = [w.copy() for w in distiller.student.get_weights()]
    # Was: trained at fraction 1.0 while the first logged 0.5.
    with pytest.raises(
        ValueError,
        match=r"Two `CurriculumScheduler`s.*Constant\(value=0.5\).*"
        r"Constant\(value=1.0\).*a copy of it",
    ):
        distiller.fit(curriculum.dataset(8), epochs=1, callbacks=schedulers, verbose=0)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights())
    )
    # Each alone still trains.
    distiller.fit(curriculum.dataset(8), epochs=1, callbacks=schedulers[:1], verbose=0)


def test_two_curriculum_schedulers_are_named_in_the_refusal():
    curriculum = _curriculum()
    schedulers = [
        kd.callbacks.CurriculumScheduler(curriculum, 0.5),
        kd.callbacks.CurriculumScheduler(
            curriculum, kd.curriculum.pacing("linear", 0.2, 3)
        ),
    ]
    # Was: "<keras_distill.callbacks.CurriculumScheduler object at 0x...>".
    with pytest.raises(
        ValueError, match=r"CurriculumScheduler\(Curriculum\(32 examples.*Linear\("
    ):
        _distiller().fit(
            curriculum.dataset(8), epochs=1, callbacks=schedulers, verbose=0
        )


# -- u10: NaN or infinite difficulty scores ---------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_curriculum_names_the_first_bad_score(bad):
    scores = np.linspace(0.0, 1.0, 32)
    scores[[9, 20]] = bad
    # Was: "Received np.float64(nan)", the NumPy repr.
    with pytest.raises(ValueError, match=rf"Received {bad!r} for example 9 \(2 of 32"):
        kd.curriculum.Curriculum(X, Y, difficulty=scores)
    with pytest.raises(ValueError, match=rf"Received {bad!r} for example 9 \(2 of 32"):
        kd.curriculum.StreamingCurriculum(_source(X), scores)


def _source(x):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, Y))


def test_streaming_scorer_names_the_teacher_and_the_example():
    x = X.copy()
    x[21] = np.nan  # in the scoring pass's third batch of 8
    # Was: "`difficulty` must be finite", a score the user never gave.
    with pytest.raises(
        ValueError, match=r"The teacher's outputs .* Received nan for example 21"
    ):
        kd.curriculum.StreamingCurriculum.from_teacher(
            _model(), _source(x), batch_size=8, verbose=0
        )


def test_streaming_curriculum_orders_by_the_scores_given():
    # Distinct in float64, equal in float32: the order was the source's.
    scores = 1.0 + (32 - np.arange(32)) * 1e-9
    curriculum = kd.curriculum.StreamingCurriculum(_source(X), scores)
    np.testing.assert_array_equal(curriculum.order, np.argsort(scores))
    big = np.where(np.arange(32) == 4, 1e39, 0.0)  # finite: the hardest, not inf
    assert kd.curriculum.StreamingCurriculum(_source(X), big).order[-1] == 4


# -- x07: a composite teacher's members under the plain teacher's rule ------------


class _SoftmaxTeacher(keras.Model):
    """Subclassed, so its last activation is unknown: ends in a softmax."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x, training=False):
        return keras.ops.softmax(self.dense(x))

    @property
    def output_shape(self):
        return (None, 4)


GROUPS = [[0, 1], [2, 3]]


def _softmax_member():
    member = _SoftmaxTeacher()
    member(X[:1])
    return member


def _two_class_student():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])


@pytest.mark.parametrize("many", [False, True])
def test_grouped_teacher_of_a_subclassed_softmax_read_as_logits_refused(many):
    grouped = kd.transfer.GroupedTeacher(_softmax_member(), GROUPS)  # "logits"
    teacher = [grouped, grouped] if many else grouped
    distiller = kd.Distiller(_two_class_student(), teacher)
    distiller.compile(optimizer="adam")
    before = [w.copy() for w in distiller.student.get_weights()]
    # Was: trained on the grouped log of softmax(probabilities), silently.
    with pytest.raises(
        ValueError,
        match=r"inside GroupedTeacher '.*' \(.*\) returns probabilities, but "
        r"teacher_outputs='logits'",
    ):
        distiller.fit(X, Y % 2, epochs=1, verbose=0)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights())
    )
    # Declared as what it is, it trains.
    right = kd.transfer.GroupedTeacher(
        _softmax_member(), GROUPS, teacher_outputs="probabilities"
    )
    distiller = kd.Distiller(_two_class_student(), right)
    distiller.compile(optimizer="adam")
    distiller.fit(X, Y % 2, epochs=1, verbose=0)


def test_teacher_cache_of_a_grouped_softmax_read_as_logits_refused(tmp_path):
    grouped = kd.transfer.GroupedTeacher(_softmax_member(), GROUPS)
    with pytest.raises(ValueError, match=r"inside GroupedTeacher .* probabilities"):
        kd.cache.TeacherCache.build(grouped, X, str(tmp_path / "cache"), verbose=0)


def test_a_softmax_model_nested_as_the_last_layer_is_seen():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="softmax")]
    )
    wrapped = keras.Sequential([keras.Input((8,)), inner])
    # Was: accepted as logits (the last layer, a model, has no activation).
    with pytest.raises(ValueError, match="returns probabilities"):
        kd.transfer.GroupedTeacher(wrapped, GROUPS)
    with pytest.raises(ValueError, match="returns probabilities"):
        kd.Distiller(_model(), keras.Sequential([keras.Input((8,)), _wrapped10()]))


def _wrapped10():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(10, activation="softmax")]
    )
