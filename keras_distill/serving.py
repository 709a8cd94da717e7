"""What the student buys at serving time: size, latency, throughput, int8.

`export_student` writes a SavedModel; this module measures what serving it
costs, side by side with the teacher's, in one run:

- `saved_model_predictor(path)` loads a SavedModel's `serving_default`
  signature with TensorFlow alone (as TF Serving loads it) and returns a
  callable `predict(batch) -> {"probabilities": ..., ...}`;
- `measure_speed(predictors, inputs)` times several predictors interleaved
  (so a noisy machine slows them alike): latency of single-example requests
  (p50 and p99) and throughput at a large batch;
- `quantize_int8(path, representative_inputs)` converts a SavedModel to an
  int8 TFLite flatbuffer (post-training quantization with a representative
  dataset; float32 input and outputs) and `tflite_predictor(path)` runs it.

The requests are in-process calls of the signature (no network, no
batching server): what a request costs inside TF Serving, less its gRPC or
REST overhead.

Example:

```python
teacher_export = kd.export_student(teacher, "serving/teacher")
student_export = kd.export_student(distiller, "serving/digits")
speeds = kd.serving.measure_speed(
    {
        "teacher": kd.serving.saved_model_predictor(teacher_export.path),
        "student": kd.serving.saved_model_predictor(student_export.path),
    },
    x_test,
)
print(speeds["student"].latency_p50_ms, speeds["teacher"].latency_p50_ms)
```
"""

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np

SIGNATURE_NAME = "serving_default"


@dataclass
class ServingSpeed:
    """Measured serving speed of one model.

    Attributes:
        latency_p50_ms: Median time of a one-example request, in ms.
        latency_p99_ms: 99th percentile of the same, in ms.
        throughput: Examples per second at batches of `throughput_batch`
            (the batch size over the median time of a batch).
        throughput_batch: The batch size of the throughput measurement.
        requests: How many one-example requests were timed.
    """

    latency_p50_ms: float
    latency_p99_ms: float
    throughput: float
    throughput_batch: int
    requests: int


def _whole(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(
            f"`{name}` must be a whole number >= {low}. Received: {name}={value!r}"
        )
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}. Received: {name}={value!r}")
    return int(value)


def _inputs(inputs, name="inputs"):
    array = np.asarray(inputs)
    if array.ndim < 1 or len(array) == 0:
        raise ValueError(
            f"`{name}` must be a non-empty array of examples (first axis: the "
            f"examples). Received shape {array.shape}."
        )
    return array


