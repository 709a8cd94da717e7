"""Step cost of online vs cached distillation, measured side by side in one run.

Prints, with the median over many interleaved steps (Keras's compiled steps;
the cached steps interleaved with a student step, the teacher-sized ones with
another, the streamed step with a third):
- online distill step / (student step + teacher forward)   goal <= 1.05
- cached distill step / student step                       goal <= 1.10
  (and the same step with the in-step checks off, to show their cost)
  (targets read into memory once; also streamed from the shards)
- cache build time / one teacher inference pass            goal <= 1.10
- cache bytes per example, dense vs top-k
- peak RSS while building and reading a cache for data much larger than a batch

Run: `.venv/bin/python benchmarks/step_cost.py` (about 3 minutes on 2 CPU cores).

`--backend jax` measures the steps (not the cache build or memory) on both
backends, one after the other in two child processes (`KERAS_BACKEND=tensorflow`
and `KERAS_BACKEND=jax`, each `--steps-only`), and prints their step times
side by side and the two ratios for each backend. On JAX a step is Keras's
compiled `train_function(state, batch)` on batches already on the device,
as `fit()` gives them.
"""

import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill.cache import TeacherCache  # noqa: E402

SHAPE = (28, 28, 1)
CLASSES = 10
BATCH = 64
STEPS = int(os.environ.get("STEPS", 200))
WARMUP = 50  # untimed interleaved rounds per group
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def teacher_model():
    """About 1M parameters."""
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(CLASSES),
        ],
        name="teacher",
    )


def student_model():
    """About 47k parameters."""
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(59, activation="relu"),
            keras.layers.Dense(CLASSES),
        ],
        name="student",
    )


def compiled(model):
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def median_ms(times):
    return 1000 * statistics.median(times)


def _jax_timer(model, dataset, fit=True):
    """`_timer` on the JAX backend: the compiled step, state passed along."""
    import jax

    batches = (
        jax.tree.map(jax.numpy.asarray, batch)
        for batch in dataset.repeat().as_numpy_iterator()
    )
    if fit:
        model.fit(dataset.take(2), epochs=1, verbose=0, shuffle=False)
        # Copies: the step donates its state, and the teacher's arrays are
        # shared by the candidates.
        state = [
            jax.tree.map(
                jax.numpy.copy,
                model._get_jax_state(
                    trainable_variables=True,
                    non_trainable_variables=True,
                    optimizer_variables=True,
                    metrics_variables=True,
                ),
            )
        ]
        function = model.train_function

        def run():
            logs, state[0] = function(state[0], batches)
            return logs

    else:
        variables = jax.tree.map(
            jax.numpy.copy,
            (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
            ),
        )
        forward = jax.jit(
            lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0]
        )

        def run():
            return forward(*variables, next(batches))

    run()  # compiles

    def step():
        start = time.perf_counter()
        jax.block_until_ready(run())
        return time.perf_counter() - start

    return step


def _timer(model, dataset, fit=True):
    """Returns a function timing one compiled step of `model` on `dataset`.

    The step is Keras's own compiled train (or predict) function, the one
    `fit()` runs; `fit()`'s per-epoch Python work (callbacks, progress bar,
    the Distiller's label check) is left out since it does not scale with
    the number of steps.
    """
    if keras.backend.backend() == "jax":
        return _jax_timer(model, dataset, fit)
    iterator = iter(dataset.repeat())
    if fit:
        # Builds and traces the step that `fit()` runs.
        model.fit(dataset.take(2), epochs=1, verbose=0, shuffle=False)
        function = model.train_function
    else:
        forward = tf.function(lambda it: model(it.get_next(), training=False))
        forward(iterator)  # traces

        def function(it):
            return forward(it)

    def step():
        start = time.perf_counter()
        outputs = function(iterator)
        if hasattr(outputs, "get_value"):  # a tf.experimental.Optional
            outputs = outputs.get_value()
        tf.nest.map_structure(np.asarray, outputs)
        return time.perf_counter() - start

    return step


def checks_off(distiller):
    """`distiller` with its in-step checks removed (for comparison only).

    On this benchmark's batches (integer labels on CPU, no sample weights)
    the step's one check is the finite-loss-and-gradients assertion, which
    stops a bad batch before the update; without it (and without the
    combined check of labels and weights, which has nothing to check here)
    the step is what it would cost with no checks.
    """
    distiller._check_all = lambda problems, guard=(): None
    distiller._check_finite = lambda losses, gradients, guard: None
    # JAX: the new state whatever the flags (they are still computed).
    distiller._guarded = lambda ok, new, old: new
    return distiller


