import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import models
from keras_distill.hints import Hint
from tests.helpers import digits_subset, tiny_student, trained_teacher, weights_equal


def cnn_student(filters=4, seed=1):
    keras.utils.set_random_seed(seed)
    return models.student_cnn(filters=filters)


def features(model, name, x):
    view = keras.Model(model.inputs[0], model.get_layer(name).output)
    return np.asarray(view(x, training=False)).astype("float64")


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class FeatureCNN(keras.Model):
    """A subclassed CNN that returns its features with `return_features=True`."""

    def __init__(self, filters=4, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.classes = filters, classes
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(classes)

    def call(self, x, training=None, return_features=False):
        h = self.conv(x)
        out = self.dense(self.flatten(h))
        if return_features:
            return out, {"conv": h}
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "classes": self.classes,
        }


# -- Training -----------------------------------------------------------------


def test_fit_trains_adaptor_and_student_not_teacher():
    x, y = digits_subset(n=256)
    teacher, student = trained_teacher(), cnn_student()
    distiller = kd.Distiller(student, teacher, hints=[Hint("conv2", "conv1")])
    (adaptor,) = distiller.hint_adaptors
    assert isinstance(adaptor, keras.layers.Conv2D) and adaptor.kernel_size == (1, 1)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    adaptor_before = [w.copy() for w in adaptor.get_weights()]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=3, batch_size=64, verbose=0)
    assert weights_equal(teacher.get_weights(), teacher_before)
    assert not weights_equal(adaptor.get_weights(), adaptor_before)
    assert not weights_equal(student.get_weights(), student_before)
    hint = history.history["hint_loss"]
    assert hint[-1] < hint[0], hint
    assert {"loss", "student_loss", "distillation_loss", "accuracy"} <= set(
        history.history
    )
    expected = student.trainable_weights + adaptor.trainable_weights
    assert [id(w) for w in distiller.trainable_weights] == [id(w) for w in expected]


def test_hint_loss_value_and_total_match_numpy():
    x, y = digits_subset(n=64)
    teacher, student = trained_teacher(), cnn_student(filters=16)
    distiller = kd.Distiller(
        student,
        teacher,
        alpha=0.3,
        hints=[Hint("conv1", "conv1", weight=2.0, adaptor=None)],
        hint_weight=0.5,
    )
    assert isinstance(distiller.hint_adaptors[0], keras.layers.Identity)
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    t, s = features(teacher, "conv1", x), features(student, "conv1", x)
    expected = 2.0 * ((s - t) ** 2).reshape(64, -1).mean(-1).mean()
    np.testing.assert_allclose(got["hint_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(
        got["loss"],
        0.3 * got["student_loss"] + 0.7 * got["distillation_loss"] + 0.5 * expected,
        rtol=1e-5,
    )
    # The KD term is the one computed without hints (one teacher pass for both).
    plain = kd.Distiller(student, teacher, alpha=0.3)
    plain.compile(optimizer="sgd")
    no_hint = plain.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert "hint_loss" not in no_hint
    np.testing.assert_allclose(
        got["distillation_loss"], no_hint["distillation_loss"], rtol=1e-6
    )
    distiller.hint_weight = 0.0
    zero = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(zero["loss"], no_hint["loss"], rtol=1e-6)


def test_several_hints_log_each_hint_beside_their_weighted_sum():
    x, y = digits_subset(n=64)
    teacher, student = trained_teacher(), cnn_student(filters=16)
    hints = [
        Hint("conv1", "conv1", adaptor=None),
        Hint("conv1", "conv1", weight=2.0, adaptor=None, loss="cosine"),
    ]
    assert kd.hints.log_names(hints) == ["hint_conv1_loss", "hint_conv1_2_loss"]
    distiller = kd.Distiller(student, teacher, hints=hints)
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    t = features(teacher, "conv1", x).reshape(64, -1)
    s = features(student, "conv1", x).reshape(64, -1)
    mse = ((s - t) ** 2).mean(-1).mean()
    cos = (
        1 - (s * t).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
    ).mean()
    np.testing.assert_allclose(got["hint_conv1_loss"], mse, rtol=1e-5)
    np.testing.assert_allclose(got["hint_conv1_2_loss"], cos, rtol=1e-4)
    np.testing.assert_allclose(got["hint_loss"], mse + 2.0 * cos, rtol=1e-4)
    history = distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert {"hint_loss", "hint_conv1_loss", "hint_conv1_2_loss"} <= set(history.history)


def test_dense_adaptor_for_vector_features():
    x, y = digits_subset(n=64)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.Flatten()(inputs)
    )
    student = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    distiller = kd.Distiller(
        student, trained_teacher(), hints=[Hint("dense", "hidden")]
    )
    (adaptor,) = distiller.hint_adaptors
    assert isinstance(adaptor, keras.layers.Dense) and adaptor.units == 64
    before = [w.copy() for w in adaptor.get_weights()]
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not weights_equal(adaptor.get_weights(), before)


