"""`TeacherCache`: opening a cache, its properties, and `build`."""

import os

from keras_distill.cache import writer
from keras_distill.cache.format import MANIFEST, _read_manifest
from keras_distill.cache.reader import CacheReader
from keras_distill.cache.verify import CacheChecks


class TeacherCache(CacheReader, CacheChecks):
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
        return writer.build(
            cls,
            teacher,
            x,
            directory,
            k=k,
            dtype=dtype,
            batch_size=batch_size,
            teacher_outputs=teacher_outputs,
            rows_per_shard=rows_per_shard,
            overwrite=overwrite,
            verbose=verbose,
        )
