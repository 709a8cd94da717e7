import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import losses
from tests.helpers import (
    digits_subset,
    random_logits,
    tiny_student,
    trained_teacher,
    weights_equal,
)


def numpy_kd(teacher_logits, student_logits, temperature):
    """Independent reference: T^2 * KL(softmax(t/T) || softmax(s/T))."""

    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    p = softmax(teacher_logits.astype("float64") / temperature)
    q = softmax(student_logits.astype("float64") / temperature)
    return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


class FixedLogits(keras.Model):
    """A model that ignores its input values and returns fixed logits."""

    def __init__(self, logits, **kwargs):
        super().__init__(**kwargs)
        self.logits = tf.constant(logits)
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x, training=None):
        return self.logits * self.scale


def fixed_distiller(teacher_logits, student_logits, **kwargs):
    teacher = FixedLogits(teacher_logits)
    student = FixedLogits(student_logits)
    distiller = kd.Distiller(student=student, teacher=teacher, **kwargs)
    distiller.compile(optimizer="sgd")
    return distiller


def losses_on(distiller, x, y=None, sample_weight=None):
    y_pred = distiller(x, training=False)
    total, student, kd_term = distiller.compute_distillation_loss(
        x, y, y_pred, sample_weight
    )
    return (
        float(total),
        None if student is None else float(student),
        float(kd_term),
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kd_term_matches_numpy(temperature):
    t, s = random_logits(seed=1), random_logits(seed=2)
    expected = numpy_kd(t, s, temperature)
    np.testing.assert_allclose(
        np.asarray(losses.kd_loss(t, s, temperature)), expected, rtol=1e-5, atol=1e-6
    )
    distiller = fixed_distiller(t, s, alpha=0.0, temperature=temperature)
    _, _, kd_term = losses_on(distiller, np.zeros((8, 1), "float32"))
    np.testing.assert_allclose(kd_term, expected.mean(), rtol=1e-5)


def test_alpha_one_is_plain_student_loss_and_alpha_zero_is_kd_term():
    t, s = random_logits(seed=3), random_logits(seed=4)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    x = np.zeros((8, 1), "float32")
    plain = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s))
    total, student, _ = losses_on(fixed_distiller(t, s, alpha=1.0), x, y)
    assert total == student
    np.testing.assert_allclose(total, plain, rtol=1e-6)
    total, _, kd_term = losses_on(fixed_distiller(t, s, alpha=0.0), x, y)
    assert total == kd_term
    np.testing.assert_allclose(total, numpy_kd(t, s, 4.0).mean(), rtol=1e-5)


def test_total_mixes_terms_with_alpha():
    t, s = random_logits(seed=5), random_logits(seed=6)
    y = np.arange(8) % 5
    total, student, kd_term = losses_on(
        fixed_distiller(t, s, alpha=0.3, temperature=2.0),
        np.zeros((8, 1), "float32"),
        y,
    )
    np.testing.assert_allclose(total, 0.3 * student + 0.7 * kd_term, rtol=1e-6)


def test_sample_weight_applies_to_both_terms():
    t, s = random_logits(seed=7), random_logits(seed=8)
    y = np.arange(8) % 5
    x = np.zeros((8, 1), "float32")
    weights = np.array([1, 1, 1, 0, 0, 0, 0, 0], "float32")
    distiller = fixed_distiller(t, s, alpha=0.5, temperature=3.0)
    _, student, kd_term = losses_on(distiller, x, y, weights)
    # Keras's "sum_over_batch_size": weighted sum divided by the batch size.
    expected_kd = numpy_kd(t, s, 3.0)[:3].sum() / 8
    expected_ce = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(
            y, s
        )
        .numpy()[:3]
        .sum()
        / 8
    )
    np.testing.assert_allclose(kd_term, expected_kd, rtol=1e-5)
    np.testing.assert_allclose(student, expected_ce, rtol=1e-5)


def test_teacher_probabilities_give_same_loss_as_logits():
    t, s = random_logits(seed=9), random_logits(seed=10)
    x = np.zeros((8, 1), "float32")
    probs = tf.nn.softmax(t).numpy()
    from_logits = losses_on(fixed_distiller(t, s, alpha=0.0, temperature=2.0), x)
    from_probs = losses_on(
        fixed_distiller(
            probs, s, alpha=0.0, temperature=2.0, teacher_outputs="probabilities"
        ),
        x,
    )
    np.testing.assert_allclose(from_probs[2], from_logits[2], rtol=1e-4)


