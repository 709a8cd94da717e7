"""The teacher cache's errors.

Both are registered with `checks.error_class`, so that a check failing inside
a cache's `tf.data` pipeline reaches `Distiller.fit()`'s caller as the same
class, with its one-line message (not a TensorFlow error around it).
"""

from keras_distill import checks as kd_checks


@kd_checks.error_class
class CacheMismatchError(ValueError):
    """The cache was built from another teacher or another dataset."""


@kd_checks.error_class
class CacheCorruptError(IOError):
    """A cache shard is truncated or does not match its checksum."""
