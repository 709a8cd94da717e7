"""Export the trained student for TensorFlow Serving, atomically and verified."""

import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass

import keras
import numpy as np

SIGNATURE_NAME = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_ABS_DIFF = 1e-5
# TF Serving refuses a warm-up file of more records (WarmupConsts::kMaxNumRecords).
MAX_WARMUP_REQUESTS = 1000
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
        max_abs_diff: Largest difference between what the reloaded
            SavedModel serves (`logits`, `probabilities`) and what the student
            gives, on the verification batch.
        size_bytes: Total size of the version directory.
    """

    path: str
    version: int
    input_name: str
    outputs: tuple
    max_abs_diff: float
    size_bytes: int


def _student_of(model):
    """`(student, "logits" | "probabilities")`: the model and what it returns.

    A `Distiller` declares it (`student_outputs`); a plain model ending in a
    softmax returns probabilities. A last activation that is neither logits
    nor a softmax (e.g. a sigmoid) is refused: served as logits, its
    `probabilities` would be a softmax of sigmoids.
    """
    from keras_distill.distiller import Distiller
    from keras_distill.distiller.wiring import _last_activation

    if isinstance(model, Distiller):
        student, outputs = model.student, model.student_outputs
    elif isinstance(model, keras.Model):
        student, outputs = model, "logits"
    else:
        raise TypeError(
            "`distiller_or_student` must be a `keras_distill.Distiller` or a "
            f"`keras.Model`. Received: {model!r} of type {type(model).__name__}"
        )
    activation = _last_activation(student)
    if activation == "sigmoid":
        raise ValueError(
            f"Student '{student.name}' ends in a sigmoid: its outputs are neither "
            "logits nor a softmax distribution, so neither `logits` nor "
            "`probabilities` could be served as what they are. Export a model "
            "whose last layer gives logits (no activation) or ends in softmax."
        )
    if activation == "softmax":
        outputs = "probabilities"
    return student, outputs


def _served_kind(model, declared, sample):
    """What the student returns, checked on the sample batch.

    A plain model's outputs that are all in [0, 1] and sum to 1 per row (a
    softmax the layers do not show, e.g. inside a subclassed `call`) are
    probabilities; a `Distiller` declaring logits for such a student is
    refused, as exporting would serve a softmax of probabilities.
    """
    from keras_distill.distiller import Distiller
    from keras_distill.distiller.wiring import _looks_like

    student = model.student if isinstance(model, Distiller) else model
    if declared != "logits":
        return declared
    values = keras.ops.convert_to_numpy(student(sample, training=False))
    if _looks_like(np.asarray(values, "float32")) != "probabilities":
        return declared
    if isinstance(model, Distiller):
        raise ValueError(
            f"The distiller's student '{student.name}' returns probabilities (each "
            "row of its outputs on the sample batch is in [0, 1] and sums to 1), "
            "but student_outputs='logits': exporting would serve a softmax of "
            "probabilities. Build the Distiller with "
            "student_outputs='probabilities', or make the student return logits."
        )
    return "probabilities"


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
        inputs = getattr(student, "inputs", None) or []
        if len(inputs) == 1:
            # Keras's "Exception encountered when calling Sequential.call()"
            # named a layer, not the signature.
            takes = tuple(inputs[0].shape[1:])
            given = tuple(spec.shape[1:])
            if len(takes) != len(given) or any(
                t is not None and g is not None and t != g for t, g in zip(takes, given)
            ):
                raise ValueError(
                    f"`input_signature` has examples of shape {given}, but student "
                    f"'{student.name}' takes {takes}. Pass "
                    f"`tf.TensorSpec((None, *{takes}), dtype)` or leave it out."
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


def _add_serving_endpoint(archive, student, student_outputs, spec):
    """Adds `serving_default`, the same signature on every backend.

    On TensorFlow the student runs in the serving function itself. On JAX
    it is converted to TensorFlow (jax2tf, as `ExportArchive` does) and
    the serving function computes the same outputs from its logits in
    TensorFlow (so `classes` is int64 there too, which JAX computes only
    with 64-bit mode on).
    """
    import tensorflow as tf

    if keras.backend.backend() == "tensorflow":
        serve = _serving_fn(student, student_outputs)
        archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=[spec])
        return
    from keras_distill import _compat

    def outputs(inputs):
        return keras.ops.cast(student(inputs, training=False), "float32")

    converted = _compat.jax_endpoint(archive, "student_outputs", outputs, [spec])
    serve = tf.function(
        _serving_fn(converted, student_outputs, call=lambda f, x: f(x)),
        input_signature=[spec],
        autograph=False,
    )
    serve.get_concrete_function()
    archive.add_endpoint(SIGNATURE_NAME, serve)


def _serving_fn(student, student_outputs, call=None):
    import tensorflow as tf

    def serve(inputs):
        if call is None:
            outputs = student(inputs, training=False)
        else:
            outputs = call(student, inputs)
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


# A token language model (`(batch, length)` int ids -> `(batch, length,
# vocab)` logits) also serves greedy continuation of its prompts.
GREEDY_SIGNATURE = "greedy"


def _greedy_spec(student, spec):
    """The greedy signature's inputs for a fixed-length token LM, else None.

    TensorFlow backend only: the loop is a `tf.while_loop` calling the model.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        return None
    shape = tuple(student.output_shape) if hasattr(student, "output_shape") else ()
    if (
        spec.dtype.is_integer
        and len(spec.shape) == 2
        and spec.shape[1] is not None
        and len(shape) == 3
        and shape[1] == spec.shape[1]
    ):
        return [
            tf.TensorSpec((None, spec.shape[1]), tf.int32, name=spec.name),
            tf.TensorSpec((None,), tf.int32, name="prompt_lengths"),
        ]
    return None