def test_student_probabilities_use_probability_hard_loss():
    t, s = random_logits(seed=11), random_logits(seed=12)
    y = np.arange(8) % 5
    x = np.zeros((8, 1), "float32")
    ref = losses_on(fixed_distiller(t, s, alpha=0.5), x, y)
    probs = losses_on(
        fixed_distiller(
            t, tf.nn.softmax(s).numpy(), alpha=0.5, student_outputs="probabilities"
        ),
        x,
        y,
    )
    np.testing.assert_allclose(probs, ref, rtol=1e-4)


def test_fit_freezes_teacher_and_trains_student():
    x, y = digits_subset(n=256)
    teacher = trained_teacher()
    student = tiny_student()
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    distiller = kd.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert weights_equal(teacher.get_weights(), teacher_before)
    assert not weights_equal(student.get_weights(), student_before)
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert key in history.history, history.history.keys()
    assert history.history["loss"][1] < history.history["loss"][0]
    assert distiller.trainable_weights == student.trainable_weights


def _fused(distiller, y, sample_weight=None):
    logits = tf.zeros((len(y), 10))
    return distiller._fused_student_loss(tf.constant(y), logits, sample_weight)


def test_fused_student_loss_only_where_it_is_keras_loss():
    student, teacher = tiny_student(), trained_teacher()
    sparse = keras.losses.SparseCategoricalCrossentropy
    labels = np.arange(4)
    for loss, expected in (
        (None, True),
        (sparse(from_logits=True), True),
        (sparse(from_logits=True, ignore_class=0), False),
        (sparse(from_logits=True, reduction="sum"), False),
    ):
        distiller = kd.Distiller(student, teacher)
        distiller.compile(optimizer="sgd", loss=loss)
        assert _fused(distiller, labels) is expected, loss
    distiller = kd.Distiller(student, teacher)
    distiller.compile(
        optimizer="sgd", loss=sparse(from_logits=True), loss_weights=[2.0]
    )
    assert not _fused(distiller, labels)
    distiller.compile(optimizer="sgd")
    assert not _fused(distiller, labels, sample_weight=tf.ones(4))
    assert not _fused(distiller, labels.astype("float32"))
    assert not _fused(distiller, np.eye(4, 10, dtype="int64"))  # one-hot


def test_fused_student_loss_trains_like_keras_loss():
    x, y = digits_subset(n=256)
    teacher = trained_teacher()
    results = []
    for fused in (True, False):
        keras.utils.set_random_seed(1)
        distiller = kd.Distiller(tiny_student(), teacher)
        if not fused:
            distiller._fused_student_loss = lambda *args: False
        distiller.compile(optimizer="adam")
        history = distiller.fit(x, y, epochs=2, batch_size=50, shuffle=False, verbose=0)
        results.append((history.history, distiller.student.get_weights()))
    (fused_logs, fused_weights), (keras_logs, keras_weights) = results
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(fused_logs[key], keras_logs[key], rtol=1e-5)
    for a, b in zip(fused_weights, keras_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fit_on_a_dataset_gives_no_shuffle_warning():
    import warnings

    x, y = digits_subset(n=64)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="sgd")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(ds, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)]


def test_teacher_runs_in_inference_mode():
    """A teacher with heavy dropout still gives deterministic targets."""
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dropout(0.9), keras.layers.Dense(3)]
    )
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = kd.Distiller(student=student, teacher=teacher, alpha=0.0)
    distiller.compile(optimizer="sgd")
    x = np.ones((16, 4), "float32")
    seen = []
    for _ in range(3):
        seen.append(np.asarray(distiller.teacher_logits(x)))
    np.testing.assert_array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[0], teacher(x, training=False))


def test_unlabeled_batches_train_on_kd_term_alone():
    x, _ = digits_subset(n=128)
    teacher = trained_teacher()
    student = tiny_student()
    before = [w.copy() for w in student.get_weights()]
    distiller = kd.Distiller(student=student, teacher=teacher, alpha=0.5)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices(x).batch(32)
    history = distiller.fit(ds, epochs=1, verbose=0)
    assert not weights_equal(student.get_weights(), before)
    np.testing.assert_allclose(
        history.history["loss"][0], history.history["distillation_loss"][0], rtol=1e-6
    )