def test_subclassed_teacher_and_student_with_return_features(tmp_path):
    x, y = digits_subset(n=64)
    keras.utils.set_random_seed(0)
    teacher, student = FeatureCNN(filters=8), FeatureCNN(filters=2)
    teacher(x[:1])  # built (unbuilt teachers are refused)
    distiller = kd.Distiller(student, teacher, hints=[Hint("conv", "conv")])
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert "hint_loss" in history.history
    (adaptor,) = distiller.hint_adaptors
    assert adaptor.kernel.shape == (1, 1, 2, 8)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    adaptor_weights = [w.copy() for w in adaptor.get_weights()]
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert weights_equal(teacher.get_weights(), teacher_weights)
    assert not weights_equal(adaptor.get_weights(), adaptor_weights)
    distiller.save(tmp_path / "sub.keras")
    loaded = keras.models.load_model(tmp_path / "sub.keras")
    assert weights_equal(loaded.hint_adaptors[0].get_weights(), adaptor.get_weights())
    # The optimizer state is restored: its variables cover student and adaptor,
    # not the (subclassed, restored) teacher.
    assert int(loaded.optimizer.iterations) == 6
    assert len(loaded.optimizer.variables) == len(distiller.optimizer.variables)
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), distiller.evaluate(x, y, verbose=0), rtol=1e-5
    )


# -- Saving -------------------------------------------------------------------


def test_save_load_round_trip_with_hints(tmp_path):
    x, y = digits_subset(n=64)
    hint = Hint("conv2", "conv1", weight=0.5)
    distiller = kd.Distiller(
        cnn_student(), trained_teacher(), hints=[hint], hint_weight=2.0
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert [h.get_config() for h in loaded.hints] == [hint.get_config()]
    assert float(loaded.hint_weight) == 2.0
    assert weights_equal(
        loaded.hint_adaptors[0].get_weights(), distiller.hint_adaptors[0].get_weights()
    )
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), distiller.evaluate(x, y, verbose=0), rtol=1e-6
    )
    # Training resumes (optimizer state covers the adaptor too).
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(
        loaded.hint_adaptors[0].get_weights(), distiller.hint_adaptors[0].get_weights()
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_hint_config_round_trip():
    hint = Hint("a", "b", weight=3, adaptor=None)
    again = Hint.from_config(hint.get_config())
    assert again.get_config() == {
        "teacher_layer": "a",
        "student_layer": "b",
        "weight": 3.0,
        "adaptor": None,
    }
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(hint)
    )
    assert restored.get_config() == hint.get_config()


# -- Bad input ----------------------------------------------------------------


def test_unknown_layer_name_lists_available_names():
    with pytest.raises(ValueError, match=r"'conv9'.*teacher.*\['conv1', 'conv2'"):
        kd.Distiller(cnn_student(), trained_teacher(), hints=[Hint("conv9", "conv1")])
    with pytest.raises(ValueError, match=r"'nope'.*student.*\['conv1', 'pool'"):
        kd.Distiller(cnn_student(), trained_teacher(), hints=[Hint("conv1", "nope")])


def test_unmatched_spatial_shapes():
    # Teacher "pool" is 4x4x32, student "conv1" 8x8x4.
    with pytest.raises(
        ValueError, match=r"same spatial size.*\(None, 4, 4, 32\).*\(None, 8, 8, 4\)"
    ):
        kd.Distiller(cnn_student(), trained_teacher(), hints=[Hint("pool", "conv1")])


def test_shapes_that_no_adaptor_can_match():
    teacher = trained_teacher()
    with pytest.raises(ValueError, match=r"Cannot build an adaptor.*\(None, 64\)"):
        kd.Distiller(cnn_student(), teacher, hints=[Hint("dense", "conv1")])
    with pytest.raises(ValueError, match=r"adaptor=None.*\(None, 8, 8, 32\)"):
        kd.Distiller(
            cnn_student(), teacher, hints=[Hint("conv2", "conv1", adaptor=None)]
        )


