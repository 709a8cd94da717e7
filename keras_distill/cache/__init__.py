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

The package, one concern per module:
- `errors`: `CacheMismatchError`, `CacheCorruptError`;
- `fingerprint`: the teacher's, the data's and each example's fingerprints;
- `format`: the manifest and the names of the files a build writes;
- `writer`: `build` (the teacher run once, its outputs written in shards);
- `verify`: the checks of the shards, the teacher, the data and its order;
- `reader`: the targets read back as `tf.data` batches (`dataset`, `load`);
- `teacher_cache`: `TeacherCache`, which joins them.
"""

from keras_distill.cache.errors import CacheCorruptError, CacheMismatchError
from keras_distill.cache.fingerprint import (  # noqa: F401  (the module's old names)
    _FINGERPRINT_RTOL,
    _FINGERPRINT_WIDTH,
    FINGERPRINT_BITS,
    _batches,
    _bit_fingerprints_tf,
    _bit_weights,
    _file_sha256,
    _fingerprints_match,
    _fingerprints_tf,
    _projection,
    bit_fingerprints,
    fingerprints,
    teacher_fingerprint,
)
from keras_distill.cache.format import (  # noqa: F401
    _JOURNAL,
    _JOURNAL_NAME,
    _OUR_SHARD,
    _STAGED_MANIFEST,
    FINGERPRINT_PART,
    FORMAT_VERSION,
    MANIFEST,
    _check_shard_name,
    _listed_files,
    _read_manifest,
)
from keras_distill.cache.reader import (  # noqa: F401
    IN_MEMORY_LIMIT,
    STREAM_SHUFFLE_BUFFER,
    _fingerprint_slices,
    _flatten,
    tf_zip,
)
from keras_distill.cache.teacher_cache import TeacherCache
from keras_distill.cache.writer import (  # noqa: F401
    _remove,
    _remove_orphan_shards,
    _ShardWriter,
)

__all__ = [
    "CacheCorruptError",
    "CacheMismatchError",
    "TeacherCache",
    "bit_fingerprints",
    "fingerprints",
    "teacher_fingerprint",
]