def test_precomputed_teacher_logits_skip_the_teacher():
    x, y = digits_subset(n=64)
    teacher = trained_teacher()
    distiller = kd.Distiller(student=tiny_student(), teacher=teacher, alpha=0.2)
    distiller.compile(optimizer="sgd")
    online = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    logits = teacher.predict(x, verbose=0)
    calls = []
    distiller.teacher.call = lambda *a, **k: calls.append(1)
    ds = tf.data.Dataset.from_tensor_slices((x, y, {"teacher_logits": logits}))
    cached = distiller.evaluate(ds.batch(64), verbose=0, return_dict=True)
    assert calls == []
    np.testing.assert_allclose(cached["loss"], online["loss"], rtol=1e-5)


class ScaleTemperature(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.temperature = [1.0, 8.0, 1.0][epoch]


def test_temperature_assigned_by_callback_changes_logged_kd_loss():
    x, y = digits_subset(n=128)
    teacher = trained_teacher()
    distiller = kd.Distiller(student=tiny_student(), teacher=teacher, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    history = distiller.fit(
        x, y, epochs=3, batch_size=64, verbose=0, callbacks=[ScaleTemperature()]
    )
    kd_losses = history.history["distillation_loss"]
    # Learning rate 0: only the temperature changes between epochs.
    np.testing.assert_allclose(kd_losses[0], kd_losses[2], rtol=1e-5)
    assert abs(kd_losses[1] - kd_losses[0]) > 1e-3 * abs(kd_losses[0])
    logits = teacher.predict(x, verbose=0)
    student_logits = distiller.predict(x, verbose=0)
    np.testing.assert_allclose(
        kd_losses[1], numpy_kd(logits, student_logits, 8.0).mean(), rtol=1e-4
    )


def test_save_load_round_trip_and_resume(tmp_path):
    x, y = digits_subset(n=192)
    distiller = kd.Distiller(
        student=tiny_student(), teacher=trained_teacher(), alpha=0.3, temperature=2.5
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, batch_size=64, verbose=0)
    distiller.temperature = 3.5
    path = tmp_path / "d.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kd.Distiller)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
    assert float(loaded.alpha) == pytest.approx(0.3)
    assert float(loaded.temperature) == pytest.approx(3.5)
    assert int(loaded.optimizer.iterations) == 3
    for a, b in zip(loaded.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Resuming continues from the restored state, identically to the original.
    distiller.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    assert int(loaded.optimizer.iterations) == 6
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-5
    )


def test_saved_file_has_no_teacher_optimizer(tmp_path):
    import zipfile

    import h5py

    teacher = trained_teacher()
    assert teacher.optimizer is not None and teacher.optimizer.variables
    distiller = kd.Distiller(student=tiny_student(), teacher=teacher)
    distiller.compile(optimizer="adam")
    x, y = digits_subset(n=32)
    distiller.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "d.keras"
    distiller.save(path)
    names = []
    with zipfile.ZipFile(path) as archive:
        with h5py.File(archive.open("model.weights.h5"), "r") as f:
            f.visit(names.append)
    assert not [n for n in names if "teacher" in n and "optimizer" in n]
    student_opt = [n for n in names if n.startswith("optimizer/vars/")]
    # Adam on the student: iterations + learning rate + 2 slots per variable.
    assert len(student_opt) == 2 + 2 * len(distiller.student.trainable_weights)


# -- Bad input ----------------------------------------------------------------


@pytest.fixture(scope="module")
def models():
    return trained_teacher(), tiny_student()


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "high"])
def test_bad_alpha(models, alpha):
    teacher, student = models
    with pytest.raises(ValueError, match=r"alpha.*Received: alpha="):
        kd.Distiller(student=student, teacher=teacher, alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -2.0, float("inf"), float("nan")])
def test_bad_temperature(models, temperature):
    teacher, student = models
    with pytest.raises(ValueError, match=r"temperature.*Received: temperature="):
        kd.Distiller(student=student, teacher=teacher, temperature=temperature)


def test_bad_temperature_assignment(models):
    teacher, student = models
    distiller = kd.Distiller(student=student, teacher=teacher)
    with pytest.raises(ValueError, match="temperature=0"):
        distiller.temperature = 0
    assert float(distiller.temperature) == 4.0


