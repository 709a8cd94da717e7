"""Building a cache: the teacher run once over the data, its outputs in shards."""

import hashlib
import json
import os
import uuid

import keras
import numpy as np

from keras_distill import losses as kd_losses
from keras_distill.cache.fingerprint import (
    FINGERPRINT_BITS,
    _batches,
    _file_sha256,
    bit_fingerprints,
    teacher_fingerprint,
)
from keras_distill.cache.format import (
    _JOURNAL,
    _JOURNAL_NAME,
    _OUR_SHARD,
    _STAGED_MANIFEST,
    FINGERPRINT_PART,
    FORMAT_VERSION,
    MANIFEST,
    SHARD_SUFFIXES,
    _listed_files,
    shard_name,
)


class _ShardWriter:
    """Appends rows to `<prefix>-<n>.<suffix>` files of at most `rows` rows."""

    def __init__(self, directory, suffix, rows_per_shard, prefix=""):
        self.directory, self.suffix, self.rows_per_shard = (
            directory,
            suffix,
            rows_per_shard,
        )
        self.prefix = prefix
        self.shards, self._file, self._rows = [], None, 0

    def write(self, array):
        while len(array):
            if self._file is None or self._rows == self.rows_per_shard:
                self._close_current()
                name = shard_name(self.prefix, len(self.shards), self.suffix)
                self._file = open(os.path.join(self.directory, name), "wb")
                self.shards.append({"file": name, "rows": 0})
                self._rows = 0
            take = min(len(array), self.rows_per_shard - self._rows)
            self._file.write(np.ascontiguousarray(array[:take]).tobytes())
            self._rows += take
            self.shards[-1]["rows"] = self._rows
            array = array[take:]

    def _close_current(self):
        if self._file is not None:
            self._file.close()
            shard = self.shards[-1]
            shard["sha256"] = _file_sha256(os.path.join(self.directory, shard["file"]))
            self._file = None

    def close(self):
        self._close_current()
        return self.shards


