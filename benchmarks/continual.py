"""Continual learning: LwF, LwF.MC, iCaRL-style memory, fine-tuning and joint training.

One command measures everything the README reports, over 3 seeds (mean and
[min, max]):

1. Two tasks of 5 digit classes each, task-incremental (Li & Hoiem's
   setting), on three fixed splits of the 10 digits and two more drawn at
   random (seed 18, distinct from the others and their complements): old-
   and new-task test accuracy of plain fine-tuning, fine-tuning with the
   same warm-up of the new head as LwF, LwF with `learn()`'s default
   warm-up (`"auto"`: on a held-out 20% of the new task's training data,
   until the held-out loss stops improving) and with the previous default
   (20 epochs), T = 2, lambda_o = 1 (alpha = 0.8); whether the issue's
   target holds (new task within 1 point of plain fine-tuning, old task at
   least 4 points above it) and the warm-up lengths "auto" chose.
2. Split digits, 5 tasks of 2 classes ({0,1}, {2,3}, ... as in Split MNIST),
   class-incremental (one growing head, no task id) and task-incremental:
   accuracy matrix, average accuracy, forgetting and backward transfer of
   fine-tuning, LwF (LwF.MC in the class-incremental setting), iCaRL-style
   distillation with an exemplar memory (herding) and joint training.
3. Split MNIST-1D, 5 tasks of 2 classes, class-incremental, the same methods.

Writes `continual.md` (every table) and one heat map PNG per setting into
the output folder (default `continual_benchmark/`); with `--docs`, also
rewrites docs/continual.md's `<!-- benchmark:continual-* -->`
blocks with the tables (`benchmarks/docblocks.py`). Runs are saved per
method and seed under that folder, so an interrupted benchmark resumes.

Run: `.venv/bin/python benchmarks/continual.py [--out DIR] [--seeds 0,1,2]
[--only two-task,digits-class,digits-task,mnist1d-class]` (`--only
two-task,digits-task` took 29 minutes of wall time on 2 CPU cores shared with
other jobs; the whole benchmark took about 70 minutes before the "auto"
warm-up lengthened the task-incremental runs, and has not been re-timed since;
a rerun with finished runs only rewrites the tables and heat maps, in
seconds).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_distill as kd  # noqa: E402
from keras_distill import continual  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import docblocks  # noqa: E402

PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
TWO_TASK_SPLITS = [(0, 1, 2, 3, 4), (0, 2, 4, 6, 8), (1, 4, 5, 7, 9)]
RANDOM_SPLITS, RANDOM_SPLIT_SEED = 2, 18
SETTINGS = ("two-task", "digits-class", "digits-task", "mnist1d-class")
DISPLAY = {"digits": "digits", "mnist1d": "MNIST-1D"}
# The blocks of docs/continual.md that `--docs` rewrites, one per setting.
DOC_BLOCKS = {
    "two-task": "continual-two-task",
    "digits-class": "continual-digits-class",
    "digits-task": "continual-digits-task",
    "mnist1d-class": "continual-mnist1d-class",
}


def digits_mlp(num_classes):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def mnist1d_mlp(num_classes):
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def spread(values):
    values = np.asarray(values, "float64")
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def two_task_splits(count=RANDOM_SPLITS, seed=RANDOM_SPLIT_SEED):
    """The fixed splits, then `count` drawn at random (task 1's classes).

    A drawn split is kept if neither it nor its complement is already in
    the list, so every split is a different partition of the 10 digits.
    """
    splits = list(TWO_TASK_SPLITS)
    rng = np.random.default_rng(seed)
    while len(splits) < len(TWO_TASK_SPLITS) + count:
        task1 = tuple(sorted(int(c) for c in rng.choice(10, 5, replace=False)))
        task2 = tuple(sorted(set(range(10)) - set(task1)))
        if task1 not in splits and task2 not in splits:
            splits.append(task1)
    return splits


def two_task(out, seeds, epochs=30):
    """Li & Hoiem's setting on five splits. Returns Markdown."""
    arrays = kd.data.load_digits(seed=0)
    variants = [
        ("fine-tuning", "finetune", 0),
        ("fine-tuning + warm-up auto", "finetune", "auto"),
        ("LwF (warm-up auto, lambda_o=1)", "lwf", "auto"),
        ("LwF (warm-up 20 epochs)", "lwf", 20),
    ]
    lines = [
        "| task 1 classes | method | old task | new task | warm-up epochs |",
        "|---|---|---:|---:|---:|",
    ]
    verdicts = []
    for task1 in two_task_splits():
        task2 = tuple(sorted(set(range(10)) - set(task1)))
        tasks = continual.split_classes(arrays, [task1, task2])
        rows = {}
        for label, method, warmup in variants:
            finals, warmups = [], []
            for seed in seeds:
                folder = os.path.join(
                    out,
                    "two_task",
                    "".join(map(str, task1)),
                    f"{method}_w{warmup}",
                    f"seed{seed}",
                )
                result = continual.learn(
                    tasks,
                    digits_mlp,
                    folder,
                    scenario="task",
                    method=method,
                    epochs=epochs,
                    warmup_epochs=warmup,
                    seed=seed,
                )
                finals.append(result.accuracy[1])
                warmups.append(result.warmup_epochs[1])
            rows[label] = np.asarray(finals)
            chosen = (
                "-"
                if not warmup
                else f"{min(warmups)}-{max(warmups)}"
                if min(warmups) != max(warmups)
                else f"{warmups[0]}"
            )
            lines.append(
                f"| {','.join(map(str, task1))} | {label} | "
                f"{spread(rows[label][:, 0])} | {spread(rows[label][:, 1])} | "
                f"{chosen} |"
            )
        for lwf_label, method, _ in variants:
            if method != "lwf":
                continue
            lwf = rows[lwf_label].mean(0)
            for label, _, _ in variants[:2]:
                ft = rows[label].mean(0)
                old_gap, new_gap = lwf[0] - ft[0], lwf[1] - ft[1]
                holds = old_gap >= 0.04 and new_gap >= -0.01
                verdicts.append(
                    f"| {','.join(map(str, task1))} | {lwf_label} | {label} | "
                    f"{100 * old_gap:+.1f} | {100 * new_gap:+.1f} | "
                    f"{'yes' if holds else 'no'} |"
                )
    header = [
        "The target (means of the seeds): new task within 1 point of fine-tuning, "
        "old task at least 4 points above it.",
        "",
        "| task 1 classes | LwF | compared with | old task (points) | new task "
        "(points) | target holds |",
        "|---|---|---|---:|---:|---|",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(header + verdicts)


def sequence(
    name, arrays, build, scenario, out, seeds, epochs, learning_rate, memory_size
):
    """5 tasks of 2 classes. Returns (Markdown, {method: [matrices]})."""
    tasks = continual.split_classes(arrays, PAIRS)
    methods = ["finetune", "lwf", "icarl", "joint"]
    if scenario == "task":
        methods.remove("icarl")
    matrices = {m: [] for m in methods}
    for seed in seeds:
        results = continual.compare(
            tasks,
            build,
            os.path.join(out, f"{name}_{scenario}", f"seed{seed}"),
            methods=methods,
            scenario=scenario,
            epochs=epochs,
            learning_rate=learning_rate,
            memory_size=memory_size,
            seed=seed,
        )
        for method, result in results.items():
            matrices[method].append(result.accuracy)
    labels = {
        "finetune": "fine-tuning",
        "lwf": "LwF.MC" if scenario == "class" else "LwF",
        "icarl": f"iCaRL-style (memory {memory_size}, herding)",
        "joint": "joint (upper bound)",
    }
    named = {labels[m]: v for m, v in matrices.items()}
    names = [t.name for t in tasks]
    text = continual.format_table(named)
    for label, mats in named.items():
        text += (
            f"\n\nAccuracy matrix of {label} (mean of {len(mats)} seeds; row: "
            "after training task, column: task tested):\n\n"
            + continual.format_matrix(np.mean(mats, 0), names)
        )
    path = os.path.join(out, f"{name}_{scenario}.png")
    continual.plot_accuracy_matrices(
        named,
        path,
        task_names=names,
        title=f"Split {DISPLAY[name]}, {scenario}-incremental, mean of seeds {seeds}",
    )
    return text, named


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="continual_benchmark")
    parser.add_argument("--only", default=",".join(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="also write the tables into docs/continual.md's blocks",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = args.only.split(",")
    unknown = sorted(set(only) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    os.makedirs(args.out, exist_ok=True)
    sections, tables = [], {}
    started = time.time()
    if "two-task" in only:
        tables["two-task"] = two_task(args.out, seeds)
        sections.append(
            "## Two tasks of 5 digit classes (task-incremental)\n\n"
            + tables["two-task"]
        )
        print(sections[-1], flush=True)
    digits = kd.data.load_digits(seed=0)
    for scenario in ("class", "task"):
        if f"digits-{scenario}" in only:
            text, _ = sequence(
                "digits",
                digits,
                digits_mlp,
                scenario,
                args.out,
                seeds,
                epochs=20,
                learning_rate=1e-2,
                memory_size=100,
            )
            tables[f"digits-{scenario}"] = text
            sections.append(
                f"## Split digits, 5 tasks of 2 classes, {scenario}-incremental\n\n"
                + text
            )
            print(sections[-1], flush=True)
    if "mnist1d-class" in only:
        text, _ = sequence(
            "mnist1d",
            kd.data.load_mnist1d(seed=0),
            mnist1d_mlp,
            "class",
            args.out,
            seeds,
            epochs=20,
            learning_rate=3e-3,
            memory_size=200,
        )
        tables["mnist1d-class"] = text
        sections.append(
            "## Split MNIST-1D, 5 tasks of 2 classes, class-incremental\n\n" + text
        )
        print(sections[-1], flush=True)
    report = (
        f"# Continual learning benchmark\n\nSeeds {seeds}; cells read mean [min, "
        f"max]. {time.time() - started:.0f} s.\n\n" + "\n\n".join(sections) + "\n"
    )
    with open(os.path.join(args.out, "continual.md"), "w") as f:
        f.write(report)
    print(f"\nwrote {os.path.join(args.out, 'continual.md')} and the heat maps")
    if args.docs:
        page = os.path.join(docblocks.ROOT, "docs", "continual.md")
        for setting, table in tables.items():
            docblocks.rewrite(
                page,
                DOC_BLOCKS[setting],
                f"Seeds {seeds}, {time.strftime('%Y-%m-%d')}:\n\n{table}\n",
            )
        print(f"rewrote the blocks of {sorted(tables)} in {page}")


if __name__ == "__main__":
    main()
