"""Export the trained student for TensorFlow Serving, atomically and verified."""

import os
import re
import shutil
import uuid
from dataclasses import dataclass

import keras
import numpy as np

SIGNATURE_NAME = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_ABS_DIFF = 1e-5
_TMP_PREFIX = ".tmp-keras-distill-"


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not reproduce the student's predictions."""


@dataclass
class ExportResult:
    """What `export_student` wrote.

    Attributes:
        path: The version directory, `base_dir/<version>`.
        version: The integer version.
        input_name: Name of the signature's input.
        outputs: Names of the signature's outputs.
        max_abs_diff: Largest difference between the reloaded SavedModel's
            probabilities and the student's, on the verification batch.
        size_bytes: Total size of the version directory.
    """

    path: str
    version: int
    input_name: str
    outputs: tuple
    max_abs_diff: float
    size_bytes: int


def _student_of(model):
    from keras_distill.distiller import Distiller

    if isinstance(model, Distiller):
        return model.student, model.student_outputs
    if isinstance(model, keras.Model):
        return model, "logits"
    raise TypeError(
        "`distiller_or_student` must be a `keras_distill.Distiller` or a "
        f"`keras.Model`. Received: {model!r} of type {type(model).__name__}"
    )


# TF Serving parses version folders as int64.
MAX_VERSION = 2**63 - 1


def _check_version(version):
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int | np.integer):
        raise ValueError(
            f"`version` must be a positive integer (TF Serving's version folders "
            f"are numbers). Received: version={version!r}"
        )
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(
            f"`version` must be in [1, {MAX_VERSION}] (TF Serving reads versions "
            f"as int64). Received: version={version!r}"
        )
    return int(version)


def existing_versions(base_dir):
    """The integer version folders under `base_dir`, sorted."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(n) for n in os.listdir(base_dir) if re.fullmatch(r"\d+", n))


def _input_spec(student, input_signature, input_name):
    import tensorflow as tf

    if input_signature is not None:
        spec = (
            input_signature[0]
            if isinstance(input_signature, list | tuple)
            else input_signature
        )
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(
                "`input_signature` must be a `tf.TensorSpec` (or a list of one). "
                f"Received: {input_signature!r}"
            )
    else:
        inputs = getattr(student, "inputs", None)
        if not inputs:
            raise ValueError(
                f"The input shape of student '{student.name}' is not known. Pass "
                "`input_signature=tf.TensorSpec((None, ...), 'float32')`."
            )
        if len(inputs) != 1:
            raise ValueError(
                f"Student '{student.name}' has {len(inputs)} inputs; export supports "
                "one input tensor."
            )
        shape = tuple(inputs[0].shape)
        spec = tf.TensorSpec(shape, inputs[0].dtype, name=inputs[0].name)
    if any(dim is None for dim in spec.shape[1:]):
        raise ValueError(
            f"The input shape {tuple(spec.shape)} of student '{student.name}' must "
            "be fully known except for the batch dimension. Pass "
            "`input_signature=tf.TensorSpec((None, ...), dtype)`."
        )
    name = input_name or spec.name or "inputs"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(
            f"`input_name` must be a valid identifier. Received: input_name={name!r}"
        )
    return tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name=name)


def _serving_fn(student, student_outputs):
    import tensorflow as tf

    def serve(inputs):
        outputs = student(inputs, training=False)
        outputs = tf.cast(outputs, tf.float32)
        result = {}
        if student_outputs == "logits":
            result["logits"] = outputs
            result["probabilities"] = tf.nn.softmax(outputs, axis=-1)
        else:
            result["probabilities"] = outputs
        result["classes"] = tf.argmax(outputs, axis=-1, output_type=tf.int64)
        return result

    return serve


def _sample_batch(spec, sample_inputs):
    if sample_inputs is not None:
        return np.asarray(sample_inputs)
    shape = (4, *spec.shape[1:])
    rng = np.random.default_rng(0)
    if spec.dtype.is_floating:
        return rng.uniform(0.0, 1.0, size=shape).astype(spec.dtype.as_numpy_dtype)
    return np.zeros(shape, spec.dtype.as_numpy_dtype)


def _verify(path, student, student_outputs, spec, sample):
    """Reloads `path` with TensorFlow alone and compares with the student."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE_NAME]
    served = signature(**{spec.name: tf.constant(sample, dtype=spec.dtype)})
    expected = keras.ops.convert_to_numpy(student(sample, training=False))
    expected = expected.astype("float32")
    if student_outputs == "logits":
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(expected, axis=-1))
    diff = float(np.max(np.abs(served["probabilities"].numpy() - expected)))
    if not diff <= MAX_ABS_DIFF:
        raise ExportVerificationError(
            f"The exported model's probabilities differ from the student's by "
            f"{diff:.3g} (allowed: {MAX_ABS_DIFF:g}); nothing was written to the "
            "version folder."
        )
    return diff, tuple(sorted(signature.structured_outputs))


def _write_warmup(path, model_name, spec, sample):
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Warm-up requests need `tensorflow-serving-api`: "
            "`pip install --no-deps tensorflow-serving-api~=2.21.0` "
            "(or pass `warmup_requests=0`)."
        ) from error
    import tensorflow as tf

    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_FILE)) as writer:
        for row in sample:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=SIGNATURE_NAME
                ),
            )
            request.inputs[spec.name].CopyFrom(
                tf.make_tensor_proto(row[None], dtype=spec.dtype)
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def _dir_size(path):
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path)
        for f in files
    )


