"""Teacher-output cache: run the teacher once, distill from disk afterwards.

When the training data is not augmented, the teacher's outputs are the same
every epoch. `TeacherCache.build` runs the teacher once over the data, in
batches with a progress bar, and streams its outputs to disk in shards (raw
row-major files plus a JSON manifest). `TeacherCache.dataset` reads them back
with TensorFlow's own `FixedLengthRecordDataset` (no Python generator, a few
batches in memory) paired with the examples in the same order, shuffled
together. The `Distiller` then trains without calling the teacher.

Two forms:
- dense: all logits, float16 or float32;
- top-k: the k largest logits, their class ids, and the log-sum-exp of the
  other logits; the KD term on it equals the full one when k equals the
  number of classes and degrades gracefully for smaller k
  (`keras_distill.losses.topk_kd_loss`).
"""

import functools
import hashlib
import json
import os
import re
import uuid

import keras
import numpy as np

from keras_distill import losses as kd_losses
from keras_distill.targets import (
    TEACHER_LOGITS_KEY,
    TOPK_INDICES_KEY,
    TOPK_LOGITS_KEY,
    TOPK_REST_KEY,
)

MANIFEST = "manifest.json"
# `TeacherCache.dataset(in_memory="auto")` holds targets up to this size in RAM.
IN_MEMORY_LIMIT = 1 << 30
FORMAT_VERSION = 1
# Default shuffle buffer, in examples, for a `tf.data.Dataset` of examples.
STREAM_SHUFFLE_BUFFER = 10_000


def tf_zip(*datasets):
    import tensorflow as tf

    return tf.data.Dataset.zip(datasets)


class CacheMismatchError(ValueError):
    """The cache was built from another teacher or another dataset."""


class CacheCorruptError(IOError):
    """A cache shard is truncated or does not match its checksum."""


