"""One source of truth for parameter rules: keras_distill.params."""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import params
from tests.helpers import digits_subset, tiny_student, trained_teacher


def _distiller(**kwargs):
    distiller = kd.Distiller(tiny_student(), trained_teacher(), **kwargs)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    return distiller


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("temperature", 1e-46, r"representable in float32.*stored as 0\.0"),
        ("temperature", 1e39, r"fit in float32.*stored as inf"),
        ("temperature", float("nan"), "finite"),
        ("temperature", "4", "must be a number.*'4' of type str"),
        ("alpha", True, "must be a number.*True of type bool"),
        ("alpha", [0.1, 0.2], "must be a number"),
        ("alpha", 1.5, r"in \[0, 1\].*alpha=1\.5"),
        ("hint_weight", -1.0, ">= 0.*hint_weight=-1"),
    ],
)
def test_values_are_checked_as_they_will_be_stored(name, value, match):
    with pytest.raises(ValueError, match=match):
        params.check(name, value)


def test_every_path_uses_the_same_rule():
    assert params.check("alpha", np.float32(0.25)) == 0.25
    # Constructor, setter, the loss class and the tuner's ranges all refuse
    # what float32 cannot hold.
    with pytest.raises(ValueError, match="representable in float32"):
        kd.Distiller(tiny_student(), trained_teacher(), temperature=1e-46)
    distiller = _distiller()
    with pytest.raises(ValueError, match="fit in float32"):
        distiller.temperature = 1e39
    with pytest.raises(ValueError, match="finite"):
        kd.losses.KnowledgeDistillation(temperature=float("inf"))
    with pytest.raises(ValueError, match="representable in float32"):
        kd.callbacks.Stage(2, alpha=0.1, temperature=1e-40)


def test_adding_a_parameter_is_one_declaration():
    spec = params.Param("beta", 0.5, 0.0, 2.0)
    assert spec.rule == "in [0, 2]" and spec.check(2.0) == 2.0
    with pytest.raises(ValueError, match=r"`beta` must be in \[0, 2\]"):
        spec.check(2.5)
    assert set(params.SPECS) >= {"alpha", "temperature", "hint_weight"}


@pytest.mark.parametrize(
    "name, value, match",
    [
        (
            "temperature",
            0.0,
            r"`temperature` must be > 0.*temperature=0\.0 at an assig",
        ),
        ("temperature", float("nan"), r"`temperature` must be a finite.*=nan at an"),
        ("alpha", 5.0, r"`alpha` must be in \[0, 1\].*alpha=5\.0 at an assignment"),
        ("alpha", 1e-46, r"`alpha` must be in \[0, 1\] and representable in float32"),
    ],
)
def test_a_direct_assignment_is_refused_at_once(name, value, match):
    x, y = digits_subset(n=64)
    distiller = _distiller()
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    variable = getattr(distiller, name)
    held = float(variable.numpy())
    with pytest.raises(ValueError, match=match):
        variable.assign(value)
    with pytest.raises(ValueError, match=match):  # set_weights assigns too
        distiller.set_weights(
            [
                np.asarray(value) if w is variable else w.numpy()
                for w in distiller.weights
            ]
        )
    assert float(variable.numpy()) == held  # nothing was stored
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)


def test_assign_add_and_sub_are_checked_on_the_sum():
    distiller = _distiller(alpha=0.5)
    distiller.alpha.assign_add(0.25)
    assert float(distiller.alpha.numpy()) == 0.75
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\].*=1\.25"):
        distiller.alpha.assign_add(0.5)
    with pytest.raises(ValueError, match=r"`temperature` must be > 0.*=-1\.0"):
        distiller.temperature.assign_sub(5.0)
    assert float(distiller.alpha.numpy()) == 0.75


def test_an_assignment_in_a_traced_function_is_checked_in_the_graph():
    x, y = digits_subset(n=32)
    distiller = _distiller()

    @tf.function
    def set_temperature(value):
        distiller.temperature.assign(value)

    set_temperature(tf.constant(2.0))
    assert float(distiller.temperature.numpy()) == 2.0
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`temperature` must be > 0.*assigned 0"
    ):
        set_temperature(tf.constant(0.0))
    assert float(distiller.temperature.numpy()) == 2.0
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)


@pytest.mark.parametrize("weights", [[float("inf"), 1.0], ["heavy", 1.0], [None, 1.0]])
def test_bad_teacher_weights_get_one_clear_error(weights):
    teachers = [trained_teacher(), trained_teacher(epochs=1)]
    with pytest.raises(
        ValueError, match=r"teacher_weights` must be 2 finite non-negative"
    ):
        kd.Distiller(tiny_student(), teachers, teacher_weights=weights)


def test_two_schedulers_on_one_parameter_are_refused():
    x, y = digits_subset(n=32)
    distiller = _distiller()
    first = kd.callbacks.ParameterScheduler("alpha", kd.schedules.constant(0.2))
    second = kd.callbacks.ParameterScheduler("alpha", kd.schedules.constant(0.8))
    with pytest.raises(ValueError, match="Two `ParameterScheduler`s set 'alpha'"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[first, second])
    # The claim of an interrupted fit does not block the next one.
    distiller.fit(x, y, epochs=1, verbose=0, callbacks=[second])
    assert float(distiller.alpha.numpy()) == pytest.approx(0.8)