def step_costs(teacher, x, y, directory):
    """Median milliseconds per step, the candidates interleaved step by step."""
    cache = TeacherCache.build(teacher, x, os.path.join(directory, "steps"), verbose=0)
    # Every input pipeline prefetches, as Keras's own array adapter does.
    plain_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).prefetch(2)
    x_ds = tf.data.Dataset.from_tensor_slices(x).batch(BATCH).prefetch(2)
    cached_ds = cache.dataset(x, y, batch_size=BATCH)  # targets read into memory
    streamed_ds = cache.dataset(x, y, batch_size=BATCH, in_memory=False)
    makers = {
        "student step": lambda: _timer(compiled(student_model()), plain_ds),
        "teacher forward": lambda: _timer(teacher, x_ds, fit=False),
        "online distill step": lambda: _timer(
            compiled(kd.Distiller(student_model(), teacher)), plain_ds
        ),
        "cached distill step": lambda: _timer(
            compiled(kd.Distiller(student_model(), teacher)), cached_ds
        ),
        "cached distill step, checks off": lambda: _timer(
            compiled(checks_off(kd.Distiller(student_model(), teacher))), cached_ds
        ),
        "streamed distill step": lambda: _timer(
            compiled(kd.Distiller(student_model(), teacher)), streamed_ds
        ),
    }
    # Steps are interleaved within groups: the cheap cached steps with a
    # student step, the teacher-sized ones with a student step of their own,
    # and the streamed step with a third. (A cheap step right after a 30 ms
    # teacher step that kept both cores busy runs measurably slower; mixing
    # them would bias whichever cheap step happens to come next. The
    # streamed step's pipeline decodes the next batch in the background
    # while the next step runs.)
    groups = [
        ("student step", "cached distill step", "cached distill step, checks off"),
        ("student step", "teacher forward", "online distill step"),
        ("student step", "streamed distill step"),
    ]
    # Each group's models and input pipelines exist only while the group
    # runs, as in `fit()`, which runs one model on one pipeline: the idle
    # prefetching pipelines and models of the other groups, alive during the
    # whole run, slowed the cached steps more than the student's (cached /
    # student 1.10 with them alive, 1.06 to 1.07 without, in comparison runs
    # of the same steps).
    # The order within a group is shuffled every round (seeded): a step's
    # time depends on the step before it (with a fixed order, two copies of
    # the same student step differed by 3%; shuffled, by under 1%).
    order = random.Random(0)
    results = {}
    for index, group in enumerate(groups):
        timers = {name: makers[name]() for name in group}
        times = {name: [] for name in group}
        # Untimed rounds first: the steady state is measured, not the first
        # steps' allocations and cold caches.
        for _ in range(WARMUP):
            for name in group:
                timers[name]()
        # The cheap student-sized groups are timed five times as often: their
        # ratios are read to the percent.
        for _ in range(STEPS * (1 if index == 1 else 5)):
            for name in order.sample(group, len(group)):
                times[name].append(timers[name]())
        for name, t in times.items():
            results[name if name not in results else f"{name} #{index + 1}"] = (
                median_ms(t)
            )
        del timers
        gc.collect()
    return results


def build_vs_inference(teacher, x, directory):
    build, infer = [], []
    for rep in range(5):  # the median of 5 (of 3, one run read 1.34 once)
        start = time.perf_counter()
        teacher.predict(x, batch_size=256, verbose=0)
        infer.append(time.perf_counter() - start)
        start = time.perf_counter()
        TeacherCache.build(
            teacher, x, os.path.join(directory, f"b{rep}"), batch_size=256, verbose=0
        )
        build.append(time.perf_counter() - start)
    sizes = {}
    for k in (None, 5, 1):
        cache = TeacherCache.build(
            teacher, x, os.path.join(directory, f"k{k}"), k=k, verbose=0
        )
        sizes["dense float16" if k is None else f"top-{k}"] = cache.size_bytes / len(x)
    cache = TeacherCache.build(
        teacher, x, os.path.join(directory, "f32"), dtype="float32", verbose=0
    )
    sizes["dense float32"] = cache.size_bytes / len(x)
    return statistics.median(build), statistics.median(infer), sizes


_RSS_CHILD = r"""
import os, resource, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, keras
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
from step_cost import teacher_model, SHAPE
from keras_distill.cache import TeacherCache
n, mode, directory = int(sys.argv[2]), sys.argv[3], sys.argv[4]
teacher = teacher_model()
def gen(i):
    return tf.random.stateless_uniform((256,) + SHAPE, seed=(i, 0))
data = tf.data.Dataset.range(n // 256).map(gen)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "baseline":
    for b in data:
        teacher(b, training=False)
else:
    cache = TeacherCache.build(teacher, data, directory, verbose=0)
    for _ in cache.targets_dataset(256):
        pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "before_mib": base / 1024}))
"""


