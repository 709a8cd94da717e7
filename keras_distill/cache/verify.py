"""Checking a cache: its shards (size, checksum), teacher, data and order."""

import hashlib
import os

import numpy as np

from keras_distill.cache.errors import CacheCorruptError, CacheMismatchError
from keras_distill.cache.fingerprint import (
    _FINGERPRINT_RTOL,
    FINGERPRINT_BITS,
    _batches,
    _bit_fingerprints_tf,
    _file_sha256,
    _fingerprints_match,
    _fingerprints_tf,
    bit_fingerprints,
    fingerprints,
    same_teacher,
)
from keras_distill.cache.format import FINGERPRINT_PART


class CacheChecks:
    """The `TeacherCache`'s checks (a mixin over `directory` and `manifest`)."""

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

    def check_teacher(self, teacher, what="the teacher"):
        """Raises `CacheMismatchError` unless `teacher` built this cache.

        Args:
            teacher: The teacher to compare (its architecture and weights).
            what: How the message names it. Defaults to `"the teacher"`.
        """
        if not same_teacher(teacher, self.manifest["teacher_fingerprint"]):
            raise CacheMismatchError(
                f"The teacher cache at {self.directory!r} was built from another "
                f"teacher ('{self.manifest['teacher_name']}', different weights or "
                f"architecture) than {what}, '{teacher.name}', so its targets are "
                "not this teacher's. Use the teacher it was built from, or rebuild "
                "it with `TeacherCache.build(..., overwrite=True)`."
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
            message = kd_checks.tagged(
                "The examples of the dataset given are not the "
                f"examples the teacher cache at {directory!r} holds at those "
                "positions (fingerprint mismatch): the dataset is in another "
                "order, filtered, or not the data the cache was built from. "
                "Pass the inputs in the order they were cached.",
                CacheMismatchError,
            )
            with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
                targets = tf.nest.map_structure(tf.identity, targets)
            return examples, targets

        if not with_fingerprints:
            return ds.map(lambda e, t, f: (e, t))
        return ds.map(check, num_parallel_calls=tf.data.AUTOTUNE)
