"""Issue 29's probe (reliability, round 5b): hangs, silent results and unclear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8)).astype("float32")
Y = RNG.integers(0, 10, 32)


def _model(activation=None):
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(10, activation=activation)]
    )


def _distiller(**kwargs):
    teacher = _model()
    teacher(X[:1])
    distiller = kd.Distiller(_model(), teacher, **kwargs)
    distiller.compile(optimizer="adam")
    return distiller


# -- p5b-1: an endless dataset without a step count hung fit/evaluate/predict -----


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_an_endless_dataset_without_steps_is_refused(method):
    distiller = _distiller()
    batches = (X,) if method == "predict" else (X, Y)
    endless = tf.data.Dataset.from_tensor_slices(batches).batch(8).repeat()
    with pytest.raises(ValueError, match=r"endless .*steps"):
        getattr(distiller, method)(endless, verbose=0)


def test_an_endless_validation_set_without_validation_steps_is_refused():
    distiller = _distiller()
    endless = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat()
    with pytest.raises(ValueError, match=r"validation_data .*validation_steps"):
        distiller.fit(X, Y, validation_data=endless, epochs=1, verbose=0)


def test_an_endless_dataset_with_steps_trains():
    distiller = _distiller()
    endless = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat()
    history = distiller.fit(endless, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(distiller.evaluate(endless, steps=2, verbose=0)[0])
    assert distiller.predict(endless.map(lambda x, y: x), steps=2, verbose=0).shape == (
        16,
        10,
    )


# -- p5b-2: a teacher .keras saved uncompiled, or of another input shape --------


def _config(tmp_path, teacher_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: digits\n"
        f"output: {tmp_path / 'run'}\n"
        f"teacher: {{model: {teacher_path}}}\n"
        "student: {model: student_mlp, hidden: 4}\n"
        "distill: {epochs: 1}\n"
        "export: false\n"
    )
    return str(config)


def _uncompiled_teacher(input_shape):
    teacher = keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    teacher.set_weights([RNG.normal(size=w.shape) for w in teacher.get_weights()])
    return teacher


def test_a_teacher_file_of_another_input_shape_is_named(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    path = tmp_path / "teacher.keras"
    _uncompiled_teacher((28, 28, 1)).save(path)
    # Was "AttributeError: 'Sequential' object has no attribute 'optimizer'".
    with pytest.raises(ValueError, match=r"teacher .* \(28, 28, 1\).*\(8, 8, 1\)"):
        runs.train(_config(tmp_path, path), verbose=0)


def test_an_uncompiled_teacher_file_trains_and_an_untrained_one_is_refused(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    path = tmp_path / "teacher.keras"
    untrained = _uncompiled_teacher((8, 8, 1))
    untrained.save(path)
    with pytest.raises(ValueError, match=r"about chance for 10 classes.*untrained"):
        runs.train(_config(tmp_path, path), verbose=0)
    digits = kd.data.load_digits()
    untrained.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    untrained.fit(*digits["train"], epochs=20, verbose=0)
    keras.Sequential(untrained.layers).save(path)  # saved uncompiled again
    runs.train(_config(tmp_path, path), verbose=0)
    assert (tmp_path / "run" / "student.keras").is_file()


# -- p5b-3: a NaN or negative class weight was named as a sample_weight ----------


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_a_bad_class_weight_is_named_as_such(bad):
    distiller = _distiller()
    class_weight = {i: 1.0 for i in range(10)}
    class_weight[3] = bad
    with pytest.raises(ValueError, match=r"`class_weight` gives class 3 the weight"):
        distiller.fit(X, Y, class_weight=class_weight, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`class_weight` gives class 3 the weight"):
        distiller.train_on_batch(X, Y, class_weight=class_weight)


# -- p5b-4: a weights file that is not one: h5py's message, without the file ----


def test_an_applications_weights_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=r"w\.h5' could not be loaded.*notop"):
        kd.applications.build("MobileNetV3Small", (8, 8, 1), 10, weights=str(path))


# -- p5b-5: int8 calibration on NaN inputs gave a model without a word ------------


def test_int8_calibration_refuses_non_finite_inputs(tmp_path):
    student = _model()
    student(X[:1])
    exported = kd.export_student(student, str(tmp_path / "s"), verbose=False)
    inputs = X.copy()
    inputs[5, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"finite.*Example 5 holds nan at index \(2,\)"
    ):
        kd.serving.quantize_int8(exported.path, inputs)


# -- p5b-6: a 2-output student with a 1-output teacher: a rank error about tokens --


def test_a_two_output_student_with_a_one_output_teacher_is_refused():
    inputs = keras.Input((8,))
    student = keras.Model(
        inputs, [keras.layers.Dense(10)(inputs), keras.layers.Dense(10)(inputs)]
    )
    teacher = _model()
    teacher(X[:1])
    with pytest.raises(ValueError, match=r"student .* has 2 outputs.*teacher .* has 1"):
        kd.Distiller(student, teacher)


# -- p5b-7: evaluate with every sample weight 0 reported losses of 0 ------------


def test_evaluate_with_every_sample_weight_zero_warns():
    distiller = _distiller()
    with pytest.warns(
        UserWarning, match=r"Every `sample_weight` is 0.*measure nothing"
    ):
        distiller.evaluate(X, Y, sample_weight=np.zeros(32), verbose=0)


# -- p5b-8: GroupedTeacher refused NumPy class ids as classes it lacks ------------


def test_grouped_teacher_takes_numpy_class_ids_and_refuses_bools():
    teacher = _model()
    teacher(X[:1])
    grouped = kd.transfer.GroupedTeacher(
        teacher, [list(np.arange(0, 10, 2)), list(np.arange(1, 10, 2))]
    )
    assert grouped.groups == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    with pytest.raises(ValueError, match=r"references source classes \[True\]"):
        kd.transfer.GroupedTeacher(teacher, [[0, True], [2, 3]])
    with pytest.raises(ValueError, match=r"`groups` must be a list of lists"):
        kd.transfer.GroupedTeacher(teacher, "even,odd")


# -- p5b-9: TeacherCache.build(rows_per_shard=0) wrote empty shards for ever -------


@pytest.mark.parametrize("name", ["rows_per_shard", "batch_size"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_cache_build_counts_are_whole_numbers(tmp_path, name, value):
    teacher = _model()
    teacher(X[:1])
    with pytest.raises(ValueError, match=rf"`{name}` must be a whole number >= 1"):
        kd.cache.TeacherCache.build(
            teacher, X, str(tmp_path / "c"), verbose=0, **{name: value}
        )
    assert not (tmp_path / "c").exists()


# -- p5b-10: a build_student without `hp`: Python's "takes 0 positional arguments" --


def test_tune_names_a_student_builder_without_hp(tmp_path):
    pytest.importorskip("keras_tuner")
    teacher = _model()
    teacher(X[:1])
    with pytest.raises(TypeError, match=r"`build_student` must take one argument.*hp"):
        kd.tune(
            teacher,
            lambda: _model(),
            (X, Y),
            (X, Y),
            max_trials=1,
            epochs=1,
            directory=str(tmp_path),
            verbose=0,
        )


# -- p5b-11: weights of another student architecture: Keras's variable counts ----


def test_weights_of_another_architecture_are_named(tmp_path):
    distiller = _distiller()
    distiller.fit(X, Y, epochs=1, verbose=0)
    path = str(tmp_path / "w.weights.h5")
    distiller.save_weights(path)
    teacher = _model()
    teacher(X[:1])
    student = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(10)]
    )
    other = kd.Distiller(student, teacher)
    other.compile(optimizer="adam")
    other.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"w\.weights\.h5' do not fit this distiller"):
        other.load_weights(path)


# -- p5b-12: image folders: an empty class folder, a split missing a class --------


def _images(root, classes, n=4):
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = RNG.integers(0, 255, size=(8, 8, 3)).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_an_empty_class_folder_is_refused(tmp_path):
    _images(tmp_path, ["a", "b"], n=6)
    (tmp_path / "c").mkdir()
    # Was a 3-class dataset, class 'c' without a single example.
    with pytest.raises(ValueError, match=r"class folder .*/c' holds no images"):
        kd.data.load_image_folder(tmp_path, image_size=(8, 8))


def test_a_split_missing_a_class_is_refused(tmp_path):
    _images(tmp_path / "train", ["a", "b", "c"])
    _images(tmp_path / "val", ["a", "c"])
    # Was silent: Keras numbered val's 'c' as 1, the label of 'b'.
    with pytest.raises(ValueError, match=r"val' has the classes \['a', 'c'\]"):
        kd.data.load_image_folder(tmp_path, image_size=(8, 8))
    _images(tmp_path / "val", ["b"])
    splits = kd.data.load_image_folder(tmp_path, image_size=(8, 8))
    assert splits.num_classes == 3


# -- p5b-13: string labels ended in optree's "Invalid dtype: str352" --------------


def test_string_labels_are_named():
    distiller = _distiller()
    with pytest.raises(ValueError, match=r"labels of the training data are <U\d+ .*'"):
        distiller.fit(X, Y.astype(str), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"not numbers"):
        distiller.evaluate(X, Y.astype(str), verbose=0)


# -- p5b-14: a manifest whose counts were edited was accepted ---------------------


@pytest.mark.parametrize("key, value", [("num_classes", 11), ("num_examples", 31)])
def test_a_manifest_with_edited_counts_is_corrupt(tmp_path, key, value):
    import json

    teacher = _model()
    teacher(X[:1])
    directory = tmp_path / "c"
    kd.cache.TeacherCache.build(teacher, X, str(directory), verbose=0)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest[key] = value
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(kd.cache.CacheCorruptError, match=rf"corrupt.*{value}"):
        kd.cache.TeacherCache(str(directory))


# -- p5b-15: npz: a test/val label the training labels never reach ---------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_an_npz_label_beyond_the_training_classes_is_refused(tmp_path, split):
    path = tmp_path / "d.npz"
    x = RNG.random((40, 4, 4)).astype("float32")
    y = np.arange(40) % 10
    other = y.copy()
    other[3] = 12
    np.savez(path, x_train=x, y_train=y, **{f"x_{split}": x, f"y_{split}": other})
    # Was: a test label failed only after training; a val label added classes.
    with pytest.raises(ValueError, match=rf"`y_{split}` holds the label 12.*0\.\.9"):
        kd.data.load(f"npz:{path}")


# -- p5b-16: a frozen student: "not enough values to unpack (expected 2, got 0)" --


def test_a_frozen_student_is_named():
    distiller = _distiller()
    distiller.student.trainable = False
    with pytest.raises(ValueError, match=r"no trainable weights.*trainable = True"):
        distiller.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"no trainable weights"):
        distiller.train_on_batch(X, Y)


# -- p5b-17: export with an input_signature of another shape: Keras's layer error --


def test_export_names_an_input_signature_of_another_shape(tmp_path):
    student = _model()
    student(X[:1])
    signature = tf.TensorSpec((None, 7), tf.float32)
    with pytest.raises(
        ValueError, match=r"`input_signature` has examples of shape \(7,\)"
    ):
        kd.export_student(
            student, str(tmp_path / "s"), input_signature=signature, verbose=False
        )
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_int8_calibration_names_inputs_of_another_shape(tmp_path):
    student = _model()
    student(X[:1])
    exported = kd.export_student(student, str(tmp_path / "s"), verbose=False)
    # Was the converter's "Attempting to resize dimension 1 of tensor 0".
    with pytest.raises(ValueError, match=r"shape \(7,\), but the SavedModel .* \(8,\)"):
        kd.serving.quantize_int8(exported.path, np.zeros((10, 7), "float32"))


def test_a_teacher_file_of_another_class_count_is_named(tmp_path):
    pytest.importorskip("yaml")
    from keras_distill.app import runs

    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]
    )
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    # Was the sparse cross-entropy kernel's error in the teacher's evaluation.
    with pytest.raises(ValueError, match=r"teacher .* outputs 5 classes.*has 10"):
        runs.train(_config(tmp_path, path), verbose=0)


def test_per_token_weights_of_shape_batch_seq_1_count_as_batch_seq():
    import keras

    import keras_distill as kd

    vocab, length = 12, 6

    def lm(width, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((length,), dtype="int32")
        hidden = keras.layers.Embedding(vocab, width)(inputs)
        return keras.Model(inputs, keras.layers.Dense(vocab)(hidden))

    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (64, length)).astype("int32")
    mask = np.ones((64, length), "float32")
    mask[:, 4:] = 0
    teacher = lm(32, 0)
    losses = []
    for weights in (mask, mask[..., None]):
        distiller = kd.Distiller(lm(16, 1), teacher, temperature=1.0)
        distiller.compile("adam")
        logs = distiller.evaluate(
            ids, np.roll(ids, -1, 1), sample_weight=weights, verbose=0,
            batch_size=64, return_dict=True,
        )  # fmt: skip
        losses.append(logs["loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    # Another rank in a later call of the same distiller: named, not a crash.
    with pytest.raises(ValueError, match="Pass one shape in every call"):
        distiller.evaluate(
            ids, np.roll(ids, -1, 1), sample_weight=mask, verbose=0, batch_size=64
        )


def test_an_npz_class_id_far_past_the_labels_is_refused(tmp_path):
    from keras_distill import data

    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    y[3] = 10**12
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y.astype("int64"))
    with pytest.raises(ValueError, match=r"class id 1000000000000 \(y_train\[3\]\)"):
        data.load(f"npz:{path}", batch_size=8)


def test_the_same_builder_written_elsewhere_is_the_same_search():
    from keras_distill.tuner import search_folder

    def build(hp):
        return hp

    def nested():
        return lambda hp: build(hp)

    assert search_folder.builder_fingerprint(
        lambda hp: build(hp)
    ) == search_folder.builder_fingerprint(nested())
    assert search_folder.builder_fingerprint(
        lambda hp: build(hp)
    ) != search_folder.builder_fingerprint(lambda hp: build(None))


def test_validation_freq_below_one_is_refused_before_training():
    import keras_distill as kd
    from tests.helpers import digits_subset, tiny_student, trained_teacher

    x, y = digits_subset()
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile("adam")
    for freq in (0, -1, 1.5):
        with pytest.raises(ValueError, match=f"validation_freq={freq!r}"):
            distiller.fit(x, y, validation_data=(x, y), validation_freq=freq, verbose=0)


def test_tune_refuses_an_empty_split():
    import keras_distill as kd
    from tests.helpers import digits_subset, tiny_student, trained_teacher

    x, y = digits_subset()
    with pytest.raises(ValueError, match="`val` holds no examples"):
        kd.tune(
            trained_teacher(), lambda hp: tiny_student(), (x, y), (x[:0], y[:0]),
            max_trials=1, epochs=1, verbose=0,
        )  # fmt: skip
