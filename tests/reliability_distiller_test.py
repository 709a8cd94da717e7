"""Issue 29 (reliability, round 3): the Distiller's silent and unclear cases."""

import warnings

import keras
import numpy as np
import pytest

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(activation=None, classes=10):
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(classes, activation=activation)]
    )


def _distiller(teacher=None, **kwargs):
    distiller = kd.Distiller(_model(), teacher or _model(), **kwargs)
    distiller.compile(optimizer="adam")
    return distiller


@keras.saving.register_keras_serializable(package="reliability_distiller_test")
class SoftmaxTeacher(keras.Model):
    """A subclassed teacher returning probabilities (no last layer to read)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return keras.ops.softmax(self.dense(x))


def _probability_teacher():
    teacher = SoftmaxTeacher()
    teacher(X[:1])
    return teacher


# -- Silent 1: an unbuilt teacher ---------------------------------------------


def test_an_unbuilt_teacher_is_refused():
    teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"teacher .* is not built.*load_weights"):
        kd.Distiller(_model(), teacher)


def test_a_saved_distiller_with_a_subclassed_teacher_still_loads(tmp_path):
    distiller = _distiller(_probability_teacher(), teacher_outputs="probabilities")
    distiller.fit(X, Y, epochs=1, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), distiller(X), atol=1e-6)


# -- Silent 2: a sigmoid output -----------------------------------------------


@pytest.mark.parametrize("form", ["activation_layer", "dense"])
@pytest.mark.parametrize("declared", ["logits", "probabilities"])
def test_a_teacher_ending_in_sigmoid_is_refused(form, declared):
    if form == "dense":
        teacher = _model("sigmoid")
    else:
        teacher = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(10),
                keras.layers.Activation("sigmoid"),
            ]
        )
    with pytest.raises(ValueError, match="ends in a sigmoid"):
        kd.Distiller(_model(), teacher, teacher_outputs=declared)


# -- Silent 3: the output check in every entry point --------------------------


@pytest.mark.parametrize("entry", ["train_on_batch", "test_on_batch", "evaluate"])
def test_a_probability_teacher_read_as_logits_is_refused_outside_fit(entry):
    distiller = _distiller(_probability_teacher())
    call = getattr(distiller, entry)
    kwargs = {"verbose": 0} if entry == "evaluate" else {}
    with pytest.raises(ValueError, match="returns probabilities.*teacher_outputs"):
        call(X, Y, **kwargs)


def test_train_on_batch_with_the_right_declaration_trains():
    distiller = _distiller(_probability_teacher(), teacher_outputs="probabilities")
    for _ in range(2):
        logs = distiller.train_on_batch(X, Y, return_dict=True)
    assert np.isfinite(logs["loss"])


# -- Silent 4: evaluate on non-finite inputs ----------------------------------


def test_evaluate_refuses_nan_inputs_even_when_the_loss_stays_finite():
    # relu swallows the NaN on CPU: the loss alone would look fine.
    student = keras.Sequential(
        [keras.Input((8,)), keras.layers.ReLU(), keras.layers.Dense(10)]
    )
    teacher = keras.Sequential(
        [keras.Input((8,)), keras.layers.ReLU(), keras.layers.Dense(10)]
    )
    distiller = kd.Distiller(student, teacher)
    distiller.compile(optimizer="adam")
    x = X.copy()
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="evaluation batch are NaN or infinite"):
        distiller.evaluate(x, Y, verbose=0)
    assert np.all(np.isfinite(distiller.evaluate(X, Y, verbose=0)))


# -- Silent 5: boolean labels --------------------------------------------------


def test_bool_labels_are_refused():
    distiller = _distiller()
    with pytest.raises(ValueError, match="booleans.*astype\\('int32'\\)"):
        distiller.fit(X, Y > 4, epochs=1, verbose=0)


def test_bool_labels_in_a_dataset_are_refused():
    import tensorflow as tf

    distiller = _distiller()
    data = tf.data.Dataset.from_tensor_slices((X, Y > 4)).batch(8)
    with pytest.raises(ValueError, match="booleans"):
        distiller.fit(data, epochs=1, verbose=0)


# -- Silent 6: class_weight naming a missing class ----------------------------


def test_class_weight_with_an_unknown_class_is_refused():
    distiller = _distiller()
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match="names class 15.*10 classes"):
        distiller.fit(X, Y, class_weight={0: 1.0, 15: 2.0}, epochs=1, verbose=0)
    for a, b in zip(before, distiller.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    distiller.fit(X, Y, class_weight={0: 1.0, 9: 2.0}, epochs=1, verbose=0)


# -- Silent 7-9: the loss's from_logits against student_outputs ---------------


@pytest.mark.parametrize(
    "loss",
    [
        "sparse_categorical_crossentropy",
        keras.losses.SparseCategoricalCrossentropy(),
        keras.losses.sparse_categorical_crossentropy,
        keras.losses.CategoricalCrossentropy(),
        "categorical_crossentropy",
    ],
)
def test_a_probability_loss_on_a_logits_student_is_refused(loss):
    distiller = kd.Distiller(_model(), _model())
    with pytest.raises(
        ValueError, match=r"from_logits=False.*student_outputs='logits'"
    ):
        distiller.compile(optimizer="adam", loss=loss)


def test_a_logits_loss_on_a_probability_student_is_refused():
    distiller = kd.Distiller(
        _model("softmax"), _model(), student_outputs="probabilities"
    )
    with pytest.raises(ValueError, match="from_logits=True.*'probabilities'"):
        distiller.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


def test_the_keras_io_student_loss_fn_is_checked_too():
    distiller = kd.Distiller(_model(), _model())
    with pytest.raises(ValueError, match="from_logits=False"):
        distiller.compile(
            optimizer="adam",
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(),
        )


# -- Silent 10: alpha=1 with no labels ----------------------------------------


def test_alpha_one_without_labels_is_refused():
    import tensorflow as tf

    distiller = _distiller(alpha=1.0)
    with pytest.raises(ValueError, match="alpha=1.0.*has none"):
        distiller.fit(X, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="alpha=1.0"):
        distiller.fit(tf.data.Dataset.from_tensor_slices(X).batch(8), verbose=0)
    with pytest.raises(ValueError, match="alpha=1.0"):
        distiller.train_on_batch(X)
    distiller.fit(X, Y, epochs=1, verbose=0)  # with labels: fine


# -- Silent 12: a BackupAndRestore resume replacing the parameters ------------


def test_resuming_a_backup_warns_when_it_replaces_the_temperature(tmp_path):
    backup = str(tmp_path / "backup")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    first = _distiller(temperature=4.0)
    with pytest.raises(KeyboardInterrupt):
        first.fit(
            X,
            Y,
            epochs=3,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()],
        )
    resumed = _distiller(temperature=8.0)
    with pytest.warns(UserWarning, match=r"temperature=4 \(this distiller had 8\)"):
        resumed.fit(
            X,
            Y,
            epochs=3,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup)],
        )


def test_loading_a_file_with_the_same_parameters_does_not_warn(tmp_path):
    distiller = _distiller(temperature=3.0)
    distiller.fit(X, Y, epochs=1, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Loading weights restored")
        keras.models.load_model(path)


# -- Unclear: shared layers, output structures --------------------------------


def test_a_student_sharing_the_teachers_layers_is_refused():
    teacher = _model()
    student = keras.Sequential([keras.Input((8,)), teacher.layers[0]])
    with pytest.raises(ValueError, match="shares 2 weights with the teacher"):
        kd.Distiller(student, teacher)


def test_a_two_output_teacher_with_a_one_output_student_is_refused():
    inputs = keras.Input((8,))
    teacher = keras.Model(
        inputs, [keras.layers.Dense(10)(inputs), keras.layers.Dense(10)(inputs)]
    )
    with pytest.raises(ValueError, match=r"has 2 outputs .* has one, \(None, 10\)"):
        kd.Distiller(_model(), teacher)
