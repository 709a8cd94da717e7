"""Issue 29's data, export and continual cases: each was a silent wrong result
or an unclear error on the code before the fix."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import data, export
from tests.helpers import digits

# -- export: what is served under each key ------------------------------------


def _model(last=None):
    layers = [keras.Input((3,), name="features"), keras.layers.Dense(4)]
    if last is not None:
        layers.append(last)
    keras.utils.set_random_seed(0)
    return keras.Sequential(layers)


def _served(result, x):
    signature = tf.saved_model.load(result.path).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(features=tf.constant(x)).items()}


X3 = np.random.default_rng(0).uniform(size=(6, 3)).astype("float32")


@pytest.mark.parametrize(
    "last",
    [
        keras.layers.Softmax(),
        keras.layers.Activation("softmax"),
        keras.layers.Lambda(keras.ops.softmax),  # seen only from its outputs
    ],
    ids=["Softmax", "Activation", "Lambda"],
)
def test_a_softmax_model_serves_its_probabilities_not_a_softmax_of_them(last, tmp_path):
    model = _model(last)
    result = kd.export_student(model, tmp_path / "m", warmup_requests=0, verbose=False)
    assert result.outputs == ("classes", "probabilities")
    served = _served(result, X3)
    np.testing.assert_allclose(served["probabilities"], model.predict(X3), atol=1e-6)


def test_a_sigmoid_model_is_refused(tmp_path):
    model = _model(keras.layers.Activation("sigmoid"))
    with pytest.raises(ValueError, match="ends in a sigmoid"):
        kd.export_student(model, tmp_path / "m", verbose=False)
    assert not os.path.exists(tmp_path / "m")


def test_a_distiller_declaring_logits_for_a_probability_student_is_refused(tmp_path):
    student = _model(keras.layers.Lambda(keras.ops.softmax))
    teacher = _model()
    d = kd.Distiller(student=student, teacher=teacher)
    with pytest.raises(ValueError, match="student_outputs='logits'"):
        kd.export_student(d, tmp_path / "m", verbose=False)
    assert not os.path.exists(tmp_path / "m")


def test_verification_compares_the_served_logits_too(tmp_path, monkeypatch):
    """Served logits off by a constant give the same probabilities: caught."""
    serving_fn = export._serving_fn

    def shifted(student, student_outputs):
        serve = serving_fn(student, student_outputs)

        def wrong(inputs):
            result = dict(serve(inputs))
            result["logits"] = result["logits"] + 1.0
            return result

        return wrong

    monkeypatch.setattr(export, "_serving_fn", shifted)
    with pytest.raises(export.ExportVerificationError, match="'logits' differ"):
        kd.export_student(_model(), tmp_path / "m", warmup_requests=0, verbose=False)
    assert os.listdir(tmp_path / "m") == []


# -- export: warm-up requests ----------------------------------------------------


def _warmup_count(result):
    path = os.path.join(result.path, export.WARMUP_FILE)
    return sum(1 for _ in tf.data.TFRecordDataset(path))


@pytest.mark.parametrize("bad", [-1, True, 2.5, "3", 1001])
def test_bad_warmup_requests_are_refused_naming_the_value(bad, tmp_path):
    with pytest.raises(ValueError, match=f"warmup_requests={bad!r}"):
        kd.export_student(_model(), tmp_path / "m", warmup_requests=bad)
    assert not os.path.exists(tmp_path / "m")


def test_warmup_requests_writes_exactly_the_number_asked(tmp_path):
    model = _model()
    result = kd.export_student(model, tmp_path / "a", warmup_requests=50, verbose=False)
    assert _warmup_count(result) == 50
    result = kd.export_student(
        model, tmp_path / "b", sample_inputs=X3, warmup_requests=5, verbose=False
    )
    assert _warmup_count(result) == 5


def test_more_warmup_requests_than_sample_inputs_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"warmup_requests=7.*\(6\)"):
        kd.export_student(_model(), tmp_path / "m", sample_inputs=X3, warmup_requests=7)


# -- npz files -------------------------------------------------------------------


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


IMAGES = np.random.default_rng(0).integers(0, 256, size=(20, 4, 4)).astype("uint8")
LABELS = np.arange(20) % 3


def test_fractional_labels_are_refused_not_truncated(tmp_path):
    path = _npz(tmp_path, x_train=IMAGES, y_train=LABELS + 0.7)
    with pytest.raises(ValueError, match=r"y_train\[0\] = 0\.7.*fractional"):
        data.npz_arrays(path)
    whole = _npz(tmp_path, x_train=IMAGES, y_train=LABELS.astype("float64"))
    assert set(data.npz_arrays(whole)["train"][1]) == {0, 1, 2}


def test_negative_labels_are_refused(tmp_path):
    path = _npz(tmp_path, x_train=IMAGES, y_train=LABELS - 1)
    with pytest.raises(ValueError, match=r"class ids >= 0.*= -1"):
        data.npz_arrays(path)


def test_uint16_images_are_scaled_by_their_full_range(tmp_path):
    x = (IMAGES.astype("uint16") * 257).astype("uint16")  # 0..65535
    arrays = data.npz_arrays(
        _npz(tmp_path, x_train=x, y_train=LABELS, x_val=x, y_val=LABELS)
    )
    train = arrays["train"][0]
    assert train.max() <= 1.0
    np.testing.assert_allclose(train[..., 0], x / 65535.0, rtol=1e-6)


def test_wider_integer_images_are_scaled_as_8_bit_or_refused(tmp_path):
    arrays = data.npz_arrays(
        _npz(
            tmp_path,
            x_train=IMAGES.astype("int64"),
            y_train=LABELS,
            x_val=IMAGES,
            y_val=LABELS,
        )
    )
    np.testing.assert_allclose(arrays["train"][0][..., 0], IMAGES / 255.0, rtol=1e-6)
    path = _npz(tmp_path, x_train=IMAGES.astype("int32") * 4, y_train=LABELS)
    with pytest.raises(ValueError, match=r"int32 with values in \[0, 1020\]"):
        data.npz_arrays(path)
    path = _npz(tmp_path, x_train=IMAGES.astype("int8"), y_train=LABELS)
    with pytest.raises(ValueError, match="int8 with values in"):
        data.npz_arrays(path)


def test_a_split_missing_its_labels_is_named(tmp_path):
    path = _npz(tmp_path, x_train=IMAGES, y_train=LABELS, x_val=IMAGES)
    with pytest.raises(ValueError, match="has `x_val` but no `y_val`"):
        data.npz_arrays(path)
    path = _npz(tmp_path, x_train=IMAGES, y_train=LABELS, y_test=LABELS)
    with pytest.raises(ValueError, match="has `y_test` but no `x_test`"):
        data.npz_arrays(path)


def test_one_hot_labels_are_accepted_and_others_2d_refused(tmp_path):
    one_hot = np.eye(3, dtype="float32")[LABELS]
    path = _npz(tmp_path, x_train=IMAGES, y_train=one_hot, x_val=IMAGES, y_val=LABELS)
    np.testing.assert_array_equal(data.npz_arrays(path)["train"][1], LABELS)
    splits = data.load_npz(path, batch_size=8)
    assert splits.num_classes == 3
    assert splits.train.element_spec[1].shape.rank == 1
    path = _npz(tmp_path, x_train=IMAGES, y_train=one_hot * 0.5)
    with pytest.raises(ValueError, match=r"shape \(20, 3\).*not one-hot"):
        data.npz_arrays(path)


@pytest.mark.parametrize("n_labels", [15, 25])
def test_inputs_and_labels_of_different_lengths_are_refused(n_labels, tmp_path):
    path = _npz(tmp_path, x_train=IMAGES, y_train=np.arange(n_labels) % 3)
    with pytest.raises(
        ValueError, match=f"has 20 examples but `y_train` has {n_labels}"
    ):
        data.npz_arrays(path)


# -- image folders -----------------------------------------------------------------


def _image_folder(root):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        os.makedirs(root / cls)
        for i in range(10):
            image = rng.integers(0, 256, size=(8, 8, 3)).astype("uint8")
            keras.utils.save_img(str(root / cls / f"{i}.png"), image)
    return root


def test_a_symlink_out_of_the_image_folder_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    outside = _image_folder(tmp_path / "elsewhere")
    os.symlink(outside / "a", root / "b" / "more")
    with pytest.raises(ValueError, match=r"more'.*outside the image folder"):
        data.load(f"images:{root}", image_size=(8, 8))


def test_a_symlink_loop_in_the_image_folder_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    os.symlink(root / "a", root / "a" / "again")
    with pytest.raises(ValueError, match=r"again'.*a folder containing it"):
        data.load(f"images:{root}", image_size=(8, 8))


def test_a_broken_symlink_in_the_image_folder_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    os.symlink(root / "a" / "gone.png", root / "b" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"x\.png' is a broken symbolic link"):
        data.load(f"images:{root}", image_size=(8, 8))


def test_a_file_that_is_not_the_image_its_name_says_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    (root / "a" / "notes.png").write_text("not an image")
    (root / "a" / "README.txt").write_text("skipped, as Keras skips it")
    with pytest.raises(ValueError, match=r"notes\.png' is not a PNG image"):
        data.load(f"images:{root}", image_size=(8, 8))
    os.remove(root / "a" / "notes.png")
    splits = data.load(f"images:{root}", image_size=(8, 8), batch_size=4)
    assert splits.num_classes == 2


# -- continual -----------------------------------------------------------------------


def _tasks(groups, n=120):
    small = {k: (x[:n], y[:n]) for k, (x, y) in digits().items()}
    return kd.continual.split_classes(small, groups)


def _mlp(num_classes):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ]
    )


def test_a_resume_with_other_test_data_of_the_same_size_is_refused(tmp_path):
    tasks = _tasks([[0, 1], [2, 3]])
    settings = {"epochs": 1, "method": "finetune", "batch_size": 64}
    kd.continual.learn(tasks, _mlp, tmp_path, **settings)
    t = tasks[1]
    replaced = kd.continual.Task(
        t.train, (t.test[0][::-1] * 0.5, t.test[1][::-1]), t.classes
    )
    with pytest.raises(ValueError, match=r"task 1 \(2-3\): test data changed"):
        kd.continual.learn([tasks[0], replaced], _mlp, tmp_path, **settings)
    again = kd.continual.learn(tasks, _mlp, tmp_path, **settings)
    assert again.trained == []  # the same data resumes (nothing left to train)


def test_a_task_class_without_examples_is_refused(tmp_path):
    (task,) = _tasks([[2, 3]])
    ghost = kd.continual.Task(task.train, task.test, (2, 3, 7))
    with pytest.raises(ValueError, match=r"classes \[7\] that have no example"):
        kd.continual.learn([ghost], _mlp, tmp_path, epochs=1)
    assert not os.path.exists(tmp_path / "run.json")


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "gif"])
def test_an_image_file_cut_short_is_refused(tmp_path, ext):
    root = _image_folder(tmp_path / "images")
    image = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3)).astype("uint8")
    path = root / "a" / f"cut.{ext}"
    keras.utils.save_img(str(path), image)
    data.load(f"images:{root}", image_size=(8, 8))  # whole: accepted
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut\.\w+' is a \w+ image cut short"):
        data.load(f"images:{root}", image_size=(8, 8))
