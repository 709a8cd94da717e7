import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill import callbacks, schedules
from tests import helpers


class CountingDistiller(kd.Distiller):
    """Counts traces of the train step (Python code runs only when tracing)."""

    traces = 0

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


def make_distiller(learning_rate=0.01, alpha=0.1, temperature=4.0):
    distiller = CountingDistiller(
        student=helpers.tiny_student(),
        teacher=helpers.trained_teacher(),
        alpha=alpha,
        temperature=temperature,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return distiller


def reference_kd_loss(teacher_logits, student_logits, temperature):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged, in float64 NumPy."""

    def log_softmax(z):
        z = z.astype("float64") / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(teacher_logits), log_softmax(student_logits)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))) * (
        temperature**2
    )


def test_temperature_schedule_changes_the_traced_loss_every_epoch():
    # With a zero learning rate the student is frozen, so each epoch's KD loss
    # is a function of that epoch's temperature alone: if the assignment did
    # not reach the traced step, the loss would not move.
    x, y = helpers.digits_subset(n=128)
    distiller = make_distiller(learning_rate=0.0)
    schedule = schedules.linear(8.0, 2.0, 3)
    history = distiller.fit(
        x,
        y,
        batch_size=32,
        epochs=4,
        verbose=0,
        callbacks=[callbacks.ParameterScheduler("temperature", schedule)],
    )
    assert history.history["temperature"] == [8.0, 6.0, 4.0, 2.0]
    teacher_logits = distiller.teacher.predict(x, verbose=0)
    student_logits = distiller.student.predict(x, verbose=0)
    expected = [
        reference_kd_loss(teacher_logits, student_logits, t) for t in (8, 6, 4, 2)
    ]
    np.testing.assert_allclose(
        history.history["distillation_loss"], expected, rtol=1e-4
    )
    assert len(set(np.round(history.history["distillation_loss"], 4))) == 4
    assert float(distiller.temperature.numpy()) == 2.0
    assert distiller.traces == 1  # Four temperatures, one traced step.


def test_alpha_schedule_logged_per_epoch_equals_schedule():
    x, y = helpers.digits_subset(n=64)
    distiller = make_distiller()
    schedule = schedules.cosine(0.1, 0.9, 2)
    history = distiller.fit(
        x,
        y,
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[callbacks.ParameterScheduler("alpha", schedule)],
    )
    np.testing.assert_allclose(history.history["alpha"], [0.1, 0.5, 0.9], atol=1e-7)
    # The total loss really uses the scheduled alpha.
    logs = history.history
    for i, alpha in enumerate(logs["alpha"]):
        total = (
            alpha * logs["student_loss"][i] + (1 - alpha) * logs["distillation_loss"][i]
        )
        assert logs["loss"][i] == pytest.approx(total, rel=1e-4)


def test_step_unit_follows_optimizer_iterations():
    x, y = helpers.digits_subset(n=96)
    distiller = make_distiller()
    schedule = schedules.linear(6.0, 1.0, 5)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((float(logs["temperature"]), float(distiller.temperature)))

    distiller.fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[
            callbacks.ParameterScheduler("temperature", schedule, unit="step"),
            Record(),
        ],
    )
    expected = [schedule(step) for step in range(6)]
    assert [logged for logged, _ in seen] == pytest.approx(expected)
    assert [value for _, value in seen] == pytest.approx(expected)


def test_unknown_name_lists_valid_names():
    x, y = helpers.digits_subset(n=32)
    distiller = make_distiller()
    scheduler = callbacks.ParameterScheduler("temprature", 2.0)
    with pytest.raises(ValueError, match=r"'temprature'.*\['alpha', 'temperature'\]"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[scheduler])


@pytest.mark.parametrize(
    "name, schedule, match",
    [
        ("alpha", schedules.linear(0.5, 1.5, 4), r"alpha=1\.25 at epoch 3"),
        ("temperature", schedules.linear(2.0, -2.0, 4), r"temperature=0\.0 at epoch 2"),
        (
            "temperature",
            lambda epoch: float("nan") if epoch == 1 else 3.0,
            r"temperature=nan at epoch 1",
        ),
    ],
)
def test_bad_values_raise_before_training(name, schedule, match):
    x, y = helpers.digits_subset(n=32)
    distiller = make_distiller()
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=match):
        distiller.fit(
            x,
            y,
            epochs=4,
            verbose=0,
            callbacks=[callbacks.ParameterScheduler(name, schedule)],
        )
    assert helpers.weights_equal(before, distiller.student.get_weights())


def test_bad_value_at_a_step_raises_quoting_the_step():
    x, y = helpers.digits_subset(n=64)
    distiller = make_distiller()
    scheduler = callbacks.ParameterScheduler(
        "alpha", lambda step: 2.0 if step == 1 else 0.5, unit="step"
    )
    with pytest.raises(ValueError, match=r"alpha=2\.0 at step 1"):
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[scheduler])
    # The first step ran with the valid value.
    assert int(distiller.optimizer.iterations.numpy()) == 1


def test_scheduler_constructor_checks():
    with pytest.raises(ValueError, match="unit.*'batch'"):
        callbacks.ParameterScheduler("alpha", 0.5, unit="batch")
    with pytest.raises(TypeError, match="schedule.*'x'"):
        callbacks.ParameterScheduler("alpha", "x")


def test_scheduler_config_round_trip():
    scheduler = callbacks.ParameterScheduler(
        "temperature", schedules.join([schedules.linear(8, 4, 2), 4.0], [2])
    )
    config = keras.saving.serialize_keras_object(scheduler)
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.name == "temperature" and restored.unit == "epoch"
    assert [restored.schedule(e) for e in range(4)] == [8.0, 6.0, 4.0, 4.0]


# -- Progressive distillation ------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0, "alpha": 0.1, "temperature": 4.0}, "epochs.*>= 1.*epochs=0"),
        (
            {"epochs": 2, "alpha": 0.1, "temperature": 4.0, "data_fraction": 0.0},
            r"data_fraction.*\(0, 1\].*0\.0",
        ),
        (
            {"epochs": 2, "alpha": 0.1, "temperature": 4.0, "data_fraction": 1.5},
            r"data_fraction.*\(0, 1\].*1\.5",
        ),
        (
            {
                "epochs": 3,
                "alpha": schedules.linear(0.5, 1.5, 2),
                "temperature": 4.0,
            },
            r"alpha=1\.5 at epoch 2",
        ),
        ({"epochs": 2, "alpha": 0.1, "temperature": 0.0}, r"temperature=0\.0"),
        (
            {
                "epochs": 2,
                "alpha": 0.1,
                "temperature": 2.0,
                "learning_rate_factor": -1.0,
            },
            r"learning_rate_factor.*> 0.*-1\.0",
        ),
    ],
)
def test_stage_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        callbacks.Stage(**kwargs)


def test_progressive_stages_and_total_epochs():
    stages = callbacks.progressive_stages(3, 4, 2)
    assert callbacks.total_epochs(stages) == 9
    assert [s.name for s in stages] == ["distill", "curriculum", "finetune"]


def test_fraction_below_one_needs_a_curriculum():
    with pytest.raises(
        ValueError, match=r"distill uses data_fraction=0\.5.*curriculum"
    ):
        callbacks.ProgressiveDistillation(callbacks.progressive_stages(1, 1, 1))


def test_progressive_applies_each_stage():
    x, y = helpers.digits_subset(n=64)
    distiller = make_distiller(learning_rate=0.05)
    stages = [
        callbacks.Stage(2, alpha=0.1, temperature=8.0, name="distill"),
        callbacks.Stage(2, alpha=0.3, temperature=schedules.linear(6.0, 2.0, 1)),
        callbacks.Stage(1, alpha=1.0, temperature=1.0, learning_rate_factor=0.1),
    ]
    progressive = callbacks.ProgressiveDistillation(stages)
    assert progressive.total_epochs == 5
    assert [progressive.stage_index(e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    history = distiller.fit(
        x, y, batch_size=32, epochs=5, verbose=0, callbacks=[progressive]
    )
    logs = history.history
    assert logs["stage"] == [1, 1, 2, 2, 3]
    np.testing.assert_allclose(logs["alpha"], [0.1, 0.1, 0.3, 0.3, 1.0], rtol=1e-6)
    assert logs["temperature"] == [8.0, 8.0, 6.0, 2.0, 1.0]
    np.testing.assert_allclose(
        logs["learning_rate"], [0.05, 0.05, 0.05, 0.05, 0.005], rtol=1e-6
    )
    # Fine-tuning with alpha=1: the total loss is the hard-label loss.
    assert logs["loss"][4] == pytest.approx(logs["student_loss"][4], rel=1e-6)


def test_progressive_rejects_lr_factor_with_a_learning_rate_schedule():
    x, y = helpers.digits_subset(n=32)
    distiller = kd.Distiller(
        student=helpers.tiny_student(), teacher=helpers.trained_teacher()
    )
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(decay))
    progressive = callbacks.ProgressiveDistillation(
        [callbacks.Stage(1, 0.1, 4.0), callbacks.Stage(1, 1.0, 1.0, 1.0, 0.1)]
    )
    with pytest.raises(ValueError, match="learning_rate_factor.*LearningRateSchedule"):
        distiller.fit(x, y, epochs=2, verbose=0, callbacks=[progressive])


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"interrupted at epoch {epoch}")


RESUMED_KEYS = (
    "alpha",
    "temperature",
    "curriculum_fraction",
    "curriculum_examples",
    "stage",
    "learning_rate",
    # Same weights, optimizer state and per-epoch shuffles: same training.
    "loss",
    "distillation_loss",
)


def run_progressive(backup_dir, interrupt_at=None):
    """A fresh process's worth of objects, then fit with BackupAndRestore."""
    x, y = helpers.digits_subset(n=96)
    distiller = make_distiller(learning_rate=0.05)
    data = kd.curriculum.Curriculum.from_teacher(
        distiller.teacher, x, y, verbose=0, seed=0
    )
    stages = callbacks.progressive_stages(2, 3, 2, min_fraction=0.25)
    progressive = callbacks.ProgressiveDistillation(stages, data)
    extra = [] if interrupt_at is None else [Interrupt(interrupt_at)]
    history = distiller.fit(
        data.dataset(batch_size=32),
        epochs=progressive.total_epochs,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup_dir), progressive, *extra],
    )
    return history