def test_class_count_mismatch_at_construction(models):
    teacher, _ = models
    student = tiny_student(num_classes=7)
    with pytest.raises(ValueError, match=r"student \(None, 7\), teacher \(None, 10\)"):
        kd.Distiller(student=student, teacher=teacher)


class Subclassed(keras.Model):
    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(classes)

    def call(self, x):
        return self.dense(self.flatten(x))


def test_class_count_mismatch_at_first_batch(models):
    teacher, _ = models
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(student=Subclassed(7), teacher=teacher)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"teacher outputs of shape.*10.*student.*7"):
        distiller.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_not_a_keras_model(models, name):
    teacher, student = models
    kwargs = {"student": student, "teacher": teacher, name: "resnet"}
    with pytest.raises(TypeError, match=f"`{name}` must be a `keras.Model`.*'resnet'"):
        kd.Distiller(**kwargs)


def test_bad_output_kind(models):
    teacher, student = models
    with pytest.raises(ValueError, match=r"teacher_outputs='softmax'"):
        kd.Distiller(student=student, teacher=teacher, teacher_outputs="softmax")


def test_labels_out_of_range_before_training(models):
    teacher, student = models
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer="sgd")
    before = [w.copy() for w in student.get_weights()]
    bad = y.copy()
    bad[5] = 12
    with pytest.raises(
        ValueError, match=r"\[0, 10\).*label value of 12 at index 5 .*largest 12\)"
    ):
        distiller.fit(x, bad, epochs=1, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, bad)).batch(32)
    with pytest.raises(ValueError, match="label value of 12"):
        distiller.fit(ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="validation_data.*label value of -1"):
        distiller.fit(x, y, validation_data=(x, y * 0 - 1), epochs=1, verbose=0)
    assert weights_equal(student.get_weights(), before)


@keras.saving.register_keras_serializable(package="keras_distill_tests")
class SubclassedStudent(keras.Model):
    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(classes)

    def call(self, x):
        return self.dense(self.flatten(x))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def test_subclassed_student_trains_saves_and_loads(models, tmp_path):
    teacher, _ = models
    x, y = digits_subset(n=64)
    distiller = kd.Distiller(student=SubclassedStudent(), teacher=teacher)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    distiller.save(tmp_path / "sub.keras")
    loaded = keras.models.load_model(tmp_path / "sub.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
    assert int(loaded.optimizer.iterations) == 2


def test_jit_compile_trains_and_matches_graph_mode(models):
    teacher, _ = models
    x, y = digits_subset(n=64)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        d = kd.Distiller(student=tiny_student(seed=3), teacher=teacher)
        d.compile(optimizer="sgd", jit_compile=jit)
        history = d.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        results.append(history.history["loss"])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4)


# -- Several distillation terms ---------------------------------------------------


def numpy_dkd(t, s, y, temperature, alpha=1.0, beta=8.0):
    from tests.losses_test import numpy_dkd as reference

    return reference(t, s, y, temperature, alpha, beta)


def test_a_weighted_list_of_terms_is_the_weighted_sum_and_logs_each_term():
    t, s = random_logits(seed=21), random_logits(seed=22)
    y = np.arange(8) % 5
    x = np.zeros((8, 1), "float32")
    distiller = fixed_distiller(
        t,
        s,
        alpha=0.2,
        temperature=2.0,
        distillation_loss=["kd", kd.losses.DKDTerm(beta=2.0)],
        distillation_loss_weights=[0.7, 0.3],
    )
    kd_value = numpy_kd(t, s, 2.0).mean()
    dkd_value = numpy_dkd(t, s, y, 2.0, beta=2.0).mean()
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["kd_loss"], kd_value, rtol=1e-5)
    np.testing.assert_allclose(got["dkd_loss"], dkd_value, rtol=1e-5)
    distill = 0.7 * kd_value + 0.3 * dkd_value
    np.testing.assert_allclose(got["distillation_loss"], distill, rtol=1e-5)
    np.testing.assert_allclose(
        got["loss"], 0.2 * got["student_loss"] + 0.8 * distill, rtol=1e-5
    )
    assert [v.name for v in distiller.distillation_loss_weights] == [
        "kd_weight",
        "dkd_weight",
    ]
    distiller.distillation_loss_weights = [0.0, 1.0]
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["distillation_loss"], dkd_value, rtol=1e-5)


