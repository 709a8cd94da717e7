"""Issue 29's fresh probe (reliability, round 4): the silent and unclear cases it found."""

import keras
import numpy as np
import pytest

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(classes=10):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(classes)])
    return model


def _distiller(**kwargs):
    return kd.Distiller(_model(), _model(), **kwargs)


# -- compile() and fit() arguments -----------------------------------------------


def test_loss_weights_without_loss_refused():
    # Keras weighs only a compiled loss: with loss=None they were ignored.
    distiller = _distiller()
    with pytest.raises(ValueError, match=r"loss_weights=\[0.5\].*no `loss`"):
        distiller.compile(optimizer="adam", loss_weights=[0.5])
    distiller.compile(  # with the loss they weigh: accepted
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        loss_weights=[0.5],
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),  # Keras trained at 32
        ({"epochs": -3}, "epochs"),  # Keras trained nothing, no word
        ({"epochs": 2.5}, "epochs"),
        ({"initial_epoch": -1}, "initial_epoch"),
    ],
)
def test_fit_counts_checked(kwargs, name):
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    before = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
        distiller.fit(X, Y, verbose=0, **kwargs)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, distiller.student.get_weights())
    )


def test_fit_counts_checked_by_position():
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="`batch_size` must be a whole number"):
        distiller.fit(X, Y, 0, 1, 0)


# -- terms -----------------------------------------------------------------------


def test_attention_transfer_refuses_flat_features():
    # The map of (batch, units) features is one number per example, normalised
    # to 1: the hint's loss was always 0 and taught nothing.
    t = RNG.normal(size=(4, 16)).astype("float32")
    s = RNG.normal(size=(4, 8)).astype("float32")
    with pytest.raises(ValueError, match="spatial axes"):
        kd.losses.attention_transfer_loss(t, s)
    maps = RNG.normal(size=(4, 3, 3, 2)).astype("float32")
    assert np.all(np.isfinite(kd.losses.attention_transfer_loss(maps, maps * 2)))


# -- continual learning ----------------------------------------------------------


def _tasks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8)).astype("float32")
    y = np.repeat([0, 1, 2, 3], 10)
    return [
        kd.continual.Task((x[y < 2], y[y < 2]), (x[y < 2], y[y < 2]), (0, 1)),
        kd.continual.Task((x[y >= 2], y[y >= 2]), (x[y >= 2], y[y >= 2]), (2, 3)),
    ]


def test_learn_never_overwrites_a_users_file_named_like_its_outputs(tmp_path):
    # No run.json: task_1.keras is not a run's, and was overwritten.
    (tmp_path / "task_1.keras").write_text("mine")
    with pytest.raises(FileExistsError, match="task_1.keras"):
        kd.continual.learn(_tasks(), _model, tmp_path, epochs=1)
    assert (tmp_path / "task_1.keras").read_text() == "mine"


def test_exemplar_memory_refuses_inputs_and_labels_of_two_lengths():
    memory = kd.continual.ExemplarMemory(4, selection="random")
    with pytest.raises(ValueError, match="30 inputs and 20 labels"):
        memory.update(_model(), RNG.normal(size=(30, 8)), Y[:20])


# -- curriculum ------------------------------------------------------------------


def test_curriculum_refuses_nan_difficulty():
    x = X.copy()
    x[3] = np.nan
    with pytest.raises(ValueError, match="Received nan for example 3"):
        kd.curriculum.Curriculum.from_teacher(_model(), x, Y, verbose=0)


def test_two_curriculum_schedulers_on_one_curriculum_refused():
    curriculum = kd.curriculum.Curriculum.from_teacher(_model(), X, Y, verbose=0)
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    schedulers = [
        kd.callbacks.CurriculumScheduler(curriculum, 0.5),
        kd.callbacks.CurriculumScheduler(curriculum, 0.7),
    ]
    with pytest.raises(ValueError, match="Two `CurriculumScheduler`s"):
        distiller.fit(curriculum.dataset(8), epochs=1, callbacks=schedulers, verbose=0)
    # One scheduler per curriculum still works, also in a second fit().
    distiller.fit(curriculum.dataset(8), epochs=1, callbacks=schedulers[:1], verbose=0)
    distiller.fit(curriculum.dataset(8), epochs=1, callbacks=schedulers[:1], verbose=0)


# -- transfer --------------------------------------------------------------------


def test_grouped_teacher_refuses_probabilities_declared_logits():
    softmax = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="softmax")]
    )
    with pytest.raises(ValueError, match="returns probabilities"):
        kd.transfer.GroupedTeacher(softmax, [[0, 1], [2, 3]])
    grouped = kd.transfer.GroupedTeacher(
        softmax, [[0, 1], [2, 3]], teacher_outputs="probabilities"
    )
    assert grouped(X[:2]).shape == (2, 2)


# -- tuner -----------------------------------------------------------------------


_TEACHER = _model()  # one teacher: a search of another teacher is another search