def peak_rss(n, directory):
    results = {}
    for mode in ("baseline", "cache"):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _RSS_CHILD,
                __file__,
                str(n),
                mode,
                os.path.join(directory, "rss"),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={
                **os.environ,
                "PYTHONPATH": os.path.dirname(os.path.dirname(__file__)),
            },
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4096, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=4096)
    teacher = teacher_model()
    student = student_model()
    print(
        f"teacher {teacher.count_params():,} parameters, student "
        f"{student.count_params():,}; batch {BATCH}; median of {5 * STEPS} "
        f"(student-sized) and {STEPS} (teacher-sized) interleaved steps; "
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )
    with tempfile.TemporaryDirectory() as directory:
        ms = step_costs(teacher, x, y, directory)
        for name, value in ms.items():
            print(f"  {name:32s} {value:8.2f} ms")
        build, infer, sizes = build_vs_inference(teacher, x, directory)
        n_rss = 256 * 200
        rss = peak_rss(n_rss, directory)
    online_ratio = ms["online distill step"] / (
        ms["student step #2"] + ms["teacher forward"]
    )
    cached_ratio = ms["cached distill step"] / ms["student step"]
    build_ratio = build / infer
    data_mib = n_rss * np.prod(SHAPE) * 4 / 2**20
    print()
    print("| measure | value | goal |")
    print("|---|---:|---:|")
    speedup = ms["online distill step"] / ms["cached distill step"]
    rows = [
        (
            "online distill step / (student step + teacher forward)",
            online_ratio,
            "<= 1.05",
        ),
        ("cached distill step / student step", cached_ratio, "<= 1.10"),
        (
            "cached distill step with the checks off / student step",
            ms["cached distill step, checks off"] / ms["student step"],
            "",
        ),
        (
            "cost of the in-step checks: cached step on / off",
            ms["cached distill step"] / ms["cached distill step, checks off"],
            "",
        ),
        (
            "cached distill step, streamed from the shards / student step",
            ms["streamed distill step"] / ms["student step #3"],
            "",
        ),
        ("online distill step / cached distill step", speedup, ""),
        (
            f"cache build / one teacher inference pass ({len(x)} examples)",
            build_ratio,
            "<= 1.10",
        ),
    ]
    for name, value, goal in rows:
        print(f"| {name} | {value:.2f} | {goal} |")
    for name, value in sizes.items():
        print(f"| cache bytes per example, {name} | {value:.0f} | |")
    print(
        f"| peak RSS building + reading a cache of {n_rss:,} examples "
        f"({data_mib:.0f} MiB of inputs) | {rss['cache']['peak_mib']:.0f} MiB | |"
    )
    print(
        f"| peak RSS of the same teacher pass without a cache | "
        f"{rss['baseline']['peak_mib']:.0f} MiB | |"
    )


def steps_only():
    """The step times of this process's backend, as one JSON line."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4096, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=4096)
    with tempfile.TemporaryDirectory() as directory:
        ms = step_costs(teacher_model(), x, y, directory)
    print(json.dumps({"backend": keras.backend.backend(), "ms": ms}))


def ratios(ms):
    """`{name: value}` of the step ratios of one backend's step times."""
    return {
        "online distill step / (student step + teacher forward)": ms[
            "online distill step"
        ]
        / (ms["student step #2"] + ms["teacher forward"]),
        "cached distill step / student step": ms["cached distill step"]
        / ms["student step"],
        "cost of the in-step checks: cached step on / off": ms["cached distill step"]
        / ms["cached distill step, checks off"],
        "cached distill step, streamed from the shards / student step": ms[
            "streamed distill step"
        ]
        / ms["student step #3"],
    }


def both_backends():
    """TensorFlow and JAX, one after the other in child processes, side by side."""
    found = {}
    for backend in ("tensorflow", "jax"):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--steps-only"],
            capture_output=True,
            text=True,
            check=True,
            env={
                **os.environ,
                "KERAS_BACKEND": backend,
                "PYTHONPATH": ROOT,
            },
        )
        found[backend] = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
    import jax

    print(
        f"batch {BATCH}; medians of {5 * STEPS} (student-sized) and {STEPS} "
        f"(teacher-sized) interleaved steps per backend, the backends one after "
        f"the other; {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
        f"JAX {jax.__version__}, Keras {keras.__version__}"
    )
    print()
    print("| step | TensorFlow ms | JAX ms | JAX / TF |")
    print("|---|---:|---:|---:|")
    for name, value in found["tensorflow"].items():
        other = found["jax"][name]
        print(f"| {name} | {value:.2f} | {other:.2f} | {other / value:.2f} |")
    print()
    print("| ratio | TensorFlow | JAX | goal |")
    print("|---|---:|---:|---:|")
    goals = {
        "online distill step / (student step + teacher forward)": "<= 1.05",
        "cached distill step / student step": "<= 1.10",
    }
    tf_ratios, jax_ratios = ratios(found["tensorflow"]), ratios(found["jax"])
    for name, value in tf_ratios.items():
        goal = goals.get(name, "")
        print(f"| {name} | {value:.2f} | {jax_ratios[name]:.2f} | {goal} |")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if "--steps-only" in sys.argv:
        steps_only()
        sys.exit(0)
    if "--backend" in sys.argv:
        backend = sys.argv[sys.argv.index("--backend") + 1]
        if backend != "jax":
            raise SystemExit(
                "--backend must be jax (TensorFlow alone is the default run). "
                f"Received: --backend {backend}"
            )
        import docblocks

        # `--docs` also writes the report into docs/backends.md's block.
        with docblocks.report("docs/backends.md", "backend-steps"):
            both_backends()
        sys.exit(0)
    import docblocks

    # `--docs` also writes the report into docs/performance.md's block.
    with docblocks.report("docs/performance.md", "step-cost"):
        main()
