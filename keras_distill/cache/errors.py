"""The teacher cache's errors."""


class CacheMismatchError(ValueError):
    """The cache was built from another teacher or another dataset."""


class CacheCorruptError(IOError):
    """A cache shard is truncated or does not match its checksum."""