def _tune(tmp_path, **kwargs):
    kwargs.setdefault("train", (X, Y))
    return kd.tune(
        _TEACHER,
        _model(),
        kwargs.pop("train"),
        (X, Y),
        max_trials=1,
        epochs=1,
        directory=str(tmp_path),
        verbose=0,
        **kwargs,
    )


@pytest.mark.parametrize("broken", ["length", "nan"])
def test_tune_checks_the_split_before_any_trial(tmp_path, broken):
    pytest.importorskip("keras_tuner")
    x = X.copy()
    if broken == "nan":
        x[5] = np.nan
    train = (x, Y[:20]) if broken == "length" else (x, Y)
    match = "32 inputs and 20 labels" if broken == "length" else "example 5"
    with pytest.raises(ValueError, match=match):  # was: a missing trial checkpoint
        _tune(tmp_path, train=train)


def test_tune_refuses_to_resume_another_search(tmp_path):
    pytest.importorskip("keras_tuner")
    _tune(tmp_path)
    with pytest.raises(ValueError, match="holds another search"):
        _tune(tmp_path, terms=["dkd", "mse"])  # silently returned the kd search
    _tune(tmp_path)  # the same search resumes
    _tune(tmp_path, terms=["dkd", "mse"], overwrite=True)


def test_tune_reports_the_trials_error_when_every_trial_failed(tmp_path):
    pytest.importorskip("keras_tuner")
    calls = []

    def build_student(hp):  # the search space's first build works; trials fail
        calls.append(hp)
        if len(calls) > 1:
            raise ValueError("the user's builder broke")
        return _model()

    # Was: FileNotFoundError of trial_0/checkpoint.weights.h5.
    with pytest.raises(RuntimeError, match="builder broke"):
        kd.tune(
            _model(),
            build_student,
            (X, Y),
            (X, Y),
            max_trials=1,
            epochs=1,
            directory=str(tmp_path),
            verbose=0,
        )


# -- the hard-label loss and the labels' shape ------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        "binary_crossentropy",
        keras.losses.CategoricalCrossentropy(from_logits=True),
        "mse",
    ],
)
@pytest.mark.parametrize("column", [False, True])
def test_a_per_class_loss_refuses_class_ids(loss, column):
    # Was a Keras rank or broadcast error, or, for (batch, 1) labels and MSE,
    # a loss broadcast over every class without a word.
    distiller = _distiller()
    distiller.compile(optimizer="adam", loss=loss)
    labels = Y[:, None] if column else Y
    with pytest.raises(ValueError, match="one class id per example"):
        distiller.fit(X, labels, epochs=1, verbose=0)
    distiller = _distiller()
    distiller.compile(optimizer="adam", loss=loss)
    distiller.fit(X, keras.utils.to_categorical(Y, 10), epochs=1, verbose=0)


# -- teacher cache ---------------------------------------------------------------


def test_cache_build_refuses_nan_inputs(tmp_path):
    # A ReLU maps NaN to 0: the teacher's outputs looked finite and were cached.
    teacher = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    x = X.copy()
    x[7] = np.nan
    with pytest.raises(ValueError, match="first at example 7"):
        kd.cache.TeacherCache.build(teacher, x, tmp_path / "c", verbose=0)
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_cache_dataset_names_bad_lengths_and_batched_datasets(tmp_path):
    import tensorflow as tf

    teacher = _model()
    cache = kd.cache.TeacherCache.build(teacher, X, tmp_path / "c", verbose=0)
    with pytest.raises(ValueError, match="32 inputs and 20 y entries"):
        cache.dataset(X, Y[:20])  # was: "Dimensions 32 and 20 are not compatible"
    batched = tf.data.Dataset.from_tensor_slices(X).batch(8)
    with pytest.raises(kd.cache.CacheMismatchError, match="looks batched"):
        cache.dataset(batched)
    cache.dataset(batched.unbatch())


# -- data loaders ----------------------------------------------------------------


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_refuses_nan_images(tmp_path):
    x = RNG.uniform(size=(20, 4, 4)).astype("float32")
    x[6, 1, 1] = np.nan
    with pytest.raises(ValueError, match="example 6"):
        kd.data.npz_arrays(_npz(tmp_path, x_train=x, y_train=np.arange(20) % 3))


@pytest.mark.parametrize("n, fraction", [(20, 1.0), (1, 0.1)])
def test_npz_refuses_a_hold_out_that_leaves_no_training_data(tmp_path, n, fraction):
    x = RNG.uniform(size=(n, 4, 4)).astype("float32")
    path = _npz(tmp_path, x_train=x, y_train=np.arange(n) % 3)
    with pytest.raises(ValueError, match="val_fraction"):
        kd.data.npz_arrays(path, val_fraction=fraction)