def build(
    cls,
    teacher,
    x,
    directory,
    k=None,
    dtype="float16",
    batch_size=256,
    teacher_outputs="logits",
    rows_per_shard=65536,
    overwrite=False,
    verbose="auto",
):
    """`TeacherCache.build` (see there): returns `cls(directory)` when written."""
    import tensorflow as tf

    kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
    # The Distiller's own checks: the last activation here, the first
    # batch's values below (a teacher of unknown architecture).
    from keras_distill import distiller as kd_distiller

    kd_distiller._check_declared_outputs("teacher", teacher, teacher_outputs)
    check_values = True
    if dtype not in ("float16", "float32"):
        raise ValueError(
            f"`dtype` must be 'float16' or 'float32'. Received: dtype={dtype!r}"
        )
    for name, value in (("rows_per_shard", rows_per_shard), ("batch_size", batch_size)):
        # `rows_per_shard=0` opened empty shards for ever (a hang).
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 1
        ):
            raise ValueError(
                f"`{name}` must be a whole number >= 1. Received: {name}={value!r}"
            )
    num_classes = teacher.output_shape[-1] if hasattr(teacher, "output_shape") else None
    if hasattr(teacher, "output_shape"):
        _check_one_distribution_per_example(teacher.output_shape)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"`k` must be an integer >= 1. Received: k={k!r}")
        if num_classes is not None and k > num_classes:
            raise ValueError(
                f"`k` must be at most the number of classes ({num_classes}). "
                f"Received: k={k!r}"
            )
    directory = os.fspath(directory)
    manifest_path = os.path.join(directory, MANIFEST)
    old_files = []
    if os.path.exists(manifest_path):
        if not overwrite:
            raise FileExistsError(
                f"{directory!r} already holds a teacher cache; open it with "
                "`TeacherCache(directory)` or pass `overwrite=True`."
            )
        old_files = _listed_files(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(
            f"`directory` must be a folder for the cache. Received: "
            f"{directory!r}, which is a file."
        )
    os.makedirs(directory, exist_ok=True)
    # Shards of builds that were killed before their manifest was written:
    # those of the builds whose journal is still there, listed by no
    # manifest (a file that only looks like a shard is left alone).
    _remove_orphan_shards(directory, keep=old_files)
    # The new cache is written beside the old one under new names; the
    # manifest is swapped atomically at the end, so a killed build leaves
    # the old cache usable, and only the old cache's own files are
    # removed afterwards (never anything else in the folder). The journal,
    # written before any shard, marks this build's prefix as ours.
    prefix = f"b{uuid.uuid4().hex[:8]}-"
    journal = os.path.join(directory, f".{prefix}{_JOURNAL}")
    with open(journal, "w") as f:
        f.write("a teacher cache build in progress (keras_distill)\n")
        f.flush()
        os.fsync(f.fileno())
    tmp = directory

    @tf.function(reduce_retracing=True)
    def run_teacher(batch):
        logits = kd_losses.to_logits(teacher(batch, training=False), teacher_outputs)
        if k is None:
            return {"logits": logits}
        values, indices = tf.math.top_k(logits, k=k)
        num = tf.shape(logits)[-1]
        mask = tf.reduce_any(
            tf.equal(indices[..., None], tf.range(num)[None, None, :]), axis=1
        )
        rest = tf.where(mask, tf.constant(-np.inf, logits.dtype), logits)
        rest_lse = tf.reduce_logsumexp(rest, axis=-1, keepdims=True)
        return {"values": tf.concat([values, rest_lse], -1), "indices": indices}

    if keras.backend.backend() != "tensorflow":
        run_teacher = _eager_teacher(teacher, teacher_outputs, k)
    total = len(x) if not isinstance(x, tf.data.Dataset) else None
    if total is None:
        cardinality = int(x.cardinality())
        steps = cardinality if cardinality > 0 else None
    else:
        steps = -(-total // batch_size)
    bar = keras.utils.Progbar(
        steps, verbose=1 if verbose == "auto" else verbose, unit_name="batch"
    )
    writers = {}
    data_digest = hashlib.sha256()
    count = 0
    try:
        for step, batch in enumerate(_batches(x, batch_size)):
            if check_values:
                check_values = False
                kd_distiller._check_declared_values(
                    "teacher", teacher, teacher_outputs, tf.constant(batch[:8])
                )
            _check_finite_inputs(batch, step * batch_size)
            data_digest.update(np.ascontiguousarray(batch).tobytes())
            outputs = {
                n: np.asarray(v) for n, v in run_teacher(tf.constant(batch)).items()
            }
            if step == 0:
                _check_one_distribution_per_example(
                    (None, *next(iter(outputs.values())).shape[1:])
                )
            for name, value in outputs.items():
                if name == "indices":
                    value = value.astype("int32")
                else:
                    columns = slice(0, k or value.shape[1])
                    if not np.all(np.isfinite(value[:, columns])):
                        # Non-finite before any cast: no dtype would help.
                        raise ValueError(
                            f"The teacher produced non-finite outputs (NaN or "
                            f"inf in its own {value.dtype} outputs) in batch "
                            f"{step} (examples {step * batch_size} to "
                            f"{step * batch_size + len(value) - 1}). Check "
                            "those inputs and the teacher."
                        )
                    value = value.astype(dtype)
                    if not np.all(np.isfinite(value[:, columns])):
                        raise ValueError(
                            f"The teacher produced non-finite outputs (in {dtype}) "
                            f"in batch {step}; use dtype='float32'."
                        )
                if name not in writers:
                    writers[name] = (
                        _ShardWriter(tmp, SHARD_SUFFIXES[name], rows_per_shard, prefix),
                        value,
                    )
                writers[name][0].write(value)
            fingerprint = bit_fingerprints(batch)
            if FINGERPRINT_PART not in writers:
                writers[FINGERPRINT_PART] = (
                    _ShardWriter(
                        tmp, SHARD_SUFFIXES[FINGERPRINT_PART], rows_per_shard, prefix
                    ),
                    fingerprint,
                )
            writers[FINGERPRINT_PART][0].write(fingerprint)
            count += len(batch)
            num_classes = (
                num_classes or outputs.get("logits", outputs.get("values")).shape[-1]
            )
            bar.update(step + 1)
        if count == 0:
            raise ValueError("Cannot build a teacher cache from empty data.")
        parts = {}
        for name, (writer, sample) in writers.items():
            parts[name] = {
                "dtype": str(sample.dtype),
                "width": int(sample.shape[1]),
                "shards": writer.close(),
            }
        parts[FINGERPRINT_PART]["kind"] = FINGERPRINT_BITS
        manifest = {
            "format_version": FORMAT_VERSION,
            "teacher_fingerprint": teacher_fingerprint(teacher),
            "teacher_name": teacher.name,
            "data_fingerprint": data_digest.hexdigest(),
            "num_examples": count,
            "num_classes": int(num_classes),
            "k": k,
            "dtype": dtype,
            "parts": parts,
        }
        staged = os.path.join(directory, f".{prefix}{MANIFEST}")
        with open(staged, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, manifest_path)  # atomic: old or new, never half
    except BaseException:
        for writer, _ in writers.values():
            writer.close()
        for writer, _ in writers.values():
            for shard in writer.shards:
                _remove(os.path.join(directory, shard["file"]))
        _remove(os.path.join(directory, f".{prefix}{MANIFEST}"))
        _remove(journal)
        raise
    new_files = set(_listed_files(directory))
    for name in old_files:
        if name not in new_files:
            _remove(os.path.join(directory, name))
    _remove(journal)
    return cls(directory)


def _check_one_distribution_per_example(shape) -> None:
    """Refuses a teacher whose outputs are not `(batch, classes)`: the cache
    stores one distribution per example, and a language model's
    `(batch, sequence, vocabulary)` logits would be misread as that.
    """
    if not all(d is None or isinstance(d, int) for d in shape):
        return  # several outputs: not this check's concern
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(
            f"The teacher's outputs have shape {shape}; a teacher cache stores "
            "one distribution per example, shaped (batch, classes). Per-token "
            "outputs (batch, sequence, vocabulary) are not cached yet: distill "
            "them online (pass the teacher to the Distiller)."
        )


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_orphan_shards(directory, keep):
    """Removes what killed builds wrote: the shards and staged manifest of
    each build whose journal (`.b<id>-building`) is left, unless listed in
    `keep` (the current manifest's files), then the journal itself."""
    keep = set(keep)
    names = os.listdir(directory)
    builds = {
        match.group(1)
        for match in map(_JOURNAL_NAME.fullmatch, names)
        if match is not None
    }
    for name in names:
        if name in keep:
            continue
        found = _OUR_SHARD.fullmatch(name) or _STAGED_MANIFEST.fullmatch(name)
        if found is not None and found.group(1) in builds:
            _remove(os.path.join(directory, name))
    for build in builds:
        _remove(os.path.join(directory, f".{build}-{_JOURNAL}"))


def _check_finite_inputs(batch, start):
    """Refuses NaN/inf inputs: a ReLU maps NaN to 0, so the teacher's outputs
    can look finite while meaning nothing, and would be cached as targets."""
    values = np.asarray(batch)
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not finite.all():
        index = start + int(np.argmin(finite))
        raise ValueError(
            f"The inputs hold NaN or infinite values (the first at example {index}), "
            "so the teacher's outputs there would be cached as targets that mean "
            "nothing. Fix or drop those examples before building the cache."
        )


def _eager_teacher(teacher, teacher_outputs, k):
    """`run_teacher` for the backends other than TensorFlow (JAX): NumPy outputs.

    The teacher runs through `predict_on_batch` (compiled by the backend);
    the top-k form is computed in NumPy as `tf.math.top_k` does (the `k`
    largest, ties to the lower index) with the log-sum-exp of the rest.
    """

    def run_teacher(batch):
        raw = teacher.predict_on_batch(np.asarray(batch))
        logits = keras.ops.convert_to_numpy(kd_losses.to_logits(raw, teacher_outputs))
        logits = logits.astype("float32")
        if k is None:
            return {"logits": logits}
        indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        values = np.take_along_axis(logits, indices, axis=-1)
        rest = logits.copy()
        np.put_along_axis(rest, indices, -np.inf, axis=-1)
        top = rest.max(axis=-1, keepdims=True)
        finite = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            rest_lse = np.log(np.exp(rest - finite).sum(-1, keepdims=True)) + finite
        rest_lse = rest_lse.astype("float32")
        return {
            "values": np.concatenate([values, rest_lse], -1),
            "indices": indices.astype("int32"),
        }

    return run_teacher