@pytest.mark.slow
@pytest.mark.parametrize("interrupt_at", [3, 6])
def test_resume_reproduces_the_uninterrupted_schedule(tmp_path, interrupt_at):
    full = run_progressive(str(tmp_path / "full")).history
    assert full["curriculum_examples"] == [24, 24, 48, 72, 96, 96, 96]
    assert full["stage"] == [1, 1, 2, 2, 2, 3, 3]
    backup = str(tmp_path / "interrupted")
    with pytest.raises(RuntimeError, match=f"interrupted at epoch {interrupt_at}"):
        run_progressive(backup, interrupt_at=interrupt_at)
    resumed = run_progressive(backup)
    assert resumed.epoch == list(range(interrupt_at, 7))
    for key in RESUMED_KEYS:
        np.testing.assert_allclose(
            resumed.history[key], full[key][interrupt_at:], rtol=1e-5, err_msg=key
        )


def test_any_scalar_variable_of_the_model_can_be_scheduled():
    class WithBeta(kd.Distiller):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.beta = keras.Variable(1.0, trainable=False, name="beta")

    x, y = helpers.digits_subset(n=32)
    distiller = WithBeta(
        student=helpers.tiny_student(), teacher=helpers.trained_teacher()
    )
    distiller.compile(optimizer="sgd")
    assert sorted(callbacks.scalar_variables(distiller)) == [
        "alpha",
        "beta",
        "temperature",
    ]
    history = distiller.fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[
            callbacks.ParameterScheduler("beta", schedules.step([1, 2], [3, 2, 1]))
        ],
    )
    assert history.history["beta"] == [3.0, 2.0, 1.0]
    assert float(distiller.beta.numpy()) == 1.0