def test_npz_refuses_splits_of_other_shapes_and_object_arrays(tmp_path):
    x = RNG.uniform(size=(20, 4, 4)).astype("float32")
    y = np.arange(20) % 3
    path = _npz(tmp_path, x_train=x, y_train=y, x_test=x[:5, :2], y_test=y[:5])
    with pytest.raises(ValueError, match="x_test"):
        kd.data.npz_arrays(path)
    objects = np.array([object()] * 4, dtype=object)
    path = _npz(tmp_path, x_train=objects, y_train=y[:4])
    with pytest.raises(ValueError, match="`x_train` is an array of Python objects"):
        kd.data.npz_arrays(path)


def test_image_folder_checks_image_size(tmp_path):
    with pytest.raises(ValueError, match="image_size"):  # was: "No images found"
        kd.data.load_image_folder(tmp_path, image_size=(0, 8))


def test_shift_axis_outside_the_examples_is_named():
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    with pytest.raises(ValueError, match=r"shift\(axis=7\)"):
        next(iter(kd.augment.augment_dataset(data, kd.augment.shift(2, axis=7))))


# -- export ----------------------------------------------------------------------


def test_export_checks_sample_inputs_shape_and_the_file(tmp_path):
    student = _model()
    with pytest.raises(ValueError, match=r"of shape \(batch, 8\)"):
        kd.export_student(student, tmp_path / "s", sample_inputs=np.zeros((6, 64)))
    garbage = tmp_path / "g.keras"
    garbage.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="not a zip archive"):  # was: File not found
        kd.export.load_for_export(garbage)


# -- configs ---------------------------------------------------------------------


def test_config_names_a_huge_integer_and_explains_yaml_floats():
    from keras_distill.app.config import ConfigError, parse

    with pytest.raises(ConfigError, match=r"<config>:2: seed: the value"):
        parse("output: x\nseed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"write 1\.0e-3"):
        parse("output: x\ndistill: {learning_rate: 1e-3}\n")


# -- distribution ----------------------------------------------------------------


def test_distribute_fit_backs_up_atomically_and_names_a_foreign_backup(tmp_path):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    distiller = _distiller()
    distiller.compile(optimizer="adam")
    kd.distribute.fit(distiller, data, epochs=1, checkpoint_dir=tmp_path, verbose=0)
    # Written beside and swapped in (Keras's BackupAndRestore wrote in place).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000000001.weights.h5"]
    other = kd.Distiller(
        keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(10)]
        ),
        _model(),
    )
    other.compile(optimizer="adam")
    other.build((None, 8))
    # Was Keras's "A total of 3 objects could not be loaded".
    with pytest.raises(ValueError, match="No backup in .* loads"):
        kd.distribute.fit(other, data, epochs=2, checkpoint_dir=tmp_path, verbose=0)


# -- recipes ---------------------------------------------------------------------


def test_progressive_distillation_with_a_huge_epoch_count_starts_at_once():
    # `fit(epochs=10**12)` with EarlyStopping: the constant learning-rate
    # factor was checked at every epoch, so training never started.
    import threading

    distiller = _distiller()
    distiller.compile(optimizer="adam")
    stages = [kd.recipes.Stage(1, 0.1, 4.0), kd.recipes.Stage(1, 0.5, 2.0)]
    callback = kd.recipes.ProgressiveDistillation(stages)
    callback.set_model(distiller)
    callback.set_params({"epochs": 10**12, "verbose": 0, "steps": 1})
    started = threading.Thread(target=callback.on_train_begin, daemon=True)
    started.start()
    started.join(timeout=30)
    assert not started.is_alive(), "on_train_begin walked every epoch"


def test_fractional_token_ids_refused():
    # Keras cast them to the int32 input, truncating 3.4 to 3 without a word.
    def lm():
        ids = keras.Input((4,), dtype="int32")
        h = keras.layers.Embedding(12, 4)(ids)
        return keras.Model(ids, keras.layers.Dense(12)(h))

    distiller = kd.Distiller(lm(), lm())
    distiller.compile(optimizer="adam")
    ids = RNG.integers(0, 12, size=(8, 4))
    with pytest.raises(ValueError, match="fractional values, e.g. 3.4"):
        x = ids.astype("float32")
        x[1, 2] = 3.4
        distiller.fit(x, ids, epochs=1, verbose=0)
    distiller.fit(ids.astype("float32"), ids, epochs=1, verbose=0)  # whole: fine


def test_cli_evaluate_names_data_of_another_shape(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    path = tmp_path / "student.keras"
    kd.models.student_mlp().save(path)  # digits: (8, 8, 1)
    # Was Keras's "Exception encountered when calling Sequential.call()".
    with pytest.raises(ValueError, match=r"inputs of shape \(8, 8, 1\).*'mnist1d'"):
        runs.evaluate(str(path), source="mnist1d", serving=False)


def test_image_folder_too_small_for_a_validation_split_is_named(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    for i in range(6):
        pixels = RNG.integers(0, 255, size=(8, 8, 3)).astype("uint8")
        Image.fromarray(pixels).save(tmp_path / "a" / f"{i}.png")
    # Was Keras's "No images found in directory" (there are 6).
    with pytest.raises(ValueError, match="of its 6 images leaves a split with none"):
        kd.data.load_image_folder(tmp_path, image_size=(8, 8))