def test_a_single_term_keeps_the_original_loss_bit_for_bit():
    t, s = random_logits(seed=23), random_logits(seed=24)
    y = np.arange(8) % 5
    x = np.zeros((8, 1), "float32")
    distiller = fixed_distiller(t, s, alpha=0.3, temperature=3.0)
    assert distiller.distillation_loss_weights is None
    total, student, kd_term = losses_on(distiller, x, y)
    # The formula as the Distiller computed it before terms existed.
    expected_kd = losses.reduce_per_example(losses.kd_loss(t, s, 3.0))
    alpha = tf.constant(0.3, "float32")
    assert kd_term == float(expected_kd)
    assert total == float(alpha * student + (1.0 - alpha) * expected_kd)
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert "kd_loss" not in logs  # one term: its loss is `distillation_loss`


def test_term_weights_are_scheduled_and_checked_in_the_step():
    x, y = np.zeros((8, 1), "float32"), np.arange(8) % 5
    distiller = fixed_distiller(
        random_logits(seed=27),
        random_logits(seed=28),
        distillation_loss=["kd", "mse"],
        distillation_loss_weights=[1.0, 0.0],
    )
    history = distiller.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[
            kd.callbacks.ParameterScheduler("mse_weight", kd.schedules.linear(0, 1, 1))
        ],
    )
    assert history.history["mse_weight"] == [0.0, 1.0]
    logs = history.history
    np.testing.assert_allclose(logs["distillation_loss"][0], logs["kd_loss"][0])
    # Epoch 1 (one batch): with the weight at 1 the MSE term counts.
    np.testing.assert_allclose(
        logs["distillation_loss"][1], logs["kd_loss"][1] + logs["mse_loss"][1]
    )
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        got["distillation_loss"], got["kd_loss"] + got["mse_loss"], rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"`mse_weight` must be >= 0.*=-1\.0 at an"):
        distiller.distillation_loss_weights[1].assign(-1.0)
    with pytest.raises(ValueError, match=r"mse_weight.*Received: mse_weight=-2"):
        distiller.distillation_loss_weights = [1.0, -2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"distillation_loss": ["kd", "dkd"], "distillation_loss_weights": [1.0]},
            r"one weight per distillation term \(2: \[.kd., .dkd.\]\). Received 1 weight:",
        ),
        (
            {
                "distillation_loss": ["kd", "dkd"],
                "distillation_loss_weights": [1, -0.5],
            },
            r"`dkd_weight` must be >= 0.*Received: dkd_weight=-0.5 at "
            r"distillation_loss_weights\[1\]",
        ),
        ({"distillation_loss": ["kd", "kld"]}, r"distillation_loss\[1\]='kld'.*'kd'"),
        ({"distillation_loss": ["kd", "kd"]}, r"\['kd'\] appear more than once"),
        ({"distillation_loss": []}, r"at least one term"),
        (
            {"distillation_loss": kd.losses.KDTerm(name="hint")},
            r"cannot be named 'hint'",
        ),
    ],
)
def test_bad_terms_and_weights(models, kwargs, match):
    teacher, student = models
    with pytest.raises(ValueError, match=match):
        kd.Distiller(student, teacher, **kwargs)


def test_a_term_must_return_one_value_per_example_and_dkd_needs_labels():
    class Scalar(kd.losses.DistillationTerm):
        def call(self, teacher, student, labels=None, temperature=None):
            return keras.ops.mean(teacher - student)

    t, s = random_logits(seed=25), random_logits(seed=26)
    x = np.zeros((8, 1), "float32")
    with pytest.raises(ValueError, match=r"'term' \(Scalar\) must return one value"):
        losses_on(fixed_distiller(t, s, distillation_loss=Scalar()), x)
    with pytest.raises(ValueError, match=r"'dkd' \(DKDTerm\) needs labels"):
        losses_on(fixed_distiller(t, s, distillation_loss="dkd"), x)


# -- Migration: the keras-io example and keras.distillation ----------------------