def _verify_greedy(path, student, greedy, sample):
    """The served greedy continuation equals `decoding.greedy_continue`'s."""
    import tensorflow as tf

    from keras_distill import decoding

    ids = tf.constant(np.asarray(sample), tf.int32)
    lengths = tf.fill([tf.shape(ids)[0]], max(1, int(greedy[0].shape[1]) // 2))
    loaded = tf.saved_model.load(path)
    served = loaded.signatures[GREEDY_SIGNATURE](
        **{greedy[0].name: ids, "prompt_lengths": lengths}
    )["token_ids"].numpy()
    expected = decoding.greedy_continue(student, ids, lengths).numpy()
    if not np.array_equal(served, expected):
        raise ExportVerificationError(
            f"The exported greedy signature continues prompts differently from "
            f"the student ({int((served != expected).sum())} tokens differ); "
            "nothing was written to the version folder."
        )


def _random_rows(spec, count, seed=0):
    """`count` random inputs of the signature's shape, in [0, 1] for floats."""
    shape = (count, *spec.shape[1:])
    rng = np.random.default_rng(seed)
    if spec.dtype.is_floating:
        return rng.uniform(0.0, 1.0, size=shape).astype(spec.dtype.as_numpy_dtype)
    return np.zeros(shape, spec.dtype.as_numpy_dtype)


def _sample_batch(spec, sample_inputs):
    if sample_inputs is not None:
        sample = np.asarray(sample_inputs)
        if tuple(sample.shape[1:]) != tuple(spec.shape[1:]):
            raise ValueError(
                f"`sample_inputs` must be a batch of the student's inputs, of shape "
                f"(batch, {', '.join(str(d) for d in spec.shape[1:])}). Received "
                f"shape {sample.shape}."
            )
        return sample
    return _random_rows(spec, 4)


def _check_warmup_requests(warmup_requests, sample_inputs):
    """The number of warm-up requests, an integer in [0, 1000]."""
    if isinstance(warmup_requests, bool) or not isinstance(
        warmup_requests, int | np.integer
    ):
        raise ValueError(
            "`warmup_requests` must be a whole number of requests (0 for none). "
            f"Received: warmup_requests={warmup_requests!r}"
        )
    if not 0 <= warmup_requests <= MAX_WARMUP_REQUESTS:
        raise ValueError(
            f"`warmup_requests` must be in [0, {MAX_WARMUP_REQUESTS}] (TF Serving "
            f"reads at most {MAX_WARMUP_REQUESTS} warm-up records). Received: "
            f"warmup_requests={warmup_requests!r}"
        )
    if sample_inputs is not None:
        available = len(np.asarray(sample_inputs))
        if warmup_requests > available:
            raise ValueError(
                f"`warmup_requests={int(warmup_requests)}` asks for more requests "
                f"than `sample_inputs` has examples ({available}); each request is "
                "one example. Pass more `sample_inputs` or fewer `warmup_requests`."
            )
    return int(warmup_requests)


def _warmup_rows(spec, sample_inputs, sample, count):
    """The `count` examples of the warm-up requests, one at a time."""
    if sample_inputs is not None or count <= len(sample):
        yield from sample[:count]
        return
    for i in range(count):
        yield _random_rows(spec, 1, seed=i)[0]


def _verify(path, student, student_outputs, spec, sample):
    """Reloads `path` with TensorFlow alone and compares with the student.

    Each output is compared with what it promises: `logits` with the
    student's outputs, `probabilities` with their softmax (or with the
    outputs themselves for a probability student), `classes` with a class
    of highest score.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE_NAME]
    served = signature(**{spec.name: tf.constant(sample, dtype=spec.dtype)})
    outputs = keras.ops.convert_to_numpy(student(sample, training=False))
    outputs = outputs.astype("float32")
    expected = {"probabilities": outputs}
    if student_outputs == "logits":
        shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        expected = {
            "logits": outputs,
            "probabilities": shifted / shifted.sum(axis=-1, keepdims=True),
        }
    if sorted(served) != sorted([*expected, "classes"]):
        raise ExportVerificationError(
            f"The exported model serves {sorted(served)}, expected "
            f"{sorted([*expected, 'classes'])}; nothing was written to the "
            "version folder."
        )
    diff = 0.0
    for key, values in expected.items():
        key_diff = float(np.max(np.abs(served[key].numpy() - values)))
        if not key_diff <= MAX_ABS_DIFF:
            raise ExportVerificationError(
                f"The exported model's {key!r} differ from the student's by "
                f"{key_diff:.3g} (allowed: {MAX_ABS_DIFF:g}); nothing was written "
                "to the version folder."
            )
        diff = max(diff, key_diff)
    classes = served["classes"].numpy().reshape(outputs.shape[:-1])
    chosen = np.take_along_axis(outputs, classes[..., None], axis=-1)[..., 0]
    if not np.all(chosen >= outputs.max(axis=-1) - MAX_ABS_DIFF):
        raise ExportVerificationError(
            "The exported model's 'classes' are not the student's highest-scoring "
            "classes; nothing was written to the version folder."
        )
    return diff, tuple(sorted(signature.structured_outputs))


def _varint(value: int) -> bytes:
    """`value` as a protocol-buffer varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protocol-buffer field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name: str, input_name: str, tensor: bytes) -> bytes:
    """A serialized TF Serving `PredictionLog` holding one predict request.

    Encoded by hand, so that warm-up requests need no `tensorflow-serving-api`
    (which requires the full `tensorflow` wheel). The messages, from
    `tensorflow_serving/apis/*.proto`: `PredictionLog.predict_log` (6) ->
    `PredictLog.request` (1) -> `PredictRequest.model_spec` (1:
    `ModelSpec.name` 1, `signature_name` 3) and `inputs` (2: a map entry,
    key 1, value 2, a serialized `TensorProto`). The bytes equal what the
    package's own classes serialize (tests/reliability_packaging_test.py).

    Args:
        model_name: The model name of the request's `ModelSpec`.
        input_name: The signature input the tensor feeds.
        tensor: A serialized `tensorflow.TensorProto`.
    """
    spec = _field(1, model_name.encode()) + _field(3, SIGNATURE_NAME.encode())
    entry = _field(1, input_name.encode()) + _field(2, tensor)
    request = _field(1, spec) + _field(2, entry)
    return _field(6, _field(1, request))


def _write_warmup(path, model_name, spec, rows):
    """Writes one TF Serving predict request per row of `rows`."""
    import tensorflow as tf

    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_FILE)) as writer:
        for row in rows:
            tensor = tf.make_tensor_proto(row[None], dtype=spec.dtype)
            writer.write(
                prediction_log(model_name, spec.name, tensor.SerializeToString())
            )


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

    The SavedModel's signature `serving_default` has one named input and
    the outputs `probabilities` (softmax at temperature 1), `classes` (int64
    argmax) and, for a student that outputs logits, `logits`. A token
    language model (fixed-length int ids -> per-token logits) also gets the
    signature `greedy`: `(token_ids, prompt_lengths) -> {"token_ids"}`, each
    prompt continued greedily to the window (`decoding.greedy_continue`,
    one graph), verified token for token after reloading. A
    student that returns probabilities (a `Distiller` with
    `student_outputs="probabilities"`, or a model ending in softmax) serves
    them as `probabilities`, without `logits`; a student ending in a sigmoid
    is refused. The teacher is never exported.

    Writing is atomic: the model is written into a hidden temporary folder
    beside the target, reloaded with TensorFlow alone, run on a sample batch
    and compared with the student (each of `logits` and `probabilities`
    within 1e-5 of what it promises, `classes` a top class), and only then
    renamed into place. TF Serving, which watches `base_dir`, can never
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
            `assets.extra/tf_serving_warmup_requests`, one example each: an
            integer in [0, 1000] (0 for none; TF Serving reads at most 1000),
            at most the number of `sample_inputs` when they are given
            (random inputs otherwise). Defaults to `4`.
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
    spec = _input_spec(student, input_signature, input_name)
    sample = _sample_batch(spec, sample_inputs)
    warmup_requests = _check_warmup_requests(warmup_requests, sample_inputs)
    base_dir = os.fspath(base_dir)
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(
            f"`base_dir` must be a folder (TF Serving's model base path), but "
            f"{base_dir!r} is a file."
        )
    student_outputs = _served_kind(distiller_or_student, student_outputs, sample)
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
    try:
        archive = keras.export.ExportArchive()
        archive.track(student)
        _add_serving_endpoint(archive, student, student_outputs, spec)
        greedy = _greedy_spec(student, spec)
        if greedy is not None:
            from keras_distill import decoding

            archive.add_endpoint(
                GREEDY_SIGNATURE,
                decoding.greedy_endpoint(student),
                input_signature=greedy,
            )
        archive.write_out(tmp, verbose=False)
        diff, outputs = _verify(tmp, student, student_outputs, spec, sample)
        if greedy is not None:
            _verify_greedy(tmp, student, greedy, sample)
        if warmup_requests:
            _write_warmup(
                tmp,
                model_name or os.path.basename(os.path.abspath(base_dir)),
                spec,
                _warmup_rows(spec, sample_inputs, sample, warmup_requests),
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


def check_keras_file(path, what="model"):
    """Raises if `path` is not a file, or not the zip archive a `.keras` file is.

    Keras reports both as "File not found", also for a file that exists.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{what}: {path!r} is not a valid .keras file (a .keras file is the zip "
            "archive `model.save()` writes; this one is not a zip archive). Give "
            "the path of a model saved by Keras."
        )


def load_for_export(path):
    """Loads a saved `.keras` distiller or student for `export_student`."""
    check_keras_file(path)
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
