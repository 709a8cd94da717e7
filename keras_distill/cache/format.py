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

# The suffix of each part's shard files.
SHARD_SUFFIXES = {
    "logits": "logits",
    "values": "values",
    "indices": "indices",
    FINGERPRINT_PART: "fp64",
}
_BUILD_ID = r"b[0-9a-f]{8}"
_SUFFIX = "(?:" + "|".join(map(re.escape, SHARD_SUFFIXES.values())) + ")"
# The shards of a build (`b<id>-shard-<n>.<suffix>`), and every name a
# manifest may list: those, and the unprefixed names of the first builds.
_OUR_SHARD = re.compile(rf"({_BUILD_ID})-shard-\d{{5}}\.{_SUFFIX}")
_SHARD_NAME = re.compile(rf"(?:{_BUILD_ID}-)?shard-\d{{5}}\.{_SUFFIX}")


def shard_name(prefix: str, index: int, suffix: str) -> str:
    """The file name of shard `index` of a build (`prefix` is `b<id>-`)."""
    return f"{prefix}shard-{index:05d}.{suffix}"


# Written by a build before its first shard, removed when it ends.
_JOURNAL = "building"
_JOURNAL_NAME = re.compile(rf"\.({_BUILD_ID})-" + re.escape(_JOURNAL))
# A build's manifest before it is swapped in (`.b<id>-manifest.json`).
_STAGED_MANIFEST = re.compile(rf"\.({_BUILD_ID})-" + re.escape(MANIFEST))


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
        _check_counts(manifest)
    except CacheCorruptError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CacheCorruptError(
            f"The teacher cache manifest {path!r} is corrupt or incomplete "
            f"({type(error).__name__}: {error}). Rebuild the cache with "
            "`TeacherCache.build(..., overwrite=True)`."
        ) from None
    return manifest


def _whole(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_counts(manifest):
    """Raises ValueError if the manifest's counts contradict its parts.

    An edited `num_classes` (or `num_examples`, `k`) was accepted and
    reported by `TeacherCache.num_classes` while the shards held another.
    """
    examples, classes, k = (
        manifest[key] for key in ("num_examples", "num_classes", "k")
    )
    if not _whole(examples, 0) or not _whole(classes, 1):
        raise ValueError(f"num_examples={examples!r}, num_classes={classes!r}")
    if k is not None and not (_whole(k, 1) and k <= classes):
        raise ValueError(f"k={k!r} for num_classes={classes!r}")
    for name, part in manifest["parts"].items():
        rows = sum(shard["rows"] for shard in part["shards"])
        if rows != examples:
            raise ValueError(f"parts.{name} holds {rows} rows, num_examples={examples}")
    widths = {"logits": classes} if k is None else {"indices": k}
    for name, width in widths.items():
        given = manifest["parts"].get(name, {}).get("width")
        if given != width:
            raise ValueError(f"parts.{name}.width={given!r}, expected {width}")


class _ForeignFileError(CacheCorruptError):
    """A manifest lists, as a shard, a file no build writes."""


def _check_shard_name(name, manifest_path):
    """Shards are files a build wrote: plain names of its own pattern.

    Anything else (a path, `..`, the manifest, a user's file) may not be the
    cache's, so it is never read as a shard nor deleted by `overwrite=True`.
    """
    if isinstance(name, str) and _SHARD_NAME.fullmatch(name):
        return
    path_like = not isinstance(name, str) or os.path.basename(name) != name
    where = "outside the cache folder" if path_like or "\\" in name else "by name"
    raise _ForeignFileError(
        f"The teacher cache manifest {manifest_path!r} names a shard {where}: "
        f"{name!r}, which is not a shard TeacherCache writes (a plain name "
        "'b<id>-shard-<n>.<part>' in the cache folder), so it is neither read nor "
        "deleted, not even by overwrite=True. Move any file of yours out of the "
        "folder, delete the manifest and build the cache again."
    )


def _listed_files(directory):
    """The shards the manifest in `directory` lists (none if it is unreadable).

    Raises `CacheCorruptError` if it lists a file that is not a shard: its
    callers delete what it returns.
    """
    try:
        manifest = _read_manifest(os.path.join(directory, MANIFEST))
    except _ForeignFileError:
        raise
    except (CacheCorruptError, OSError):
        return []
    return [
        shard["file"] for part in manifest["parts"].values() for shard in part["shards"]
    ]
