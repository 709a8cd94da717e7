"""Peak memory against data size: N and 8N examples streamed from TFRecord files.

Goal: the peak RSS of a run over 8N examples within 10% of the same run over
N examples, for online distillation, the teacher cache and the curriculum.

The data is written once to TFRecord shards on disk (64 float32 features and
an int32 label per record, raw bytes; `SHARD` examples per shard), then each
run is a fresh Python process (its peak RSS is its own, `ru_maxrss`), over
the first N or all 8N examples, read back with `tf.data.TFRecordDataset`:

- **online**: `Distiller.fit` on the files (teacher in every step), shuffled
  in a 10,000-example buffer;
- **cached**: `TeacherCache.build` over the files (one streamed teacher
  pass), then `Distiller.fit` on `cache.dataset(files, shuffle=True)`
  (targets streamed from the cache's shards, the default bounded buffer);
- **curriculum**: `StreamingCurriculum.from_teacher` over the files (one
  streamed scoring pass), then 2 epochs with a `CurriculumScheduler` (half
  the data, then all of it);
- **cached, whole-data shuffle** (`OLD=1`, the default): the cache as before
  this change for a dataset source, `shuffle_buffer` = every example.

Run: `.venv/bin/python benchmarks/memory.py` (about 10 minutes on 2 CPU
cores; `N=20000` for a quicker run).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(os.environ.get("N", 100_000))
SHARD = int(os.environ.get("SHARD", 12_500))
OLD = os.environ.get("OLD", "1") == "1"
FEATURES = 64
CLASSES = 10
BATCH = 256
MODES = ["online", "cached", "curriculum"] + (
    ["cached, whole-data shuffle"] if OLD else []
)


def write_shards(directory, total):
    """`total` examples in shards of `SHARD`; returns the file names in order."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    projection = rng.standard_normal((FEATURES, CLASSES)).astype("float32")
    files = []
    for start in range(0, total, SHARD):
        rows = min(SHARD, total - start)
        x = rng.standard_normal((rows, FEATURES)).astype("float32")
        y = np.argmax(x @ projection, axis=-1).astype("int32")
        path = os.path.join(directory, f"train-{len(files):05d}.tfrecord")
        rows_bytes = np.concatenate(
            [x.view(np.uint8).reshape(rows, -1), y.view(np.uint8).reshape(rows, -1)],
            axis=1,
        )
        records = np.array([row.tobytes() for row in rows_bytes], dtype=object)
        tf.data.experimental.TFRecordWriter(path).write(
            tf.data.Dataset.from_tensor_slices(records)
        )
        files.append(path)
    return files


def parse(record):
    import tensorflow as tf

    x = tf.io.decode_raw(tf.strings.substr(record, 0, FEATURES * 4), tf.float32)
    y = tf.io.decode_raw(tf.strings.substr(record, FEATURES * 4, 4), tf.int32)[0]
    return tf.reshape(x, [FEATURES]), y


def run(mode, files, workdir):
    """One measured run (in its own process); prints a JSON line."""
    import keras
    import tensorflow as tf

    import keras_distill as kd

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    student = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    distiller = kd.models.compile_classifier(
        kd.Distiller(student, teacher), learning_rate=1e-3
    )

    def source():
        return tf.data.TFRecordDataset(files).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if mode == "online":
        train = source().shuffle(10_000, seed=0).batch(BATCH).prefetch(2)
        distiller.fit(train, epochs=1, verbose=0)
    elif mode.startswith("cached"):
        cache = kd.cache.TeacherCache.build(
            teacher, source().batch(1024), os.path.join(workdir, "cache"), verbose=0
        )
        buffer = cache.num_examples if mode != "cached" else None
        train = cache.dataset(
            source(), batch_size=BATCH, shuffle=True, shuffle_buffer=buffer, seed=0
        )
        distiller.fit(train, epochs=1, verbose=0)
    elif mode == "curriculum":
        curriculum = kd.curriculum.StreamingCurriculum.from_teacher(
            teacher, source(), batch_size=1024, verbose=0, seed=0
        )
        distiller.fit(
            curriculum.dataset(batch_size=BATCH),
            epochs=2,
            verbose=0,
            callbacks=[
                kd.callbacks.CurriculumScheduler(
                    curriculum, kd.curriculum.pacing("linear", 0.5, 1)
                )
            ],
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "baseline_mib": baseline, "seconds": seconds}))


def measure(mode, files):
    with tempfile.TemporaryDirectory() as workdir:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--run", mode, workdir, *files],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    import numpy as np  # noqa: F401  (fail early without the venv)

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        files = write_shards(directory, 8 * N)
        size = sum(os.path.getsize(f) for f in files) / 2**20
        print(
            f"wrote {8 * N:,} examples ({size:.0f} MiB of TFRecord shards, "
            f"{len(files)} files) in {time.perf_counter() - start:.0f} s"
        )
        small = files[: N // SHARD]
        results = {}
        for mode in MODES:
            # N and 8N back to back, so load on the machine affects both alike.
            results[mode] = {
                "N": measure(mode, small),
                "8N": measure(mode, files),
            }
            r = results[mode]
            print(
                f"{mode}: {r['N']['peak_mib']:.0f} MiB at N, "
                f"{r['8N']['peak_mib']:.0f} MiB at 8N",
                flush=True,
            )
    print(
        f"\nPeak RSS, N = {N:,} and 8N = {8 * N:,} examples read from TFRecord files "
        f"({FEATURES} float32 features, batch {BATCH}); each run in a fresh process "
        f"({os.cpu_count()} CPU cores)"
    )
    print(
        "| run | peak at N (MiB) | peak at 8N (MiB) | 8N / N | goal <= 1.10 "
        "| before the data (MiB) | time at N / 8N (s) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for mode, r in results.items():
        ratio = r["8N"]["peak_mib"] / r["N"]["peak_mib"]
        goal = "met" if ratio <= 1.10 else "NOT met"
        if mode == "cached, whole-data shuffle":
            goal = "(for comparison)"
        print(
            f"| {mode} | {r['N']['peak_mib']:,.0f} | {r['8N']['peak_mib']:,.0f} | "
            f"{ratio:.3f} | {goal} | {r['N']['baseline_mib']:,.0f} | "
            f"{r['N']['seconds']:.0f} / {r['8N']['seconds']:.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run":
        sys.path.insert(0, ROOT)  # this checkout's keras_distill
        run(sys.argv[2], sys.argv[4:], sys.argv[3])
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import docblocks

        # `--docs` also writes the report into docs/performance.md's block.
        with docblocks.report("docs/performance.md", "memory"):
            main()