def test_fit_progressive_runs_the_three_stages():
    x, y = helpers.digits_subset(n=64)
    distiller = make_distiller(learning_rate=0.1, temperature=5.0)
    history = callbacks.fit_progressive(
        distiller, x, y, epochs=5, batch_size=32, min_fraction=0.5
    )
    logs = history.history
    assert logs["stage"] == [1, 1, 2, 2, 3]
    assert logs["curriculum_examples"] == [32, 32, 48, 64, 64]
    assert logs["alpha"] == pytest.approx([0.1, 0.1, 0.1, 0.1, 1.0])
    assert logs["temperature"] == [5.0, 5.0, 5.0, 2.0, 2.0]
    assert logs["learning_rate"] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="epochs` >= 3.*epochs=2"):
        callbacks.fit_progressive(distiller, x, y, epochs=2)


def test_stage_config_round_trip():
    stage = callbacks.Stage(
        3, 0.2, schedules.cosine(6.0, 2.0, 2), schedules.linear(0.5, 1.0, 2), 0.5
    )
    config = keras.saving.serialize_keras_object(stage)
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.epochs == 3 and restored.alpha(1) == 0.2
    assert [restored.temperature(e) for e in range(3)] == pytest.approx([6, 4, 2])
    assert [restored.data_fraction(e) for e in range(3)] == [0.5, 0.75, 1.0]
    assert restored.learning_rate_factor(0) == 0.5


def test_a_reused_scheduler_assigns_in_every_fit():
    # The second fit's fresh distiller starts at temperature 4; a scheduler
    # that remembered its last value (2) skipped the assignment while the
    # History still said 2.
    x, y = helpers.digits_subset(n=32)
    scheduler = callbacks.ParameterScheduler("temperature", 2.0)
    for _ in range(2):
        distiller = make_distiller(temperature=4.0)
        history = distiller.fit(
            x, y, batch_size=32, epochs=1, verbose=0, callbacks=[scheduler]
        )
        assert float(distiller.temperature.numpy()) == 2.0
        assert history.history["temperature"] == [2.0]
    # The same model, set directly between two fits.
    distiller.temperature = 7.0
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[scheduler])
    assert float(distiller.temperature.numpy()) == 2.0


def test_a_reused_progressive_callback_sets_alpha_in_every_fit():
    x, y = helpers.digits_subset(n=32)
    progressive = callbacks.ProgressiveDistillation(
        [callbacks.Stage(1, alpha=0.5, temperature=3.0)]
    )
    for _ in range(2):
        distiller = make_distiller(alpha=0.1, temperature=4.0)
        history = distiller.fit(
            x, y, batch_size=32, epochs=1, verbose=0, callbacks=[progressive]
        )
        assert float(distiller.alpha.numpy()) == 0.5
        assert float(distiller.temperature.numpy()) == 3.0
        assert history.history["alpha"] == [0.5]