def test_the_keras_io_compile_call_works_and_gives_its_loss():
    t, s = random_logits(seed=31), random_logits(seed=32)
    y = np.arange(8) % 5
    x = np.zeros((8, 1), "float32")
    distiller = kd.Distiller(student=FixedLogits(s), teacher=FixedLogits(t))
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    assert float(distiller.alpha) == pytest.approx(0.1)
    assert float(distiller.temperature) == 10.0
    got = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    # keras-io's compute_loss, written out.
    soft = (
        keras.losses.KLDivergence()(tf.nn.softmax(t / 10.0), tf.nn.softmax(s / 10.0))
        * 100.0
    )
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s)
    np.testing.assert_allclose(got["loss"], 0.1 * hard + 0.9 * soft, rtol=1e-4)
    assert "sparse_categorical_accuracy" in got
    history = distiller.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_keras_io_and_keras_distillation_arguments_map_or_show_the_equivalent(models):
    teacher, student = models
    distiller = kd.Distiller(student, teacher)
    with pytest.raises(ValueError, match=r"distillation_loss='mse'"):
        distiller.compile(optimizer="adam", distillation_loss_fn="mse")
    with pytest.raises(ValueError, match=r"Received: alpha=2"):
        distiller.compile(optimizer="adam", alpha=2)
    mapped = kd.Distiller(
        student=student,
        teacher=teacher,
        distillation_losses=["kd", "dkd"],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.3,
    )
    assert float(mapped.alpha) == pytest.approx(0.3)
    assert [t.name for t in mapped.distillation_loss] == ["kd", "dkd"]
    with pytest.raises(
        ValueError,
        match=r"LogitsDistillation\(temperature=4.0\)` pass `distillation_loss='kd', "
        r"temperature=4.0`.*without softmax",
    ):
        kd.Distiller(
            student=student,
            teacher=teacher,
            distillation_losses=[keras.distillation.LogitsDistillation(4.0)],
        )
    with pytest.raises(ValueError, match=r"hints=\[kd.hints.Hint\('conv2', 'dense'"):
        kd.Distiller(
            student=student,
            teacher=teacher,
            distillation_losses=keras.distillation.FeatureDistillation(
                teacher_layer_name="conv2", student_layer_name="dense"
            ),
        )


def test_the_keras_distillation_numbers_in_the_readme_hold():
    # Keras 3.15.1: the default LogitsDistillation skips the softmax and T^2.
    from keras.distillation import LogitsDistillation

    t, s = np.array([[2.0, 0.0, -1.0]]), np.array([[0.0, 0.0, 0.0]])
    default = float(LogitsDistillation(4.0).compute_loss(t, s))
    kl = LogitsDistillation(4.0, loss=keras.losses.KLDivergence())
    assert default == pytest.approx(7.71, abs=0.005)
    assert float(kl.compute_loss(t, s)) == pytest.approx(0.808, abs=0.0005)
    assert float(losses.kd_loss(t, s, 4.0)[0]) == pytest.approx(0.808, abs=0.0005)


def test_the_teacher_is_the_model_passed_and_still_evaluates(tmp_path):
    teacher = trained_teacher()
    distiller = kd.Distiller(student=tiny_student(hidden=4), teacher=teacher)
    assert distiller.teacher is teacher and distiller.teachers == [teacher]
    x, y = digits_subset(n=32)
    loss, accuracy = distiller.teacher.evaluate(x, y, verbose=0)
    assert accuracy > 0.5
    assert "teacher" not in dir(distiller)  # so Keras's saving does not walk it
    distiller.compile(optimizer="adam")
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(
        loaded.teacher.predict(x, verbose=0), teacher.predict(x, verbose=0), atol=1e-6
    )


# -- Multi-output students and teachers ------------------------------------------


def two_heads(seed, width):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    heads = [
        keras.layers.Dense(3, name="a")(hidden),
        keras.layers.Dense(4, name="b")(hidden),
    ]
    return keras.Model(inputs, heads)


