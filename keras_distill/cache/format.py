"""The cache's on-disk format: the manifest, its parts and the names of its files.

A cache folder holds `manifest.json` and, per part (`logits`, or `values`
and `indices` for top-k, and `fingerprint`), raw row-major shard files named
`b<build id>-shard-<n>.<suffix>`. A build writes a journal
(`.b<build id>-building`) before its first shard and a staged manifest
(`.b<build id>-manifest.json`) before swapping it in.
"""

import json
import os
import re

from keras_distill.cache.errors import CacheCorruptError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The part holding the per-example input fingerprints.
FINGERPRINT_PART = "fingerprint"

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