def test_subclassed_model_without_return_features():
    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

    with pytest.raises(ValueError, match="does not accept `return_features`"):
        kd.Distiller(Plain(), trained_teacher(), hints=[Hint("conv1", "x")])


def test_subclassed_unknown_feature_lists_returned_names():
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(
        FeatureCNN(), trained_teacher(), hints=[Hint("conv2", "hidden")]
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(
        ValueError, match=r"'hidden'.*Returned feature names: \['conv'\]"
    ):
        distiller.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"teacher_layer": ""}, "teacher_layer"),
        ({"weight": -1.0}, "weight=-1.0"),
        ({"weight": "x"}, "weight='x'"),
        ({"adaptor": "conv"}, "adaptor='conv'"),
    ],
)
def test_bad_hint_arguments(kwargs, match):
    arguments = {"teacher_layer": "conv2", "student_layer": "conv1", **kwargs}
    with pytest.raises(ValueError, match=match):
        Hint(**arguments)


def test_hints_with_several_teachers_or_cached_outputs_are_refused():
    teacher = trained_teacher()
    with pytest.raises(ValueError, match="single teacher"):
        kd.Distiller(cnn_student(), [teacher, teacher], hints=[Hint("conv2", "conv1")])
    with pytest.raises(ValueError, match="hint_weight=-1"):
        kd.Distiller(cnn_student(), teacher, hint_weight=-1)
    # Without hints there is no hint term to weigh, nor a variable to schedule.
    plain = kd.Distiller(cnn_student(), teacher)
    assert plain.hint_weight is None
    with pytest.raises(ValueError, match="no hints.*hint_weight=0.5"):
        plain.hint_weight = 0.5
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(cnn_student(), teacher, hints=[Hint("conv2", "conv1")])
    distiller.compile(optimizer="sgd")
    logits = teacher.predict(x, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y, {"teacher_logits": logits}))
    with pytest.raises(ValueError, match="teacher-output cache"):
        distiller.fit(ds.batch(32), epochs=1, verbose=0)


def test_without_hints_nothing_changes():
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    assert distiller.hints == [] and distiller.hint_adaptors == []
    assert "hint_loss" not in [m.name for m in distiller.metrics]
    assert distiller.get_config()["hints"] is None


def test_hints_choose_their_loss_and_relational_terms_need_no_adaptor(tmp_path):
    x, y = digits_subset(n=32)
    teacher, student = trained_teacher(), cnn_student()
    hints = [
        Hint("conv1", "conv1", loss="cosine"),  # 16 vs 4 channels: 1x1 adaptor
        Hint("flatten", "flatten", loss=kd.losses.RKDAngleTerm(), adaptor=None),
        Hint("conv2", "conv1", loss=kd.losses.AttentionTransferTerm(), adaptor=None),
    ]
    distiller = kd.Distiller(student, teacher, hints=hints)
    assert [type(a).__name__ for a in distiller.hint_adaptors] == [
        "Conv2D",
        "Identity",
        "Identity",
    ]
    distiller.compile(optimizer="sgd")
    got = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    adapted = np.asarray(distiller.hint_adaptors[0](features(student, "conv1", x)))
    t = features(teacher, "conv1", x).reshape(32, -1)
    a = adapted.reshape(32, -1)
    cosine = 1 - (a * t).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(t, axis=1)
    angle = kd.losses.rkd_angle_loss(
        features(teacher, "flatten", x), features(student, "flatten", x)
    )
    at = kd.losses.attention_transfer_loss(
        features(teacher, "conv2", x), features(student, "conv1", x)
    )
    expected = cosine.mean() + np.mean(angle) + np.mean(at)
    np.testing.assert_allclose(got["hint_loss"], expected, rtol=1e-4)
    distiller.fit(x, y, epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert [type(h.term).__name__ for h in loaded.hints] == [
        "FeatureDistanceTerm",
        "RKDAngleTerm",
        "AttentionTransferTerm",
    ]
    with pytest.raises(ValueError, match="same shape with adaptor=None"):
        kd.Distiller(student, teacher, hints=[Hint("conv1", "conv1", adaptor=None)])