def test_scheduler_goes_through_the_rules_of_hint_weight():
    x, y = digits_subset(n=32)
    distiller = kd.Distiller(
        kd.models.student_cnn(),
        trained_teacher(),
        hints=[kd.hints.Hint("conv2", "conv1")],
    )
    distiller.compile(optimizer="adam")
    scheduler = kd.callbacks.ParameterScheduler(
        "hint_weight", kd.schedules.linear(1.0, -1.0, 3)
    )
    with pytest.raises(ValueError, match=r"hint_weight` must be >= 0.*epoch 2"):
        distiller.fit(x, y, epochs=3, verbose=0, callbacks=[scheduler])


def _set_saved_scalar(path, old_value, new_value):
    """Rewrites a scalar variable equal to `old_value` in a `.keras` file."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    changed = []
    with h5py.File(buffer, "r+") as weights:

        def visit(name, node):
            if isinstance(node, h5py.Dataset) and node.shape == ():
                if np.isclose(node[()], old_value):
                    node[()] = new_value
                    changed.append(name)

        weights.visititems(visit)
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return changed


def test_a_saved_nan_parameter_fails_at_load(tmp_path):
    path = str(tmp_path / "d.keras")
    distiller = _distiller(alpha=0.37)
    distiller.save(path)
    assert _set_saved_scalar(path, 0.37, np.nan)
    with pytest.raises(
        ValueError, match=r"saved distiller holds an invalid parameter: `alpha`.*nan"
    ):
        keras.models.load_model(path)


def test_term_parameters_follow_their_family_rules():
    assert params.check("dkd_weight", 0.0) == 0.0
    with pytest.raises(ValueError, match=r"`dkd_weight` must be >= 0 \(the weight of"):
        params.check("dkd_weight", -0.5)
    with pytest.raises(ValueError, match=r"`ctkd_reversal` must be >= 0"):
        params.check("ctkd_reversal", -1.0)
    assert params.spec("weight") is None  # a bare suffix is no family member


@pytest.mark.parametrize("value", [1e-30, 1.2e-38, 1e19, 3e38])
def test_a_temperature_outside_the_sound_range_is_warned_about(value):
    with pytest.warns(UserWarning, match=r"`temperature`=.* outside \[0\.01, 1000\]"):
        params.check("temperature", value)


def test_usual_temperatures_are_not_warned_about():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (0.01, 1.0, 4.0, 20.0, 1000.0):
            params.check("temperature", value)


def test_an_unusual_temperature_is_warned_about_once():
    import warnings

    for make in (
        lambda: kd.Distiller(tiny_student(), trained_teacher(), temperature=1e-3),
        lambda: setattr(
            kd.Distiller(tiny_student(), trained_teacher()), "temperature", 2e3
        ),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make()
        found = [w for w in caught if "`temperature`=" in str(w.message)]
        assert len(found) == 1, [str(w.message) for w in found]
        assert "learns nothing from the teacher" in str(found[0].message)


def test_a_nan_loss_from_a_tiny_temperature_blames_the_temperature():
    x, y = digits_subset(n=32)
    with pytest.warns(UserWarning, match="outside"):
        distiller = kd.Distiller(tiny_student(), trained_teacher(), temperature=3e38)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError) as error:
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    message = str(error.value)
    assert "`temperature` holds 3e+38, outside [0.01, 1000]" in message
    assert "likely cause" in message
    assert "Look for NaN or inf in the inputs" not in message


def test_save_refuses_a_parameter_that_load_model_would_refuse(tmp_path):
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="sgd")
    # The variable refuses 7.0 (see above); a raw write (as a corrupt
    # checkpoint could make) goes around it, and save() still refuses it.
    distiller.alpha.value.assign(7.0)
    path = tmp_path / "d.keras"
    with pytest.raises(
        ValueError, match=r"distiller to save holds an invalid `alpha`.*in \[0, 1\]"
    ):
        distiller.save(path)
    assert not path.exists()
    distiller.alpha = 0.5
    distiller.save(path)
    assert float(keras.models.load_model(path).alpha.numpy()) == 0.5


def test_a_checkpoint_restore_is_checked(tmp_path):
    # `tf.train.Checkpoint` (kd.distribute's per-epoch checkpoints) restores
    # through the variable's `_restore_from_tensors`, not `assign`.
    source = _distiller()
    source.alpha.value.assign(5.0)  # a checkpoint written around the rule
    path = tf.train.Checkpoint(**source.training_state()).save(str(tmp_path / "c"))
    target = _distiller(alpha=0.3)
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\].*alpha=5\.0"):
        tf.train.Checkpoint(**target.training_state()).restore(path)
    assert float(target.alpha.numpy()) == pytest.approx(0.3)


@pytest.mark.parametrize("kind", ["tf", "keras"])
def test_a_variable_assigned_in_a_traced_function_is_checked_in_the_graph(kind):
    # A variable read in a traced function has a `numpy` method that only
    # works eagerly: it is checked in the graph, like a tensor.
    distiller = _distiller()
    source = tf.Variable(0.25) if kind == "tf" else keras.Variable(0.25)

    @tf.function
    def copy():
        distiller.alpha.assign(source)

    copy()
    assert float(distiller.alpha.numpy()) == 0.25
    source.assign(5.0)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`alpha` must be in \[0, 1\].*assigned 5"
    ):
        copy()
    assert float(distiller.alpha.numpy()) == 0.25