def teacher_fingerprint(teacher):
    """A sha256 of the teacher's architecture and weights."""
    digest = hashlib.sha256()
    try:
        config = json.dumps(teacher.get_config(), sort_keys=True, default=str)
    except NotImplementedError:
        config = type(teacher).__name__
    digest.update(config.encode())
    for weight in teacher.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _batches(x, batch_size):
    """Yields input batches (NumPy) from arrays or a tf.data.Dataset."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        for batch in x:
            if isinstance(batch, tuple | list):
                batch = batch[0]
            yield keras.ops.convert_to_numpy(batch)
    else:
        x = np.asarray(x)
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size]


# Each example's input is fingerprinted by two fixed random projections of
# its values (float64), stored with its targets and compared when reading, so
# targets never pair with the wrong examples (a permuted or filtered `x`).
FINGERPRINT_PART = "fingerprint"
_FINGERPRINT_WIDTH = 2
_FINGERPRINT_RTOL = 1e-6


def _projection(size):
    rng = np.random.default_rng(20231123)
    return rng.standard_normal((size, _FINGERPRINT_WIDTH))


def fingerprints(x):
    """Per-example fingerprints `(n, 2)` (float64) of an input array."""
    x = np.asarray(x)
    flat = x.reshape(len(x), -1).astype("float64")
    return flat @ _projection(flat.shape[1])


def _fingerprints_tf(x):
    """The same fingerprints as `fingerprints`, inside a `tf.data` pipeline."""
    import tensorflow as tf

    size = int(np.prod(x.shape[1:]))  # static: examples have a fixed shape
    flat = tf.cast(tf.reshape(x, [-1, size]), tf.float64)
    return tf.matmul(flat, tf.constant(_projection(size)))


def _fingerprints_match(a, b):
    return np.abs(a - b) <= _FINGERPRINT_RTOL * (np.abs(a) + np.abs(b) + 1.0)


# Caches built since: fingerprints of the float32 *bits*, compared exactly. The
# relative tolerance above let a large feature hide the others (with
# `x[:, 0] = 1e7` a permutation passed). Each example's float32 values are
# read as 16-bit words and projected on fixed random integer weights, in
# float64: every product and partial sum is an integer below 2**53, hence
# exact in any summation order (NumPy here, `tf.matmul` in a pipeline), so
# equal bits give equal fingerprints and no tolerance is needed.
FINGERPRINT_BITS = "float32-bits"


@functools.lru_cache(maxsize=8)
def _bit_weights(words):
    # 2**16 per word times 2**bits per weight, summed over `words`, < 2**53.
    bits = max(1, min(16, 52 - 16 - int(np.ceil(np.log2(max(words, 2))))))
    rng = np.random.default_rng(20231124)
    weights = rng.integers(1, 2**bits, (words, _FINGERPRINT_WIDTH))
    return weights.astype("float64")


def bit_fingerprints(x, chunk=4096):
    """Per-example exact fingerprints `(n, 2)` (float64) of an input array."""
    x = np.asarray(x)
    flat = np.ascontiguousarray(x.reshape(len(x), -1), dtype="float32")
    words = flat.view(np.uint16)
    weights = _bit_weights(words.shape[1])
    out = np.empty((len(words), _FINGERPRINT_WIDTH))
    for start in range(0, len(words), chunk):
        out[start : start + chunk] = words[start : start + chunk] @ weights
    return out


def _bit_fingerprints_tf(x):
    """The same fingerprints as `bit_fingerprints`, inside a `tf.data` pipeline."""
    import tensorflow as tf

    size = int(np.prod(x.shape[1:]))
    flat = tf.cast(tf.reshape(x, [-1, size]), tf.float32)
    words = tf.reshape(tf.bitcast(flat, tf.uint16), [-1, 2 * size])
    return tf.matmul(tf.cast(words, tf.float64), tf.constant(_bit_weights(2 * size)))


def _file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
                name = f"{self.prefix}shard-{len(self.shards):05d}.{self.suffix}"
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


class TeacherCache:
    """Teacher outputs stored on disk, verified, and streamed with `tf.data`.

    Build it once with `TeacherCache.build(...)`; open it later with
    `TeacherCache(directory)`; get training batches with `.dataset(...)`.

    Args:
        directory: The cache folder (holds `manifest.json` and the shards).
        teacher: Optional teacher to check the cache against. Defaults to
            `None` (no check).
        x: Optional inputs to check the cache against (their count and
            fingerprint). Defaults to `None`.
        verify: Check every shard's size and checksum on opening.
            Defaults to `True`.

    Example:

    ```python
    cache = kd.cache.TeacherCache.build(teacher, x_train, "cache/train", k=5)
    train_ds = cache.dataset(x_train, y_train, batch_size=64, shuffle=True)
    distiller.fit(train_ds, epochs=10)   # the teacher is not called
    ```
    """

    def __init__(self, directory, teacher=None, x=None, verify=True):
        self.directory = os.fspath(directory)
        path = os.path.join(self.directory, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No teacher cache at {self.directory!r}: {path!r} is missing."
            )
        self.manifest = _read_manifest(path)
        if verify:
            self.verify()
        if teacher is not None:
            self.check_teacher(teacher)
        if x is not None:
            self.check_data(x)

    # -- Properties ------------------------------------------------------------

    @property
    def num_examples(self):
        return self.manifest["num_examples"]

    @property
    def num_classes(self):
        return self.manifest["num_classes"]

    @property
    def k(self):
        """Cached top-k size, or `None` for a dense cache."""
        return self.manifest["k"]

    @property
    def size_bytes(self):
        return sum(
            os.path.getsize(os.path.join(self.directory, s["file"]))
            for part in self.manifest["parts"].values()
            for s in part["shards"]
        )

    # -- Building --------------------------------------------------------------

    @classmethod
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
        """Runs `teacher` once over `x` and writes its outputs to `directory`.

        Args:
            teacher: The trained teacher (`keras.Model`), run with
                `training=False`.
            x: Inputs: a NumPy array, or a `tf.data.Dataset` of batches (`x`
                or `(x, y, ...)`), in a fixed order (not shuffled).
            directory: Folder to write; must not hold another cache unless
                `overwrite=True`.
            k: Keep the `k` largest logits per example (top-k form). Defaults
                to `None`: all logits (dense).
            dtype: `"float16"` or `"float32"` for stored logits. Defaults to
                `"float16"`.
            batch_size: Batch size for arrays. Defaults to `256`.
            teacher_outputs: `"logits"` or `"probabilities"`. Defaults to
                `"logits"`.
            rows_per_shard: Examples per shard file. Defaults to `65536`.
            overwrite: Replace an existing cache. Defaults to `False`.
            verbose: Progress bar (`"auto"`, 0 or 1). Defaults to `"auto"`.

        Returns:
            The opened `TeacherCache`.
        """
        import tensorflow as tf

        kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
        # The Distiller's own checks: the last activation here, the first
        # batch's values below (a teacher of unknown architecture).
        from keras_distill import distiller as kd_distiller

        kd_distiller._check_declared_outputs("teacher", teacher, teacher_outputs)
        check_values = kd_distiller._last_activation(teacher) is None
        if dtype not in ("float16", "float32"):
            raise ValueError(
                f"`dtype` must be 'float16' or 'float32'. Received: dtype={dtype!r}"
            )
        num_classes = (
            teacher.output_shape[-1] if hasattr(teacher, "output_shape") else None
        )
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
            logits = kd_losses.to_logits(
                teacher(batch, training=False), teacher_outputs
            )
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
                    raw = teacher(tf.constant(batch[:8]), training=False)
                    looks = kd_distiller._looks_like(
                        np.asarray(keras.ops.convert_to_numpy(raw), "float64")
                    )
                    if looks is not None and looks != teacher_outputs:
                        raise ValueError(
                            kd_distiller._outputs_message(
                                "teacher", teacher, teacher_outputs, looks
                            )
                        )
                data_digest.update(np.ascontiguousarray(batch).tobytes())
                outputs = {
                    n: v.numpy() for n, v in run_teacher(tf.constant(batch)).items()
                }
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
                            _ShardWriter(tmp, name, rows_per_shard, prefix),
                            value,
                        )
                    writers[name][0].write(value)
                fingerprint = bit_fingerprints(batch)
                if FINGERPRINT_PART not in writers:
                    writers[FINGERPRINT_PART] = (
                        _ShardWriter(tmp, "fp64", rows_per_shard, prefix),
                        fingerprint,
                    )
                writers[FINGERPRINT_PART][0].write(fingerprint)
                count += len(batch)
                num_classes = (
                    num_classes
                    or outputs.get("logits", outputs.get("values")).shape[-1]
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

    # -- Checks ----------------------------------------------------------------

    def verify(self, checksums=True):
        """Raises `CacheCorruptError` naming a missing, truncated or altered shard.

        Args:
            checksums: Also compare each shard's SHA-256 with the manifest
                (reads every byte). Defaults to `True`; `False` checks only
                that the shards exist with the right sizes.
        """
        for part in self.manifest["parts"].values():
            row_bytes = part["width"] * np.dtype(part["dtype"]).itemsize
            for shard in part["shards"]:
                path = os.path.join(self.directory, shard["file"])
                if not os.path.isfile(path):
                    raise CacheCorruptError(f"Teacher cache shard {path!r} is missing.")
                size, expected = os.path.getsize(path), shard["rows"] * row_bytes
                if size != expected:
                    raise CacheCorruptError(
                        f"Teacher cache shard {path!r} is truncated or corrupt: "
                        f"{size} bytes, expected {expected} ({shard['rows']} rows). "
                        "Rebuild the cache with `overwrite=True`."
                    )
                if checksums and _file_sha256(path) != shard["sha256"]:
                    raise CacheCorruptError(
                        f"Teacher cache shard {path!r} does not match its checksum "
                        "(corrupt). Rebuild the cache with `overwrite=True`."
                    )

    def check_teacher(self, teacher):
        """Raises `CacheMismatchError` unless `teacher` built this cache."""
        if teacher_fingerprint(teacher) != self.manifest["teacher_fingerprint"]:
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} was built from another "
                f"teacher ('{self.manifest['teacher_name']}', different weights or "
                f"architecture) than '{teacher.name}'. Rebuild it with "
                "`TeacherCache.build(..., overwrite=True)`."
            )

    def check_data(self, x):
        """Raises `CacheMismatchError` unless `x` is the data of this cache."""
        digest, count = hashlib.sha256(), 0
        for batch in _batches(x, 4096):
            digest.update(np.ascontiguousarray(batch).tobytes())
            count += len(batch)
        if (
            count != self.num_examples
            or digest.hexdigest() != self.manifest["data_fingerprint"]
        ):
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} was built from another "
                f"dataset ({self.num_examples} examples, fingerprint "
                f"{self.manifest['data_fingerprint'][:12]}) than the one given "
                f"({count} examples, fingerprint {digest.hexdigest()[:12]}). Rebuild "
                "it with `TeacherCache.build(..., overwrite=True)`."
            )

    # -- Reading ---------------------------------------------------------------

    def _records(self, name):
        """Raw per-example records (bytes) of one part, in order."""
        import tensorflow as tf

        part = self.manifest["parts"][name]
        row_bytes = part["width"] * np.dtype(part["dtype"]).itemsize
        files = [os.path.join(self.directory, s["file"]) for s in part["shards"]]
        # A shard cut short while reading ends the epoch with an error, never
        # silently early.
        return tf.data.FixedLengthRecordDataset(files, record_bytes=row_bytes).apply(
            tf.data.experimental.assert_cardinality(self.num_examples)
        )

    def _raw_records(self):
        if self.k is None:
            return self._records("logits")
        return tf_zip(self._records("values"), self._records("indices"))

    def _decode(self, raw):
        """Turns a batch of raw records into the Distiller's target dict."""
        import tensorflow as tf

        def decode(records, name):
            part = self.manifest["parts"][name]
            values = tf.io.decode_raw(records, tf.as_dtype(part["dtype"]))
            return tf.reshape(values, [-1, part["width"]])

        if self.k is None:
            return {TEACHER_LOGITS_KEY: tf.cast(decode(raw, "logits"), tf.float32)}
        values = tf.cast(decode(raw[0], "values"), tf.float32)
        return {
            TOPK_LOGITS_KEY: values[:, : self.k],
            TOPK_INDICES_KEY: decode(raw[1], "indices"),
            TOPK_REST_KEY: values[:, self.k],
        }

    def load(self):
        """Reads all cached targets into memory, as the Distiller's target dict.

        Returns NumPy arrays, as the streamed batches hold them (float32
        values): `{"teacher_logits": (n, classes)}` for a dense cache, or the
        top-k keys (values, class ids, rest log-sum-exp). Casting here, once,
        keeps the cast out of every training step.
        """

        def read(name):
            part = self.manifest["parts"][name]
            rows = [
                np.frombuffer(self._read_verified(shard), dtype=part["dtype"])
                for shard in part["shards"]
            ]
            values = np.concatenate(rows) if rows else np.zeros(0, part["dtype"])
            if values.size != self.num_examples * part["width"]:
                raise CacheCorruptError(
                    f"Teacher cache at {self.directory!r} holds {values.size} "
                    f"values for part {name!r}, expected "
                    f"{self.num_examples * part['width']}. Rebuild it with "
                    "`overwrite=True`."
                )
            return values.reshape(self.num_examples, part["width"])

        if self.k is None:
            return {TEACHER_LOGITS_KEY: read("logits").astype("float32")}
        values = read("values").astype("float32")
        return {
            TOPK_LOGITS_KEY: values[:, : self.k],
            TOPK_INDICES_KEY: read("indices"),
            TOPK_REST_KEY: values[:, self.k],
        }

    def _read_verified(self, shard):
        """A shard's bytes, checked against its SHA-256 as they are read."""
        path = os.path.join(self.directory, shard["file"])
        with open(path, "rb") as f:
            raw = f.read()
        if hashlib.sha256(raw).hexdigest() != shard["sha256"]:
            raise CacheCorruptError(
                f"Teacher cache shard {path!r} does not match its checksum "
                "(changed since the cache was built). Rebuild the cache with "
                "`overwrite=True`."
            )
        return raw

    def stored_fingerprints(self):
        """The per-example input fingerprints stored at build time, or None.

        Caches built before fingerprints existed have none.
        """
        part = self.manifest["parts"].get(FINGERPRINT_PART)
        if part is None:
            return None
        rows = [
            np.frombuffer(self._read_verified(shard), dtype=part["dtype"])
            for shard in part["shards"]
        ]
        return np.concatenate(rows).reshape(-1, part["width"])

    def _exact_fingerprints(self):
        part = self.manifest["parts"].get(FINGERPRINT_PART) or {}
        return part.get("kind") == FINGERPRINT_BITS

    def check_alignment(self, x):
        """Raises `CacheMismatchError` unless array `x` holds, in order, the
        examples the cache was built from (compared by fingerprint)."""
        stored = self.stored_fingerprints()
        if stored is None:
            return
        exact = self._exact_fingerprints()
        given = bit_fingerprints(x) if exact else fingerprints(x)
        if given.shape != stored.shape:
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} holds {len(stored)} "
                f"examples but the data given has {len(given)}."
            )
        if exact:
            match = np.all(given == stored, axis=1)
        else:
            match = np.all(_fingerprints_match(given, stored), axis=1)
        if not match.all():
            index = int(np.argmin(match))
            raise CacheMismatchError(
                f"Example {index} of the data given is not the example the teacher "
                f"cache at {self.directory!r} holds at position {index} "
                f"({int((~match).sum())} of {len(match)} examples differ): the data "
                "is in another order, filtered, or not the data the cache was "
                "built from. Pass the inputs in the order they were cached (shuffle "
                "with `dataset(shuffle=True)`), or rebuild the cache."
            )

    def _checked_pipeline(self, ds, with_fingerprints):
        """Asserts per batch that the examples match the stored fingerprints.

        `ds` yields `(examples, targets, fingerprints)` batches; the result
        yields `(examples, targets)`. Used for `tf.data` inputs, whose order
        cannot be checked up front.
        """
        import tensorflow as tf

        from keras_distill import checks as kd_checks

        directory = self.directory
        exact = self._exact_fingerprints()

        def check(examples, targets, stored):
            x = examples[0] if isinstance(examples, tuple) else examples
            if exact:
                ok = tf.reduce_all(tf.equal(_bit_fingerprints_tf(x), stored))
            else:  # a cache built before exact fingerprints
                given = _fingerprints_tf(x)
                ok = tf.reduce_all(
                    tf.abs(given - stored)
                    <= _FINGERPRINT_RTOL * (tf.abs(given) + tf.abs(stored) + 1.0)
                )
            message = (
                f"{kd_checks.PREFIX}The examples of the dataset given are not the "
                f"examples the teacher cache at {directory!r} holds at those "
                "positions (fingerprint mismatch): the dataset is in another "
                "order, filtered, or not the data the cache was built from. "
                f"Pass the inputs in the order they were cached.{kd_checks.END}"
            )
            with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
                targets = tf.nest.map_structure(tf.identity, targets)
            return examples, targets

        if not with_fingerprints:
            return ds.map(lambda e, t, f: (e, t))
        return ds.map(check, num_parallel_calls=tf.data.AUTOTUNE)

    def targets_dataset(self, batch_size=256):
        """Teacher targets as a `tf.data.Dataset` of batched dicts, in order."""
        return self._raw_records().batch(batch_size).map(self._decode)

    def dataset(
        self,
        x,
        y=None,
        sample_weight=None,
        batch_size=32,
        shuffle=False,
        shuffle_buffer=None,
        seed=None,
        check_data=False,
        in_memory="auto",
        verify_alignment=True,
        teacher=None,
    ):
        """Batches `(x, y[, sample_weight], teacher_targets)` for `Distiller.fit`.

        Examples and cached targets are paired before shuffling, so shuffling
        keeps them aligned.

        Args:
            x: The inputs the cache was built from (same order): a NumPy array
                or an unbatched `tf.data.Dataset` of inputs.
            y: Labels (array), or `None` for unlabeled data (KD term only).
            sample_weight: Optional per-example weights (array).
            batch_size: Batch size. Defaults to `32`.
            shuffle: Shuffle examples (with their targets) every epoch.
                Defaults to `False`.
            shuffle_buffer: Shuffle buffer size, in examples. Defaults to
                `None`: the whole data for arrays, and at most
                `STREAM_SHUFFLE_BUFFER` (10,000) examples for a
                `tf.data.Dataset`, whose examples may not fit in memory (its
                examples stream from their files; memory does not grow with
                the data).
            seed: Shuffle seed. Defaults to `None`.
            check_data: Fingerprint all of `x` against the manifest first.
                Defaults to `False` (the example count is always checked).
            verify_alignment: Check that each example is the one the cache
                holds at its position (per-example fingerprints stored at
                build time): once up front for arrays, per batch in the input
                pipeline for a `tf.data.Dataset`, so permuted or filtered
                data fails instead of training on wrong targets. Defaults to
                `True`.
            teacher: Optional teacher to check the cache against (refused if
                the cache was built from another teacher). Defaults to `None`.
            in_memory: `True` to read the targets into memory once
                (`load()`), `False` to stream them from the shards every
                epoch, `"auto"` to read them into memory when `x` is an
                in-memory array and the targets take at most
                `IN_MEMORY_LIMIT` bytes (they are then much smaller than `x`),
                which saves the per-step decoding. Defaults to `"auto"`.
        """
        import tensorflow as tf

        if teacher is not None:
            self.check_teacher(teacher)
        if sample_weight is not None:
            from keras_distill import distiller as kd_distiller

            kd_distiller._warn_if_no_weight(sample_weight)
        if check_data:
            self.check_data(x)
        from_dataset = isinstance(x, tf.data.Dataset)
        if from_dataset:
            examples = x
            count = int(x.cardinality())
        else:
            count = len(x)
            parts = tuple(p for p in (x, y, sample_weight) if p is not None)
            examples = tf.data.Dataset.from_tensor_slices(
                parts if len(parts) > 1 else x
            )
        if count >= 0 and count != self.num_examples:
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} holds {self.num_examples} "
                f"examples but the data given has {count}."
            )
        self.verify(checksums=False)  # a shard truncated since opening
        if in_memory not in (True, False, "auto"):
            raise ValueError(
                "`in_memory` must be True, False or 'auto'. Received: "
                f"in_memory={in_memory!r}"
            )
        if in_memory == "auto":
            in_memory = not from_dataset and self.size_bytes <= IN_MEMORY_LIMIT
        # Arrays are checked once, here, at no cost per step; a dataset's
        # examples are checked per batch in the input pipeline.
        with_fingerprints = False
        if verify_alignment:
            if from_dataset:
                # Streamed from the shards below (not read into memory) unless
                # the targets are.
                with_fingerprints = FINGERPRINT_PART in self.manifest["parts"]
            else:
                self.check_alignment(x)
        if shuffle and shuffle_buffer is None:
            # A dataset source may not fit in memory: a bounded buffer.
            shuffle_buffer = (
                min(self.num_examples, STREAM_SHUFFLE_BUFFER)
                if from_dataset
                else self.num_examples
            )
        if in_memory:
            stored = self.stored_fingerprints() if with_fingerprints else None
            targets = self.load()
            if from_dataset:
                ds = tf.data.Dataset.zip(
                    (
                        examples,
                        tf.data.Dataset.from_tensor_slices(targets),
                        _fingerprint_slices(stored),
                    )
                )
            else:
                ds = tf.data.Dataset.from_tensor_slices((*parts, targets))
            if shuffle:
                ds = ds.shuffle(shuffle_buffer, seed=seed)
            ds = ds.batch(batch_size)
            if from_dataset:
                ds = self._checked_pipeline(ds, with_fingerprints).map(_flatten)
            return ds.prefetch(tf.data.AUTOTUNE)
        # Pair raw target records with examples before shuffling (aligned),
        # and decode them per batch (cheaper than per example). The shards'
        # checksums are verified again at the start of every epoch.
        records = self._verified_each_epoch(self._raw_records())
        fingerprint_records = (
            self._records(FINGERPRINT_PART).map(
                lambda r: tf.io.decode_raw(r, tf.float64)
            )
            if with_fingerprints
            else _fingerprint_slices(None)
        )
        ds = tf.data.Dataset.zip((examples, records, fingerprint_records))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.batch(batch_size)
        decode = self._decode
        ds = ds.map(
            lambda e, raw, f: (e, decode(raw), f),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = self._checked_pipeline(ds, with_fingerprints).map(_flatten)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _verified_each_epoch(self, records):
        """`records`, preceded in every epoch by a check of the shards' checksums."""
        import tensorflow as tf

        def verify():
            self.verify(checksums=True)
            return True

        check = tf.data.Dataset.from_tensors(0).map(
            lambda _: tf.py_function(verify, [], tf.bool)
        )
        return check.flat_map(lambda _: records)


def _fingerprint_slices(stored):
    """Per-example fingerprints as a dataset (a dummy one when there are none)."""
    import tensorflow as tf

    if stored is None:
        return tf.data.Dataset.from_tensors(np.zeros(2)).repeat()
    return tf.data.Dataset.from_tensor_slices(stored)


def _flatten(examples, targets):
    """`(x, y, ..., targets)` from `((x, y, ...), targets)`."""
    if isinstance(examples, tuple):
        return (*examples, targets)
    return examples, targets


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


_OUR_SHARD = re.compile(r"(b[0-9a-f]{8})-shard-\d{5}\.\w+")
# Written by a build before its first shard, removed when it ends.
_JOURNAL = "building"
_JOURNAL_NAME = re.compile(r"\.(b[0-9a-f]{8})-" + re.escape(_JOURNAL))
# A build's manifest before it is swapped in (`.b<id>-manifest.json`).
_STAGED_MANIFEST = re.compile(r"\.(b[0-9a-f]{8})-" + re.escape(MANIFEST))


def _read_manifest(path):
    """The manifest at `path`, checked; `CacheCorruptError` naming the file."""
    try:
        with open(path) as f:
            manifest = json.load(f)
        parts = manifest["parts"]
        for name, part in parts.items():
            for key in ("dtype", "width", "shards"):
                if key not in part:
                    raise KeyError(f"parts.{name}.{key}")
            for shard in part["shards"]:
                for key in ("file", "rows", "sha256"):
                    if key not in shard:
                        raise KeyError(f"parts.{name}.shards[].{key}")
                _check_shard_name(shard["file"], path)
        for key in ("num_examples", "num_classes", "k", "teacher_fingerprint"):
            if key not in manifest:
                raise KeyError(key)
    except CacheCorruptError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CacheCorruptError(
            f"The teacher cache manifest {path!r} is corrupt or incomplete "
            f"({type(error).__name__}: {error}). Rebuild the cache with "
            "`TeacherCache.build(..., overwrite=True)`."
        ) from None
    return manifest


def _check_shard_name(name, manifest_path):
    """Shard files live in the cache folder itself: no paths, no `..`."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or os.path.basename(name) != name
        or "/" in name
        or "\\" in name
    ):
        raise CacheCorruptError(
            f"The teacher cache manifest {manifest_path!r} names a shard outside "
            f"the cache folder: {name!r}. Shards must be plain file names."
        )


def _listed_files(directory):
    """The files the manifest in `directory` lists (its shards and itself)."""
    try:
        manifest = _read_manifest(os.path.join(directory, MANIFEST))
    except (CacheCorruptError, OSError):
        return []
    return [
        shard["file"] for part in manifest["parts"].values() for shard in part["shards"]
    ]


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