def test_multi_output_terms_follow_the_outputs_and_none_skips_one(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((16, 6), "float32")
    y = [rng.integers(0, 3, 16), rng.integers(0, 4, 16)]
    teacher, student = two_heads(0, 8), two_heads(1, 4)
    skip = kd.Distiller(
        student, teacher, alpha=0.0, temperature=2.0, distillation_loss=["kd", None]
    )
    skip.compile(optimizer="sgd")
    got = skip.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    np.testing.assert_allclose(got["loss"], numpy_kd(t[0], s[0], 2.0).mean(), rtol=1e-5)
    both = kd.Distiller(
        student,
        teacher,
        alpha=0.5,
        temperature=2.0,
        distillation_loss=[["kd", "mse"], kd.losses.DKDTerm(beta=2.0, name="dkd_b")],
        distillation_loss_weights=[1.0, 0.5, 2.0],
    )
    both.compile(optimizer="sgd")
    got = both.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = (
        numpy_kd(t[0], s[0], 2.0).mean()
        + 0.5 * ((t[0] - s[0]) ** 2).mean()
        + 2.0 * numpy_dkd(t[1], s[1], y[1], 2.0, beta=2.0).mean()
    )
    np.testing.assert_allclose(got["distillation_loss"], expected, rtol=1e-5)
    assert {"kd_0_loss", "mse_0_loss", "dkd_b_loss"} <= set(got)
    both.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    assert loaded.get_config()["distillation_loss"][0] == ["kd", "mse"]
    again = loaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(again["distillation_loss"], expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"needs one entry per output.*Received 3"):
        kd.Distiller(student, teacher, distillation_loss=["kd", "kd", "kd"])
    with pytest.raises(ValueError, match=r"at least one output"):
        kd.Distiller(student, teacher, distillation_loss=[None, None])


def test_ctkd_trains_its_temperature_up_the_loss_once_the_reversal_is_on(tmp_path):
    t, s = random_logits(seed=41), random_logits(seed=42)
    x = np.zeros((8, 1), "float32")
    distiller = kd.Distiller(
        FixedLogits(s), FixedLogits(t), alpha=0.0, distillation_loss="ctkd"
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    term = distiller.distillation_loss
    distiller.fit(x, epochs=1, batch_size=8, verbose=0)
    assert float(term.theta) == 1.0  # reversal strength 0 (its start): no update
    scale = float(distiller.student.scale)

    def loss(theta):  # NumPy: KD at T = 1 + 20 * sigmoid(theta)
        return numpy_kd(t, scale * s, 1 + 20 / (1 + np.exp(-theta))).mean()

    slope = (loss(1.0 + 1e-4) - loss(1.0 - 1e-4)) / 2e-4
    assert abs(slope) > 1e-3  # a step the test can see
    history = distiller.fit(
        x,
        epochs=1,
        batch_size=8,
        verbose=0,
        callbacks=[kd.callbacks.ParameterScheduler("ctkd_reversal", 1.0)],
    )
    assert history.history["ctkd_reversal"] == [1.0]
    # SGD on the reversed gradient: theta + 0.1 * dL/dtheta (ascends the loss).
    np.testing.assert_allclose(float(term.theta), 1.0 + 0.1 * slope, rtol=1e-3)
    # The learned temperature is part of the checkpointed training state.
    state = distiller.training_state()
    assert state["term_ctkd"] is term and "ctkd_reversal" in state
    path = tf.train.Checkpoint(**state).write(str(tmp_path / "ckpt"))
    learned = float(term.theta)
    term.theta.assign(0.0)
    tf.train.Checkpoint(**state).read(path).expect_partial()
    assert float(term.theta) == learned


def test_ctkd_logs_its_learned_temperature_every_epoch():
    t, s = random_logits(seed=41), random_logits(seed=42)
    x = np.zeros((8, 1), "float32")
    distiller = kd.Distiller(
        FixedLogits(s),
        FixedLogits(t),
        alpha=0.0,
        distillation_loss=[kd.losses.CTKDTerm("kd", name="ct"), "mse"],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    term = distiller.distillation_loss[0]
    seen, actual = [], []

    class Watch(keras.callbacks.Callback):  # a user's callback, like CSVLogger
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["ct_temperature"])
            actual.append(term.learned_temperature())

    history = distiller.fit(
        x,
        epochs=3,
        batch_size=4,
        verbose=0,
        callbacks=[
            kd.callbacks.ParameterScheduler(
                "ct_reversal", kd.schedules.linear(0, 1, 1)
            ),
            Watch(),
        ],
    )
    logged = history.history["ct_temperature"]
    assert logged == seen and logged == pytest.approx(actual, rel=1e-6)
    # Epoch 0 has reversal 0: T stays 1 + 20 * sigmoid(1); then it moves.
    assert logged[0] == pytest.approx(1 + 20 / (1 + np.exp(-1.0)), rel=1e-6)
    assert logged[0] != logged[1] != logged[2] and max(logged) < 20.0
    assert distiller.learned_temperatures() == {"ct_temperature": actual[-1]}
    plain = kd.Distiller(FixedLogits(s), FixedLogits(t), distillation_loss="kd")
    plain.compile(optimizer="sgd")
    assert plain.learned_temperatures() == {}
    assert "kd_temperature" not in plain.fit(x, epochs=1, verbose=0).history


def test_top_k_cached_outputs_serve_only_the_plain_kd_term():
    from keras_distill import targets

    t, s = random_logits(seed=43), random_logits(seed=44)
    topk = {
        targets.TOPK_LOGITS_KEY: np.sort(t, axis=-1)[:, ::-1][:, :5],
        targets.TOPK_INDICES_KEY: np.argsort(-t, axis=-1)[:, :5],
        targets.TOPK_REST_KEY: np.full((8,), -np.inf, "float32"),
    }
    x = np.zeros((8, 1), "float32")
    plain = fixed_distiller(t, s, alpha=0.0)
    _, _, value = plain.compute_distillation_loss(x, None, plain(x), None, topk)
    np.testing.assert_allclose(float(value), numpy_kd(t, s, 4.0).mean(), rtol=1e-4)
    for loss in (["kd", "mse"], kd.losses.KDTerm(standardize=True)):
        distiller = fixed_distiller(t, s, distillation_loss=loss)
        with pytest.raises(ValueError, match=r"which the terms \[.*\] cannot use"):
            distiller.compute_distillation_loss(x, None, distiller(x), None, topk)


def test_all_zero_sample_weights_warn_once(recwarn):
    x, y = digits_subset(n=64)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, sample_weight=np.ones(64), epochs=1, batch_size=32, verbose=0)
    assert not [w for w in recwarn if "sample_weight" in str(w.message)]
    distiller.fit(x, y, sample_weight=np.zeros(64), epochs=2, batch_size=32, verbose=0)
    zero = [w for w in recwarn if "Every `sample_weight` is 0" in str(w.message)]
    assert len(zero) == 1, [str(w.message) for w in recwarn]


def test_the_compiled_step_returns_its_logs_in_one_tensor_by_name():
    # Each value a compiled step returns costs fit() per step; the
    # distiller's scalar logs come back as one tensor, unpacked by name.
    x, y = digits_subset(n=64)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(
        x, y, batch_size=32, epochs=2, validation_data=(x, y), verbose=0
    )
    names = {"loss", "student_loss", "distillation_loss", "accuracy"}
    assert set(history.history) == names | {f"val_{name}" for name in names}
    logs = distiller.train_function(iter(tf.data.Dataset.from_tensors((x, y))))
    assert set(logs) == names
    assert all(np.ndim(value) == 0 for value in logs.values())
    evaluated = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert set(evaluated) == names
    listed = distiller.evaluate(x, y, verbose=0)
    assert listed[0] == pytest.approx(evaluated["loss"])
    assert distiller.test_on_batch(x, y, return_dict=True).keys() == names


def test_a_subclass_step_may_return_other_values_beside_the_packed_ones():
    class Extra(kd.Distiller):
        def train_step(self, data):
            logs = super().train_step(data)
            return {**logs, "steps": self.optimizer.iterations}

    x, y = digits_subset(n=32)
    distiller = Extra(tiny_student(), trained_teacher())
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=32, verbose=0)
    logs = distiller.train_function(iter(tf.data.Dataset.from_tensors((x, y))))
    assert list(logs) == ["loss", "student_loss", "distillation_loss", "steps"]
    assert int(logs["steps"]) == 2


def test_losses_the_student_adds_in_its_call_are_part_of_the_training_loss():
    # Activity regularizers (`add_loss` in `call`) with BatchNormalization,
    # whose writes the step defers until its checks pass.
    keras.utils.set_random_seed(1)
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                16, activity_regularizer=keras.regularizers.L1(1e3), name="hidden"
            ),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(student, trained_teacher(), alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.train_on_batch(x, y, return_dict=True)
    expected = 0.5 * logs["student_loss"] + 0.5 * logs["distillation_loss"]
    hidden = keras.Model(student.inputs, student.get_layer("hidden").output)
    penalty = 1e3 * float(np.abs(hidden(x)).sum()) / len(x)
    assert penalty > 1.0
    np.testing.assert_allclose(logs["loss"], expected + penalty, rtol=1e-4)
