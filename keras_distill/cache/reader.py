"""Reading a cache: its targets as `tf.data` batches paired with the examples."""

import os
import re

import numpy as np

from keras_distill import checks as kd_checks
from keras_distill import targets as kd_targets
from keras_distill.cache.errors import CacheCorruptError, CacheMismatchError
from keras_distill.cache.format import FINGERPRINT_PART
from keras_distill.targets import (
    TEACHER_LOGITS_KEY,
    TOPK_INDICES_KEY,
    TOPK_LOGITS_KEY,
    TOPK_REST_KEY,
)

# `TeacherCache.dataset(in_memory="auto")` holds targets up to this size in RAM.
IN_MEMORY_LIMIT = 1 << 30
# Default shuffle buffer, in examples, for a `tf.data.Dataset` of examples.
STREAM_SHUFFLE_BUFFER = 10_000


def tf_zip(*datasets):
    import tensorflow as tf

    return tf.data.Dataset.zip(datasets)


class CacheReader:
    """The `TeacherCache`'s reading (a mixin over `directory` and `manifest`)."""

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
                Defaults to `False` (the example count is always checked: up
                front when known, else as the examples stream, so a longer or
                shorter dataset fails instead of losing examples).
            verify_alignment: Check that each example is the one the cache
                holds at its position (per-example fingerprints stored at
                build time): once up front for arrays, per batch in the input
                pipeline for a `tf.data.Dataset`, so permuted or filtered
                data fails instead of training on wrong targets. Defaults to
                `True`.
            teacher: Optional teacher to check the cache against (refused if
                the cache was built from another teacher). Defaults to `None`;
                a `Distiller` checks its own teacher anyway, once before
                `fit()`/`evaluate()` on this dataset or one made from it.
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
            for name, part in (("y", y), ("sample_weight", sample_weight)):
                if part is not None and len(part) != count:
                    raise ValueError(
                        f"`{name}` must hold one entry per example of `x`. "
                        f"Received: {count} inputs and {len(part)} {name} entries."
                    )
            parts = tuple(p for p in (x, y, sample_weight) if p is not None)
            examples = tf.data.Dataset.from_tensor_slices(
                parts if len(parts) > 1 else x
            )
        if count >= 0 and count != self.num_examples:
            batched = ""
            if from_dataset:
                first = tf.nest.flatten(x.element_spec)[0]
                if first.shape.rank and first.shape[0] is None:
                    batched = (
                        f" The dataset looks batched (its elements have shape "
                        f"{first.shape}): pass its examples, e.g. `x.unbatch()`; "
                        "`dataset()` batches them itself."
                    )
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} holds {self.num_examples} "
                f"examples but the data given has {count}.{batched}"
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
                ds = self._zip_exactly(
                    examples,
                    tf.data.Dataset.from_tensor_slices(targets),
                    _fingerprint_slices(stored),
                    count,
                )
            else:
                ds = tf.data.Dataset.from_tensor_slices((*parts, targets))
            if shuffle:
                ds = ds.shuffle(shuffle_buffer, seed=seed)
            ds = ds.batch(batch_size)
            if from_dataset:
                ds = self._checked_pipeline(ds, with_fingerprints).map(_flatten)
            return self._marked(ds.prefetch(tf.data.AUTOTUNE))
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
        ds = self._zip_exactly(examples, records, fingerprint_records, count)
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.batch(batch_size)
        decode = self._decode
        ds = ds.map(
            lambda e, raw, f: (e, decode(raw), f),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = self._checked_pipeline(ds, with_fingerprints).map(_flatten)
        return self._marked(ds.prefetch(tf.data.AUTOTUNE))

    def _marked(self, ds):
        """`ds`, marked so that a `Distiller` checks its teacher built this cache."""
        kd_targets.mark(
            ds,
            lambda teacher: self.check_teacher(teacher, "the Distiller's teacher"),
            lambda error: _length_error(error, self.directory, self.num_examples),
        )
        return ds

    def _zip_exactly(self, examples, targets, fingerprints, count):
        """`zip(examples, targets, fingerprints)` that fails unless `examples`
        holds as many examples as the cache.

        `count` is the examples' cardinality: when known it was compared
        already; else (a filtered or repeated dataset) the examples' count
        is asserted as they stream (`assert_cardinality`, a native op that
        costs nothing per step), so a longer or shorter dataset fails where a
        plain zip would stop at the shorter side and drop the rest silently.
        `Distiller.fit()` reports it as a `CacheMismatchError` (`_length_error`).
        """
        import tensorflow as tf

        if count < 0:
            checked = examples.apply(
                tf.data.experimental.assert_cardinality(self.num_examples)
            )
            # Of unknown size again, so that `fit()` reads to the end (a
            # known size would stop it after the cache's last batch, before
            # the examples' count is checked).
            examples = tf.data.Dataset.from_tensors(0).flat_map(lambda _: checked)
        return tf.data.Dataset.zip((examples, targets, fingerprints))

    def _verified_each_epoch(self, records):
        """`records`, preceded in every epoch by a check of the shards' checksums."""
        import tensorflow as tf

        def verify():
            try:
                self.verify(checksums=True)
            except CacheCorruptError as error:
                # Raised inside TensorFlow (an UnknownError around it), told
                # apart by the tag: `Distiller.fit()` raises it as itself.
                raise CacheCorruptError(
                    kd_checks.tagged(str(error), CacheCorruptError)
                ) from None
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


# `tf.data`'s message when `assert_cardinality` fails.
_CARDINALITY = re.compile(
    r"Input dataset was expected to contain (\d+) elements but contained "
    r"(only|at least) (\d+) elements"
)


def _length_error(error, directory, num_examples):
    """The `CacheMismatchError` for a failed `assert_cardinality` of the cache
    at `directory` (`num_examples` examples) in `error`, else `None`."""
    match = _CARDINALITY.search(str(getattr(error, "message", error)))
    if match is None or int(match.group(1)) != num_examples:
        return None
    how, given = match.group(2), match.group(3)
    if how == "at least":
        return CacheMismatchError(
            f"The dataset given yields more than the {num_examples} examples the "
            f"teacher cache at {directory!r} holds (its size is unknown, so this "
            "shows only now). Pass the examples the cache was built from, once "
            "(repeat the cache's dataset, not its source), or rebuild the cache."
        )
    return CacheMismatchError(
        f"The dataset given yields only {given} examples but the teacher cache at "
        f"{directory!r} holds {num_examples} (or one of its shards was cut short "
        "while it was read). Pass all the examples the cache was built from, in "
        "order, or rebuild the cache."
    )