def _remove_stale_temps(base_dir):
    """Removes temp folders left by exports whose process is gone."""
    for name in os.listdir(base_dir):
        match = re.fullmatch(_TMP_PREFIX + r"\d+-(\d+)-[0-9a-f]+", name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)
        except PermissionError:
            pass


def _publish(tmp, base_dir, version, automatic, attempts=100):
    """Renames `tmp` to `base_dir/<version>`; returns `(target, version)`.

    The rename is atomic and fails if the target appeared meanwhile (another
    process exported the same version at the same instant). An automatic
    version then moves on to the next free number; an explicit one is an
    error, as an export never overwrites.
    """
    for _ in range(attempts):
        target = os.path.join(base_dir, str(version))
        try:
            os.rename(tmp, target)
            return target, version
        except OSError:
            if not os.path.exists(target):
                raise
            if not automatic:
                raise FileExistsError(
                    f"Version {version} appeared at {target!r} while exporting "
                    "(another process exported it); exports never overwrite."
                ) from None
            version = max(existing_versions(base_dir) + [version]) + 1
            _check_version(version)
    raise FileExistsError(
        f"Could not find a free version under {base_dir!r} after {attempts} tries."
    )


def export_student(
    distiller_or_student,
    base_dir,
    version=None,
    input_name=None,
    input_signature=None,
    sample_inputs=None,
    warmup_requests=4,
    model_name=None,
    verbose=True,
):
    """Exports the student as a TF Serving SavedModel in `base_dir/<version>/`.

    The SavedModel has one signature, `serving_default`, with one named input
    and the outputs `probabilities` (softmax at temperature 1), `classes`
    (int64 argmax) and, for a student that outputs logits, `logits`. The
    teacher is never exported.

    Writing is atomic: the model is written into a hidden temporary folder
    beside the target, reloaded with TensorFlow alone, run on a sample batch
    and compared with the student (max abs difference <= 1e-5), and only
    then renamed into place. TF Serving, which watches `base_dir`, can never
    load a half-written version; an existing version is never overwritten.

    Args:
        distiller_or_student: A `keras_distill.Distiller` (its student is
            exported) or a `keras.Model`.
        base_dir: The model's folder, as TF Serving's `--model_base_path`.
        version: Integer version. Defaults to `None`: one more than the
            highest existing version (1 for a new folder).
        input_name: Name of the signature's input. Defaults to `None`: the
            student's input name (e.g. from `keras.Input(name=...)`).
        input_signature: A `tf.TensorSpec` for the input, needed when the
            student's input shape is not known. Defaults to `None`.
        sample_inputs: A batch used for verification and warm-up requests.
            Defaults to `None`: random inputs of the right shape.
        warmup_requests: How many warm-up requests to write into
            `assets.extra/tf_serving_warmup_requests` (0 for none).
            Defaults to `4`.
        model_name: Model name written into the warm-up requests. Defaults
            to `None`: the name of `base_dir`.
        verbose: Print a summary line. Defaults to `True`.

    Returns:
        An `ExportResult`.

    Example:

    ```python
    result = kd.export_student(distiller, "serving/digits")
    # serving/digits/1/saved_model.pb, variables/, assets.extra/
    ```
    """
    student, student_outputs = _student_of(distiller_or_student)
    base_dir = os.fspath(base_dir)
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(
            f"`base_dir` must be a folder (TF Serving's model base path), but "
            f"{base_dir!r} is a file."
        )
    spec = _input_spec(student, input_signature, input_name)
    automatic = version is None
    if automatic:
        version = (existing_versions(base_dir) or [0])[-1] + 1
    version = _check_version(version)
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(
            f"Version {version} already exists at {target!r}; exports never "
            f"overwrite. Existing versions: {existing_versions(base_dir)}. Pass "
            "another `version` (`--version` of `keras-distill export`) or leave it "
            "as None (omit `--version`) for the next one."
        )
    os.makedirs(base_dir, exist_ok=True)
    _remove_stale_temps(base_dir)
    tmp = os.path.join(
        base_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    sample = _sample_batch(spec, sample_inputs)
    try:
        archive = keras.export.ExportArchive()
        archive.track(student)
        archive.add_endpoint(
            SIGNATURE_NAME,
            _serving_fn(student, student_outputs),
            input_signature=[spec],
        )
        archive.write_out(tmp, verbose=False)
        diff, outputs = _verify(tmp, student, student_outputs, spec, sample)
        if warmup_requests:
            _write_warmup(
                tmp,
                model_name or os.path.basename(os.path.abspath(base_dir)),
                spec,
                sample[:warmup_requests],
            )
        size = _dir_size(tmp)
        target, version = _publish(tmp, base_dir, version, automatic)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = ExportResult(target, version, spec.name, outputs, diff, size)
    if verbose:
        print(
            f"Exported {student.name} to {target} (signature '{SIGNATURE_NAME}': "
            f"input '{spec.name}' {tuple(spec.shape)}, outputs {list(outputs)}; "
            f"{size / 1024:.0f} KiB; verified, max abs diff {diff:.2g})"
        )
    return result


def load_for_export(path):
    """Loads a saved `.keras` distiller or student for `export_student`."""
    # The modules whose classes saved files hold (registered for loading).
    from keras_distill import (  # noqa: F401
        callbacks,
        continual,
        distiller,
        hints,
        recipes,
        schedules,
        terms,
        transfer,
    )

    return keras.models.load_model(path)
