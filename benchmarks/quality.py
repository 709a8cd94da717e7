"""Does the student get better? One table of distillation methods, on two data sets.

On the bundled digits and on MNIST-1D (generated from code), trains the same
student per data set with every method in `keras_distill.app.quality.METHODS`
(scratch, KD, schedules, curriculum, progressive, DKD, multi-teacher, hints,
function matching, keras.distillation's Distiller, and the few-labels
regime), for several seeds, with the same epochs, batch size, optimizer and
learning rate (Adam, cosine decay) in every row. Writes, into `--output`:

- `quality.md`: the table (mean, standard deviation, 95% interval of the
  mean, difference from scratch, wall time per seed) and a verdict per row;
- `quality.png`: every seed's accuracy per row, with the mean and interval;
- `quality.json`: all per-seed numbers.

With `--readme README.md` it rewrites the block between
`<!-- quality:begin -->` and `<!-- quality:end -->` (`quality-patient`,
`quality-progressive` for the other experiments) from the same output, so
the README's numbers are never typed by hand.

`--experiment patient` runs the long-schedule comparison instead
("patient" function matching, Beyer et al. 2022): scratch, scratch with the
augmentations, KD on the augmentations and function matching on MNIST-1D at `--epochs`
(default 300) for `--seeds` (default 8) seeds.

Run (from the repository root):

    .venv/bin/python benchmarks/quality.py --workers 2 --readme README.md
    .venv/bin/python benchmarks/quality.py --quick          # seconds, a smoke test
    .venv/bin/python benchmarks/quality.py --experiment patient --workers 2
    .venv/bin/python benchmarks/quality.py --experiment progressive --workers 2
    .venv/bin/python benchmarks/quality.py --methods scratch terms  # every term

`--methods term:<name>` runs any registered logit term (`keras_distill.terms`)
as KD's soft loss (alpha 0.1, T 4); `terms` expands to all of them, so a new
method's module has its row here without an edit.

`--experiment progressive` compares plain KD with variants of the progressive
recipe (`keras_distill.app.quality.PROGRESSIVE_VARIANTS`) at equal epochs.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
# The README block each experiment rewrites.
MARKERS = {
    "table": (BEGIN, END),
    "patient": ("<!-- quality-patient:begin -->", "<!-- quality-patient:end -->"),
    "progressive": (
        "<!-- quality-progressive:begin -->",
        "<!-- quality-progressive:end -->",
    ),
}
PATIENT_METHODS = ("scratch", "scratch_aug", "kd_aug", "function_matching")
TITLES = {"digits": "digits (8x8)", "mnist1d": "MNIST-1D"}


def _task(args):
    """One (data set, method, seed) run in a worker process."""
    name, setup_fields, method, seed = args
    from keras_distill.app import quality

    setup = quality.Setup(**setup_fields)
    accuracy, seconds = quality.train(method, setup, seed)
    return name, method, seed, accuracy, seconds


def run(
    data_sets,
    methods,
    seeds,
    workers=0,
    quick=False,
    epochs=None,
    log=print,
    teacher_dir=None,
):
    """Trains every (data set, method, seed); returns the results dict.

    `epochs` is an optional `{data set: epochs}`; `teacher_dir` where the
    teachers are cached (default: `distill_runs/quality/teachers*`).
    """
    import dataclasses

    from keras_distill.app import quality

    results = {"seeds": list(seeds), "data": {}}
    tasks = []
    for name in data_sets:
        setup = quality.default_setup(
            name, epochs=(epochs or {}).get(name), quick=quick
        )
        if teacher_dir:
            setup = dataclasses.replace(setup, teacher_dir=teacher_dir)
        model, teacher_accuracy, teacher_seconds = quality.teacher(setup, 0)
        if "multi_teacher" in methods:
            quality.teacher(setup, 1)
        (x, _), (x_test, _) = quality.arrays(setup)
        results["data"][name] = {
            "setup": dataclasses.asdict(setup),
            "train_examples": int(len(x)),
            "test_examples": int(len(x_test)),
            "teacher": {
                "accuracy": teacher_accuracy,
                "parameters": int(model.count_params()),
                "seconds": teacher_seconds,
            },
            "rows": {m: {"accuracy": [], "seconds": []} for m in methods},
        }
        log(
            f"{name}: teacher {teacher_accuracy:.4f}; {len(methods)} methods x "
            f"{len(seeds)} seeds, {setup.epochs} epochs"
        )
        tasks += [
            (name, dataclasses.asdict(setup), m, s) for m in methods for s in seeds
        ]

    def record(outcome):
        name, method, seed, accuracy, seconds = outcome
        row = results["data"][name]["rows"][method]
        row.setdefault("seed", []).append(seed)
        row["accuracy"].append(accuracy)
        row["seconds"].append(seconds)
        log(f"  {name} {method} seed {seed}: {accuracy:.4f} ({seconds:.1f} s)")

    start = time.perf_counter()
    if workers and workers > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context
        ) as pool:
            for outcome in pool.map(_task, tasks):
                record(outcome)
    else:
        for task in tasks:
            record(_task(task))
    results["wall_seconds"] = time.perf_counter() - start
    results["workers"] = max(1, workers or 1)
    for data in results["data"].values():
        for row in data["rows"].values():
            order = sorted(range(len(row["seed"])), key=row["seed"].__getitem__)
            for key in ("seed", "accuracy", "seconds"):
                row[key] = [row[key][i] for i in order]
    return results


def expand_methods(methods, parser):
    """`terms` -> every `term:<name>`; an unknown method is a usage error."""
    from keras_distill.app import quality

    expanded = []
    for method in methods:
        expanded += quality.term_methods() if method == "terms" else [method]
    for method in expanded:
        try:
            quality.check_method(method)
        except ValueError as error:
            parser.error(str(error))
    return list(dict.fromkeys(expanded))


def describe(method):
    from keras_distill.app import quality

    return quality.describe(method)


def _fmt(value, digits=4):
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN -> n/a


def verdict(row_stats, scratch_stats):
    """`helps`, `hurts` or `no clear difference` against scratch.

    A row helps (hurts) when its mean is above (below) scratch's by more than
    the larger of the two standard deviations over seeds.
    """
    spread = max(row_stats["std"], scratch_stats["std"])
    delta = row_stats["mean"] - scratch_stats["mean"]
    if spread != spread:
        return "n/a (one seed)"
    if delta > spread:
        return "helps"
    if delta < -spread:
        return "hurts"
    return "no clear difference"


def tables(results):
    """The Markdown table and the plain-language summary of `results`."""
    from keras_distill.app import quality

    lines = []
    for name, data in results["data"].items():
        setup = data["setup"]
        teacher = data["teacher"]
        rows = data["rows"]
        stats = {m: quality.summarise(r["accuracy"]) for m, r in rows.items()}
        lines.append(
            f"**{TITLES.get(name, name)}**: {data['train_examples']} training and "
            f"{data['test_examples']} test examples; student: MLP with "
            f"{setup['hidden']} hidden units; every row {setup['epochs']} epochs, "
            f"batch {setup['batch_size']}, Adam with a cosine-decayed learning rate "
            f"from {setup['learning_rate']:g}; {len(results['seeds'])} seeds. Teacher "
            f"({teacher['parameters']:,} parameters, trained once): test accuracy "
            f"{teacher['accuracy']:.4f}."
        )
        lines.append("")
        baseline = "scratch" if "scratch" in rows else next(iter(rows))
        lines.append(
            "| method | test accuracy (mean) | std | 95% interval | min-max | "
            f"vs {baseline} | verdict | time per seed (s) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---|---:|")
        scratch = stats[baseline]
        scratch_few = stats.get("scratch_few")
        for method, row in rows.items():
            s = stats[method]
            few = method.endswith("_few") and scratch_few is not None
            base = scratch_few if few else scratch
            base_name = "scratch_few" if few else baseline
            if method == base_name:
                delta, judged = "", ""
            else:
                delta = f"{s['mean'] - base['mean']:+.4f}"
                judged = verdict(s, base)
            seconds = sum(row["seconds"]) / max(len(row["seconds"]), 1)
            lines.append(
                f"| `{method}`: {describe(method)} | {_fmt(s['mean'])} | "
                f"{_fmt(s['std'])} | {_fmt(s['low'])}-{_fmt(s['high'])} | "
                f"{_fmt(s['min'])}-{_fmt(s['max'])} | {delta} | {judged} | "
                f"{seconds:.1f} |"
            )
        lines.append("")
        full = [m for m in rows if not m.endswith("_few") and m != baseline]
        helps = [m for m in full if verdict(stats[m], scratch) == "helps"]
        hurts = [m for m in full if verdict(stats[m], scratch) == "hurts"]
        level = [m for m in full if m not in helps and m not in hurts]

        def names(ms):
            return ", ".join(f"`{m}`" for m in ms)

        text = f"On {TITLES.get(name, name)}"
        text += " with all labels" if "scratch_few" in rows else ""
        text += (
            f", beat `{baseline}` by more than the seeds' spread: {names(helps)}."
            if helps
            else f", no method beats `{baseline}` by more than the seeds' spread."
        )
        if level:
            text += f" No clear difference from `{baseline}`: {names(level)}."
        if hurts:
            text += f" Worse than `{baseline}` by more than the spread: {names(hurts)}."
        lines.append(text)
        if "scratch_aug" in rows:
            for method in ("kd_aug", "function_matching"):
                if method in rows:
                    lines.append(
                        f"Against the same augmentations without a teacher "
                        f"(`scratch_aug`, {_fmt(stats['scratch_aug']['mean'])}): "
                        f"`{method}` {_fmt(stats[method]['mean'])}, "
                        f"{stats[method]['mean'] - stats['scratch_aug']['mean']:+.4f} "
                        f"({verdict(stats[method], stats['scratch_aug'])})."
                    )
        if "kd_few" in rows and scratch_few is not None:
            lines.append(
                f"With {round(100 * setup['label_fraction'])}% of the labels, KD with "
                f"the rest as a transfer set: {_fmt(stats['kd_few']['mean'])} vs "
                f"{_fmt(scratch_few['mean'])} from scratch "
                f"({verdict(stats['kd_few'], scratch_few)})."
            )
        lines.append("")
    lines.append(
        f"Wall time of the whole run: {results['wall_seconds'] / 60:.1f} min with "
        f'{results["workers"]} worker process(es). "helps"/"hurts": the mean '
        "differs from the baseline's by more than the larger of the two standard "
        "deviations over seeds; the few-label rows are compared with `scratch_few`."
    )
    return "\n".join(lines)


def plot(results, path):
    """Per-seed accuracies per row (dots), mean and 95% interval (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_distill.app import quality

    names = list(results["data"])
    fig, axes = plt.subplots(
        1,
        len(names),
        figsize=(
            6.5 * len(names),
            0.42 * max(len(d["rows"]) for d in results["data"].values()) + 1.8,
        ),
        squeeze=False,
    )
    for ax, name in zip(axes[0], names):
        data = results["data"][name]
        methods = list(data["rows"])
        for i, method in enumerate(methods):
            values = data["rows"][method]["accuracy"]
            s = quality.summarise(values)
            y = len(methods) - 1 - i
            ax.scatter(values, [y] * len(values), s=12, color="tab:blue", alpha=0.6)
            if s["n"] > 1:
                ax.errorbar(
                    s["mean"],
                    y,
                    xerr=[[s["mean"] - s["low"]], [s["high"] - s["mean"]]],
                    fmt="o",
                    color="black",
                    capsize=3,
                    markersize=4,
                )
        if "scratch" in data["rows"]:
            ax.axvline(
                quality.summarise(data["rows"]["scratch"]["accuracy"])["mean"],
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label="scratch (mean)",
            )
        ax.axvline(
            data["teacher"]["accuracy"],
            color="tab:green",
            linestyle=":",
            linewidth=1,
            label="teacher",
        )
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(list(reversed(methods)))
        ax.set_xlabel("test accuracy")
        ax.set_title(
            f"{TITLES.get(name, name)}: {data['setup']['epochs']} epochs, "
            f"{len(results['seeds'])} seeds"
        )
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rewrite_readme(path, block, begin=BEGIN, end=END):
    """Replaces the text between the `begin` and `end` markers with `block`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if begin not in text or end not in text:
        raise ValueError(f"{path} has no {begin} ... {end} block to rewrite.")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n{block}\n{end}{tail}")


def main(argv=None):
    from keras_distill.app import quality

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--data", nargs="+", default=list(quality.DATA_SETS))
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="for every data set")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--experiment", choices=("table", "patient", "progressive"), default="table"
    )
    parser.add_argument("--output", default=None)
    parser.add_argument("--readme", default=None, help="README to rewrite the block of")
    parser.add_argument(
        "--from-json",
        default=None,
        help="rewrite table, PNG (and README block) from a quality.json; no training",
    )
    args = parser.parse_args(argv)
    if args.methods:
        args.methods = expand_methods(args.methods, parser)
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
        output = args.output or os.path.dirname(os.path.abspath(args.from_json))
        return write(results, output, args.readme, results.get("experiment", "table"))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    if args.experiment == "patient":
        methods = args.methods or list(PATIENT_METHODS)
        data_sets = ["mnist1d"] if args.data == list(quality.DATA_SETS) else args.data
        epochs = {name: args.epochs or (2 if args.quick else 300) for name in data_sets}
        seeds = range(args.seeds or (2 if args.quick else 8))
        output = args.output or os.path.join("distill_runs", "quality", "patient")
    elif args.experiment == "progressive":
        methods = args.methods or ["kd"] + [
            f"progressive:{v}" for v in quality.PROGRESSIVE_VARIANTS
        ]
        data_sets = args.data
        epochs = {name: args.epochs for name in data_sets} if args.epochs else None
        seeds = range(args.seeds or (2 if args.quick else 5))
        output = args.output or os.path.join("distill_runs", "quality", "progressive")
    else:
        methods = args.methods or list(quality.METHODS)
        data_sets = args.data
        epochs = {name: args.epochs for name in data_sets} if args.epochs else None
        seeds = range(args.seeds or (2 if args.quick else 5))
        output = args.output or os.path.join("distill_runs", "quality", "table")
    if args.quick and epochs is None:
        epochs = {name: 3 for name in data_sets}  # the progressive row needs 3
    results = run(data_sets, methods, list(seeds), args.workers, args.quick, epochs)
    results["experiment"] = args.experiment
    return write(results, output, args.readme, args.experiment)


def write(results, output, readme=None, experiment="table"):
    """Writes quality.md/.json/.png into `output` (and the README block)."""
    os.makedirs(output, exist_ok=True)
    text = tables(results)
    with open(os.path.join(output, "quality.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(output, "quality.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(output, "quality.png"))
    print(text)
    print(f"wrote {output}/quality.md, quality.png, quality.json")
    if readme:
        # The figure goes next to the README (docs/), linked from its block.
        import shutil

        image = os.path.join("docs", f"quality_{experiment}.png")
        folder = os.path.dirname(os.path.abspath(readme))
        os.makedirs(os.path.join(folder, "docs"), exist_ok=True)
        shutil.copyfile(
            os.path.join(output, "quality.png"), os.path.join(folder, image)
        )
        text += f"\n\n![every seed's test accuracy per row]({image})"
        rewrite_readme(readme, text, *MARKERS[experiment])
        print(f"rewrote the results block of {readme}")
    return results


if __name__ == "__main__":
    main()