def saved_model_predictor(path, signature=SIGNATURE_NAME):
    """A callable running a SavedModel's signature on a NumPy batch.

    The SavedModel is loaded with TensorFlow alone, as TF Serving loads it.

    Args:
        path: A SavedModel folder, e.g. `ExportResult.path`.
        signature: The signature to call. Defaults to `"serving_default"`.

    Returns:
        `predict(batch) -> dict` of NumPy outputs (`probabilities`,
        `classes`, and `logits` for a student that outputs logits).

    Example:

    ```python
    predict = kd.serving.saved_model_predictor("serving/digits/1")
    probabilities = predict(x_test[:8])["probabilities"]
    ```
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(
            f"`path` must be a SavedModel folder (with saved_model.pb). "
            f"Received: {path!r}"
        )
    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise ValueError(
            f"The SavedModel at {path!r} has no signature {signature!r}; it has "
            f"{sorted(loaded.signatures)}."
        )
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    if len(specs) != 1:
        raise ValueError(
            f"The signature {signature!r} of {path!r} has {len(specs)} inputs; "
            "a predictor needs exactly one."
        )
    ((name, spec),) = specs.items()

    def predict(batch):
        outputs = function(**{name: tf.constant(batch, dtype=spec.dtype)})
        return {key: value.numpy() for key, value in outputs.items()}

    predict.saved_model = loaded  # keeps the loaded functions alive
    predict.input_name = name
    return predict


def measure_speed(
    predictors,
    inputs,
    requests=300,
    throughput_batch=256,
    throughput_batches=50,
    rounds=5,
    warmup=10,
):
    """Times predictors side by side: latency at batch 1 and throughput.

    The predictors are measured interleaved: in each of `rounds` rounds,
    each one (in a rotating order) answers `requests / rounds` one-example
    requests, each timed, then `throughput_batches / rounds` batches of
    `throughput_batch` examples. Load on the machine thus slows all of them
    alike, and their ratios are meaningful even when the absolute times are
    not.

    Args:
        predictors: A dict `{name: predict}` of callables taking a NumPy
            batch (e.g. from `saved_model_predictor` or `tflite_predictor`).
        inputs: Example inputs (a NumPy array, first axis the examples);
            requests cycle through them, and the large batches are made of
            them (repeated if there are fewer than `throughput_batch`).
        requests: One-example requests timed per predictor. Defaults to
            `300`.
        throughput_batch: Batch size of the throughput measurement.
            Defaults to `256`.
        throughput_batches: Large batches timed per predictor (the
            throughput is `throughput_batch` over their median time).
            Defaults to `50`.
        rounds: Rounds of the interleaving. Defaults to `5`.
        warmup: Untimed calls per predictor and batch size first (tracing,
            allocation). Defaults to `10`.

    Returns:
        A dict `{name: ServingSpeed}`.

    Example:

    ```python
    speeds = kd.serving.measure_speed({"student": predict}, x_test[:256])
    speeds["student"].latency_p99_ms
    ```
    """
    if not isinstance(predictors, dict) or not predictors:
        raise ValueError(
            "`predictors` must be a non-empty dict {name: callable}. Received: "
            f"{predictors!r}"
        )
    for name, predict in predictors.items():
        if not callable(predict):
            raise TypeError(
                f"`predictors[{name!r}]` must be callable (a predictor). "
                f"Received: {predict!r}"
            )
    inputs = _inputs(inputs)
    requests = _whole(requests, "requests")
    throughput_batch = _whole(throughput_batch, "throughput_batch")
    throughput_batches = _whole(throughput_batches, "throughput_batches")
    rounds = _whole(rounds, "rounds")
    warmup = _whole(warmup, "warmup", low=0)
    big = np.resize(inputs, (throughput_batch, *inputs.shape[1:]))
    names = list(predictors)
    for name in names:
        for _ in range(warmup):
            predictors[name](inputs[:1])
        for _ in range(max(1, warmup // 5)):
            predictors[name](big)
    latencies = {name: [] for name in names}
    batch_times = {name: [] for name in names}
    per_round = -(-requests // rounds)
    batches_per_round = -(-throughput_batches // rounds)
    clock = time.perf_counter
    position = 0
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            predict = predictors[name]
            times = latencies[name]
            for _ in range(min(per_round, requests - len(times))):
                row = inputs[position % len(inputs)][None]
                position += 1
                start = clock()
                predict(row)
                times.append(clock() - start)
            times = batch_times[name]
            for _ in range(min(batches_per_round, throughput_batches - len(times))):
                start = clock()
                predict(big)
                times.append(clock() - start)
    # Throughput from the median batch time: a batch that another process
    # delayed does not drag the figure down.
    return {
        name: ServingSpeed(
            latency_p50_ms=float(np.percentile(latencies[name], 50) * 1e3),
            latency_p99_ms=float(np.percentile(latencies[name], 99) * 1e3),
            throughput=float(throughput_batch / np.median(batch_times[name])),
            throughput_batch=throughput_batch,
            requests=len(latencies[name]),
        )
        for name in names
    }


def _tflite():
    import tensorflow as tf

    lite = getattr(tf, "lite", None)
    if lite is None or not hasattr(lite, "TFLiteConverter"):
        raise RuntimeError(
            f"This TensorFlow ({tf.__version__}) has no `tf.lite.TFLiteConverter`; "
            "int8 quantization needs it (or LiteRT's converter)."
        )
    return tf, lite


@dataclass
class QuantizedModel:
    """What `quantize_int8` wrote.

    Attributes:
        path: The `.tflite` file.
        size_bytes: Its size.
        calibration_examples: Examples of the representative dataset used.
    """

    path: str
    size_bytes: int
    calibration_examples: int


def _check_takes(tf, path, signature, given):
    """Raises if the SavedModel's one input takes examples of another shape.

    The converter said only "Attempting to resize dimension 1 of tensor 0".
    """
    function = tf.saved_model.load(path).signatures.get(signature)
    specs = list(function.structured_input_signature[1].values()) if function else []
    if len(specs) != 1:
        return
    takes = tuple(specs[0].shape[1:])
    if len(takes) != len(given) or any(
        t is not None and t != g for t, g in zip(takes, given)
    ):
        raise ValueError(
            f"`representative_inputs` has examples of shape {tuple(given)}, but the "
            f"SavedModel at {path!r} takes {takes}. Pass examples of its input "
            "(e.g. training inputs)."
        )


def quantize_int8(
    saved_model_path,
    representative_inputs,
    output_path=None,
    calibration_examples=200,
    signature=SIGNATURE_NAME,
):
    """Post-training int8 quantization of an exported SavedModel (TFLite).

    Weights and activations are quantized to int8, calibrated on
    `representative_inputs` (a few hundred training examples are enough);
    every op must have an int8 kernel (`TFLITE_BUILTINS_INT8`), so the
    result runs in integer arithmetic. The interface stays float32: the
    input is quantized and the outputs dequantized inside the model, so it
    is called like the SavedModel.

    Args:
        saved_model_path: A SavedModel folder (e.g. `ExportResult.path`).
        representative_inputs: Example inputs (NumPy array, first axis the
            examples), ideally from the training data.
        output_path: Where to write the `.tflite` file. Defaults to `None`:
            `<saved_model_path>_int8.tflite`, beside the version folder
            (never inside it: TF Serving owns it).
        calibration_examples: How many of `representative_inputs` to
            calibrate on. Defaults to `200`.
        signature: The signature to convert. Defaults to
            `"serving_default"`.

    Returns:
        A `QuantizedModel`.

    Example:

    ```python
    exported = kd.export_student(distiller, "serving/digits")
    quantized = kd.serving.quantize_int8(exported.path, x_train)
    predict = kd.serving.tflite_predictor(quantized.path)
    ```
    """
    tf, lite = _tflite()
    saved_model_path = os.fspath(saved_model_path)
    if not os.path.isfile(os.path.join(saved_model_path, "saved_model.pb")):
        raise FileNotFoundError(
            "`saved_model_path` must be a SavedModel folder (with saved_model.pb). "
            f"Received: {saved_model_path!r}"
        )
    representative = _inputs(representative_inputs, "representative_inputs")
    calibration_examples = _whole(calibration_examples, "calibration_examples")
    representative = representative[:calibration_examples].astype("float32")
    _check_takes(tf, saved_model_path, signature, representative.shape[1:])
    bad = ~np.isfinite(representative)
    if bad.any():
        # The calibrator would take the NaN into the int8 ranges, without a word.
        index = np.unravel_index(int(np.argmax(bad)), representative.shape)
        raise ValueError(
            "`representative_inputs` must be finite: the int8 ranges are "
            f"calibrated on them. Example {index[0]} holds "
            f"{representative[index]} at index {tuple(int(i) for i in index[1:])}."
        )
    output_path = os.fspath(
        output_path or saved_model_path.rstrip(os.sep) + "_int8.tflite"
    )

    def calibration():
        for row in representative:
            yield [row[None]]

    converter = lite.TFLiteConverter.from_saved_model(
        saved_model_path, signature_keys=[signature]
    )
    converter.optimizations = [lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with _quiet_native_logs():
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises its own error types
        raise ValueError(
            f"The SavedModel at {saved_model_path!r} could not be converted to "
            f"int8 TFLite: {type(error).__name__}: {error}"
        ) from error
    tmp = output_path + ".partial"
    with open(tmp, "wb") as f:
        f.write(flatbuffer)
    os.replace(tmp, output_path)
    return QuantizedModel(output_path, len(flatbuffer), len(representative))


# What the TFLite converter and interpreter print from C++ on every use: their
# settings and the delegate they pick, not news for the user.
_NATIVE_NOISE = re.compile(
    r"^(fully_quantize: |INFO: Created TensorFlow Lite .*delegate"
    r"|WARNING: All log messages before absl::InitializeLog)"
)


@contextlib.contextmanager
def _quiet_native_logs():
    """Drops `_NATIVE_NOISE` lines written to file descriptor 2; keeps the rest."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not _NATIVE_NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def tflite_predictor(path, signature=SIGNATURE_NAME, num_threads=None):
    """A callable running a `.tflite` model's signature on a NumPy batch.

    Args:
        path: A `.tflite` file (e.g. `QuantizedModel.path`).
        signature: The signature to run. Defaults to `"serving_default"`.
        num_threads: Interpreter threads. Defaults to `None` (TFLite's
            default).

    Returns:
        `predict(batch) -> dict` of NumPy outputs, as
        `saved_model_predictor`'s.
    """
    _, lite = _tflite()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be a .tflite file. Received: {path!r}")
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to LiteRT (ai-edge-litert).
        warnings.simplefilter("ignore")
        interpreter = lite.Interpreter(model_path=path, num_threads=num_threads)
    signatures = interpreter.get_signature_list()
    if signature not in signatures:
        raise ValueError(
            f"The TFLite model {path!r} has no signature {signature!r}; it has "
            f"{sorted(signatures)}."
        )
    runner = interpreter.get_signature_runner(signature)
    names = list(runner.get_input_details())
    if len(names) != 1:
        raise ValueError(
            f"The signature {signature!r} of {path!r} has {len(names)} inputs; "
            "a predictor needs exactly one."
        )
    name = names[0]

    first = [True]

    def predict(batch):
        if first[0]:  # the delegate's INFO line comes with the first call
            first[0] = False
            with _quiet_native_logs():
                return runner(**{name: np.asarray(batch, "float32")})
        return runner(**{name: np.asarray(batch, "float32")})

    predict.interpreter = interpreter
    predict.input_name = name
    return predict


