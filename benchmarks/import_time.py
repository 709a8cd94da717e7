"""Start-up: the time of `import keras_distill` against `import keras`'s.

Each import runs in a fresh Python process (nothing cached in memory but the
OS's file cache), alternating the two for `RUNS` rounds, so that a load on
the machine slows both alike; the import itself is timed inside the process
(interpreter start-up excluded). Also lists what `import keras_distill`
loads beyond `import keras` (top-level packages), and checks that the
optional extras (Keras Tuner, TFDS, the app's packages, TF Serving's API,
TFLite) are not among them.

Run: `.venv/bin/python benchmarks/import_time.py` (about a minute; `RUNS=3`
for a quicker one; `--docs` also writes the report into docs/performance.md's
`import-time` block).
"""

import json
import os
import statistics
import subprocess
import sys

RUNS = int(os.environ.get("RUNS", 5))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "modules": sorted(sys.modules)}}))
"""
# What keras_distill adds once keras is loaded (less noisy than a difference
# of two noisy totals).
INCREMENT = """
import json, time
import keras
start = time.perf_counter()
import keras_distill
print(json.dumps({"seconds": time.perf_counter() - start, "modules": []}))
"""

OPTIONAL = (
    "keras_tuner",
    "tensorflow_datasets",
    "matplotlib",
    "yaml",
    "sklearn",
    "tensorflow_serving",
    "tensorflow.lite.python.lite",
    "keras_distill.app",
    "keras_distill.tuner",
    "keras_distill.serving",
    "keras_distill.export",
    "keras_distill.cache",
    "keras_distill.data",
)


def probe(module):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    code = INCREMENT if module == "increment" else PROBE.format(module=module)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# The command, timed as a user sees it (the whole process): its help, and a
# config mistake, which it reports before TensorFlow loads.
COMMANDS = {
    "keras-distill --help": ["keras-distill", "--help"],
    "python -m keras_distill --help": [sys.executable, "-m", "keras_distill", "--help"],
    "keras-distill train BAD.yaml (a config mistake)": [
        "keras-distill",
        "train",
        "BAD_CONFIG",
    ],
}


def time_commands(rounds):
    """`{label: [seconds]}` of each command's wall time, alternating."""
    import tempfile
    import time

    script = os.path.join(os.path.dirname(sys.executable), "keras-distill")
    bad = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    bad.write("output: runs/x\ndistill: {alpha: 7}\n")
    bad.close()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    times = {label: [] for label in COMMANDS}
    for round_index in range(rounds):
        labels = list(COMMANDS) if round_index % 2 == 0 else list(COMMANDS)[::-1]
        for label in labels:
            command = [
                script if part == "keras-distill" else part for part in COMMANDS[label]
            ]
            command = [bad.name if part == "BAD_CONFIG" else part for part in command]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            times[label].append(time.perf_counter() - start)
            if done.returncode != (2 if "BAD_CONFIG" in COMMANDS[label] else 0):
                raise AssertionError(f"{label}: exit {done.returncode}: {done.stderr}")
            if "oneDNN" in done.stderr:
                raise AssertionError(f"{label} printed TensorFlow's logs")
    os.unlink(bad.name)
    return times


def main():
    times = {"keras": [], "keras_distill": [], "increment": []}
    modules = {}
    for round_index in range(RUNS):
        order = list(times) if round_index % 2 == 0 else list(times)[::-1]
        for module in order:
            result = probe(module)
            times[module].append(result["seconds"])
            modules[module] = set(result["modules"])
    increment = times.pop("increment")
    extra = sorted(modules["keras_distill"] - modules["keras"])
    packages = sorted({name.split(".")[0] for name in extra})
    loaded_optional = [
        name
        for name in OPTIONAL
        if name in modules["keras_distill"] and name not in modules["keras"]
    ]
    by_keras = [name for name in OPTIONAL if name in modules["keras"]]
    keras_s = statistics.median(times["keras"])
    ours_s = statistics.median(times["keras_distill"])
    print(
        f"`import` in a fresh process, median of {RUNS} alternating runs "
        f"({os.cpu_count()} CPU cores)"
    )
    print("| import | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} |"
        )
    print(f"| keras_distill / keras (medians) | {ours_s / keras_s:.3f} | | |")
    print(f"| keras_distill - keras (medians) | {ours_s - keras_s:+.3f} s | | |")
    print(
        f"| `import keras_distill` after `import keras` | "
        f"{statistics.median(increment):.3f} | {min(increment):.3f} | "
        f"{max(increment):.3f} |"
    )
    print(
        f"\n`import keras_distill` loads {len(extra)} modules beyond `import keras`, "
        f"from the packages: {', '.join(packages) or 'none'}"
    )
    print(
        "optional or lazily loaded modules that `import keras_distill` adds: "
        f"{loaded_optional or 'none'} (already loaded by `import keras`: "
        f"{by_keras or 'none'})"
    )
    commands = time_commands(RUNS)
    print(
        f"\nThe command, whole process (interpreter start-up included), median of "
        f"{RUNS} alternating runs; none imports TensorFlow or prints its banner:"
    )
    print("\n| command | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for label, values in commands.items():
        print(
            f"| `{label}` | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import docblocks

    with docblocks.report("docs/performance.md", "import-time"):
        main()
