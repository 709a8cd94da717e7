"""The main job, run by `make demo`: teacher vs student vs distilled student.

On the bundled scikit-learn digits (fixed train/val/test split) it trains a
teacher CNN once, then, for each of 3 seeds, a student from scratch, the same
student distilled from the teacher, and the same student with the
progressive recipe (distill -> curriculum -> fine-tune). It prints and saves
a table (parameters, test accuracy as mean and range over the seeds, test
loss, training time) and a training-curve PNG.

It then exports the teacher and the (first seed's) distilled student as TF
Serving SavedModels, quantizes the student to int8 TFLite, and measures them
side by side in one interleaved run: size on disk, latency of one-example
requests (p50, p99) and throughput at batch 256, the speed the student buys.
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from keras_distill import data, models
from keras_distill.distiller import Distiller
from keras_distill.version import require


@dataclass
class Row:
    model: str
    parameters: int
    test_accuracy: float  # mean over seeds
    test_loss: float  # mean over seeds
    train_seconds: float  # mean over seeds
    accuracy_min: float = float("nan")
    accuracy_max: float = float("nan")
    seeds: int = 1
    # The exported model, measured in the same run (`report.serving_comparison`).
    size_kib: float = float("nan")
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    throughput: float = float("nan")  # examples per second at batch 256


@dataclass
class Settings:
    teacher_epochs: int = 40
    student_epochs: int = 45
    student_hidden: int = 8
    batch_size: int = 32
    alpha: float = 0.1
    temperature: float = 4.0
    seed: int = 0
    seeds: int = 3
    int8: bool = True  # also quantize the student to int8 TFLite
    serving_requests: int = 300  # one-example requests timed per model
    # MNIST-1D with 10% labels: where KD visibly helps (0 epochs: no such rows).
    mnist1d_epochs: int = 30
    quick_mnist1d: bool = False

    @classmethod
    def quick(cls):
        return cls(
            teacher_epochs=3,
            student_epochs=6,
            seeds=2,
            mnist1d_epochs=2,
            quick_mnist1d=True,
        )


def _test_metrics(model, x, y):
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(np.mean(np.argmax(logits, axis=-1) == y)), float(loss)


_compile = models.compile_classifier


def run(settings=None, verbose=2):
    """Trains the teacher once and each student per seed.

    Returns:
        `(rows, histories, distiller)`: one `Row` per model (accuracy as mean
        and range over `settings.seeds` seeds), the first seed's histories,
        and the first seed's distiller.
    """
    from keras_distill.recipes import fit_progressive

    settings = settings or Settings()
    splits = data.load_digits(seed=settings.seed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    results, histories = {}, {}
    fit_args = dict(
        validation_data=val, batch_size=settings.batch_size, verbose=verbose
    )

    def train_row(name, title, seed, build, fit, evaluated=None):
        """Builds a model with `seed`, fits it, and records its test metrics."""
        print(f"== {title} (seed {seed})")
        keras.utils.set_random_seed(seed)
        model = build()
        start = time.perf_counter()
        history = fit(model)
        seconds = time.perf_counter() - start
        evaluated = evaluated(model) if evaluated else model
        accuracy, loss = _test_metrics(evaluated, *test)
        results.setdefault(name, []).append(
            (evaluated.count_params(), accuracy, loss, seconds)
        )
        histories.setdefault(name, history.history)
        return model

    def student():
        return models.student_mlp(hidden=settings.student_hidden)

    def distiller():
        model = Distiller(
            student=student(),
            teacher=teacher,
            alpha=settings.alpha,
            temperature=settings.temperature,
        )
        return _compile(model)

    def fit_student(model):
        return model.fit(*train, epochs=settings.student_epochs, **fit_args)

    teacher = train_row(
        "teacher",
        f"teacher ({settings.teacher_epochs} epochs)",
        settings.seed,
        lambda: _compile(models.teacher_cnn(), learning_rate=3e-3),
        lambda model: model.fit(*train, epochs=settings.teacher_epochs, **fit_args),
    )
    first = None
    for offset in range(settings.seeds):
        seed = settings.seed + 1 + offset
        train_row(
            "student (scratch)",
            f"student from scratch ({settings.student_epochs} epochs)",
            seed,
            lambda: _compile(student()),
            fit_student,
        )
        distilled = train_row(
            "student (distilled)",
            f"student distilled (alpha={settings.alpha}, T={settings.temperature}, "
            f"{settings.student_epochs} epochs)",
            seed,
            distiller,
            fit_student,
            evaluated=lambda model: model.student,
        )
        first = first or distilled
        train_row(
            "student (progressive)",
            "student, progressive recipe: distill -> curriculum -> fine-tune "
            f"({settings.student_epochs} epochs)",
            seed,
            distiller,
            lambda model: fit_progressive(
                model, *train, epochs=settings.student_epochs, **fit_args
            ),
            evaluated=lambda model: model.student,
        )
    rows = []
    for name, runs in results.items():
        params, accuracy, loss, seconds = (np.array(v) for v in zip(*runs))
        rows.append(
            Row(
                name,
                int(params[0]),
                float(accuracy.mean()),
                float(loss.mean()),
                float(seconds.mean()),
                float(accuracy.min()),
                float(accuracy.max()),
                len(runs),
            )
        )
    return rows, histories, first


def _cell(value, spec):
    return "-" if not np.isfinite(value) else format(value, spec)


def format_table(rows):
    """The result rows as a Markdown table (mean and range over seeds).

    The serving columns (size on disk, latency at batch 1, throughput at
    batch 256) are filled for the models that were exported and measured.
    """
    lines = [
        "| model | parameters | seeds | test accuracy (mean) | range (min-max) "
        "| test loss (mean) | training time (s) | size on disk (KiB) "
        "| latency batch 1, p50 / p99 (ms) | throughput batch 256 (examples/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        spread = (
            f"{r.accuracy_min:.4f}-{r.accuracy_max:.4f}" if r.seeds > 1 else "(1 run)"
        )
        latency = (
            f"{r.latency_p50_ms:.3f} / {r.latency_p99_ms:.3f}"
            if np.isfinite(r.latency_p50_ms)
            else "-"
        )
        lines.append(
            f"| {r.model} | {r.parameters:,} | {r.seeds} | {r.test_accuracy:.4f} | "
            f"{spread} | {_cell(r.test_loss, '.4f')} | "
            f"{_training_cell(r.train_seconds)} | "
            f"{_cell(r.size_kib, ',.0f')} | {latency} | {_cell(r.throughput, ',.0f')} |"
        )
    return "\n".join(lines)


def _training_cell(seconds):
    # 0 s: a model loaded from an earlier run (the MNIST-1D teacher), not trained.
    return "0 (reused)" if seconds == 0.0 else _cell(seconds, ".1f")


STUDENT = "student (distilled)"
INT8 = "student (distilled), int8 TFLite"


def measure_serving(distiller, settings, output_dir):
    """Exports the teacher and the student, measures them side by side.

    Returns:
        `report.serving_comparison`'s rows: `"teacher"`,
        `"student (distilled)"` and, with `settings.int8`, the int8 student.
    """
    from keras_distill.app import report

    splits = data.load_digits(seed=settings.seed)
    serving_dir = os.path.join(output_dir, "serving")
    print("== serving: exporting the teacher and the student, measuring both")
    return report.serving_comparison(
        {
            "teacher": (distiller.teacher, os.path.join(serving_dir, "digits_teacher")),
            STUDENT: (distiller, os.path.join(serving_dir, "digits")),
        },
        *splits["test"],
        quantize=STUDENT if settings.int8 else None,
        representative=splits["train"][0],
        requests=settings.serving_requests,
    )


def merge_serving(rows, serving):
    """Rows with the serving columns filled in, and the int8 row appended."""
    rows = list(rows)
    for row in rows:
        measured = serving.get(row.model)
        if measured is not None:
            row.size_kib = measured["size_bytes"] / 1024
            row.latency_p50_ms = measured["latency_p50_ms"]
            row.latency_p99_ms = measured["latency_p99_ms"]
            row.throughput = measured["throughput"]
    if INT8 in serving:
        measured = serving[INT8]
        rows.append(
            Row(
                "student (distilled), int8 TFLite (first seed)",
                measured["parameters"],
                measured["accuracy"],
                measured["loss"],
                float("nan"),
                seeds=1,
                size_kib=measured["size_bytes"] / 1024,
                latency_p50_ms=measured["latency_p50_ms"],
                latency_p99_ms=measured["latency_p99_ms"],
                throughput=measured["throughput"],
            )
        )
    return rows


def plot_curves(histories, path):
    """Writes validation accuracy and loss per epoch for every model to `path`."""
    matplotlib = require("matplotlib", "Plotting the demo's curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = np.arange(1, len(history["val_accuracy"]) + 1)
        ax_acc.plot(epochs, history["val_accuracy"], label=name)
        # For the distiller, `val_student_loss` is the student's own CE.
        loss = history.get("val_student_loss", history["val_loss"])
        ax_loss.plot(epochs, loss, label=name)
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    # Zoom on the range where the models differ: the last 3/4 of training.
    tails = [
        np.asarray(h["val_accuracy"])[len(h["val_accuracy"]) // 4 :]
        for h in histories.values()
    ]
    low = min(float(t.min()) for t in tails)
    high = max(float(t.max()) for t in tails)
    margin = max(0.005, 0.1 * (high - low))
    ax_acc.set_ylim(max(0.0, low - margin), min(1.0, high + margin))
    ax_loss.set(
        title="Validation cross-entropy (hard labels)", xlabel="epoch", ylabel="loss"
    )
    ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        "keras_distill demo: digits, teacher vs student vs distilled student "
        "(first seed; the table has all seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _OneTracePerModel(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning.

    TensorFlow counts traces per Python function code, so the train, test and
    predict functions of the demo's many models (teacher, students of three
    seeds, the progressive stages, the MNIST-1D rows) add up: each model is
    traced once, which the warning takes for retracing in a loop.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def main(output_dir="distill_runs/demo", quick=False, verbose=2):
    """Runs the demo and writes `results.md`, `results.json`, `curves.png`.

    The distilled student is exported for TF Serving to
    `output_dir/serving/digits/<version>/` (a new version every run).

    Args:
        output_dir: Folder for the outputs. Defaults to `"distill_runs/demo"`.
        quick: Few epochs (a smoke run). Defaults to `False`.
        verbose: Keras `fit` verbosity. Defaults to `2` (one line per epoch).

    Returns:
        The list of result rows.
    """
    settings = Settings.quick() if quick else Settings()
    os.makedirs(output_dir, exist_ok=True)
    logging.getLogger("tensorflow").addFilter(_OneTracePerModel())
    start = time.perf_counter()
    rows, histories, distiller = run(settings, verbose=verbose)
    from keras_distill.app import report

    mnist1d_rows = []
    if settings.mnist1d_epochs:
        from keras_distill.app import quality

        mnist1d_rows = [
            Row(**row)
            for row in quality.mnist1d_demo_rows(
                seeds=tuple(settings.seed + i for i in range(settings.seeds)),
                epochs=settings.mnist1d_epochs,
                quick=settings.quick_mnist1d,
                teacher_dir=os.path.join(output_dir, "mnist1d_teacher"),
            )
        ]
    serving_start = time.perf_counter()
    serving = measure_serving(distiller, settings, output_dir)
    serving_seconds = time.perf_counter() - serving_start
    rows = merge_serving(rows, serving)
    table = format_table(rows)
    if mnist1d_rows:
        table += (
            "\n\nMNIST-1D (harder, generated from code), 10% of the labels, the "
            "other 90% of the training signals as unlabeled x-only batches for "
            f"the distilled student; a 256-unit MLP, {settings.mnist1d_epochs} "
            "epochs, the same seeds:\n\n" + format_table(mnist1d_rows)
        )
    serving_table = report.serving_markdown(serving, reference="teacher")
    chance = 1.0 / data.NUM_DIGIT_CLASSES
    seconds = time.perf_counter() - start
    notes = (
        f"Test accuracy over {settings.seeds} student seeds, the teacher trained "
        f"once; chance accuracy: {chance:.2f}. Serving: the exported SavedModels "
        "(the first seed's student), reloaded with TensorFlow alone and measured "
        f"interleaved in this run ({settings.serving_requests} one-example "
        "requests each, in-process calls of the signature; exporting, "
        f"quantizing and measuring took {serving_seconds:.0f} s)."
    )
    if INT8 in serving:
        notes += (
            f" int8 TFLite: test accuracy {serving[INT8]['accuracy']:.4f} vs "
            f"{serving[STUDENT]['accuracy']:.4f} for the same student in float32, "
            f"{serving[INT8]['size_bytes'] / 1024:.1f} KiB vs "
            f"{serving[STUDENT]['size_bytes'] / 1024:.1f} KiB."
        )
    print(
        f"\n{table}\n\n{notes}\n\nWhat the student buys (the exported models, "
        f"measured side by side):\n\n{serving_table}\n\n(total {seconds:.0f} s)"
    )
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"{table}\n\n{notes}\n\n{serving_table}\n")
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(
            {
                "settings": asdict(settings),
                "rows": [asdict(r) for r in rows],
                "mnist1d_rows": [asdict(r) for r in mnist1d_rows],
                "serving": serving,
                "seconds": seconds,
            },
            f,
            indent=2,
        )
    plot_curves(histories, os.path.join(output_dir, "curves.png"))
    print(f"Wrote {output_dir}/results.md, results.json and curves.png")
    print(
        f"Exported the student to {serving[STUDENT]['path']} and the teacher to "
        f"{serving['teacher']['path']}"
        + (f"; int8 TFLite: {serving[INT8]['path']}" if INT8 in serving else "")
    )
    return rows + mnist1d_rows