def accuracy_and_loss(predict, x, y, batch_size=256):
    """Test accuracy and cross-entropy of a predictor.

    Computed from the `logits` output when there is one (as Keras computes
    a test loss), else from `probabilities` (clipped at 1e-12). An int8
    model's probabilities are quantized in steps of 1/256, so some are 0:
    its logits give the meaningful loss.

    Args:
        predict: A predictor (`saved_model_predictor`, `tflite_predictor`).
        x: Inputs (NumPy array).
        y: Integer labels.
        batch_size: Defaults to `256`.

    Returns:
        `(accuracy, loss)` as floats.
    """
    x = _inputs(x, "x")
    y = np.asarray(y).reshape(-1).astype("int64")
    if len(y) != len(x):
        raise ValueError(
            f"`x` and `y` must hold the same number of examples. Received: "
            f"{len(x)} inputs and {len(y)} labels."
        )
    outputs = [
        predict(x[start : start + batch_size]) for start in range(0, len(x), batch_size)
    ]
    if "logits" in outputs[0]:
        logits = np.concatenate([o["logits"] for o in outputs]).astype("float64")
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    else:
        probabilities = np.concatenate([o["probabilities"] for o in outputs])
        log_probs = np.log(np.clip(probabilities.astype("float64"), 1e-12, 1.0))
    accuracy = float(np.mean(np.argmax(log_probs, axis=-1) == y))
    loss = float(np.mean(-log_probs[np.arange(len(y)), y]))
    return accuracy, loss


__all__ = [
    "QuantizedModel",
    "ServingSpeed",
    "accuracy_and_loss",
    "measure_speed",
    "quantize_int8",
    "saved_model_predictor",
    "tflite_predictor",
]
