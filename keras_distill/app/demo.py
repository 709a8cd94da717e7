"""The main job, run by `make demo`: teacher vs student vs distilled student.

On the bundled scikit-learn digits (fixed train/val/test split) it trains a
teacher CNN once, then, for each of 3 seeds, a student from scratch, the same
student distilled from the teacher, and the same student with the
progressive recipe (distill -> curriculum -> fine-tune). It prints and saves
a table (parameters, test accuracy as mean and range over the seeds, test
loss, training time) and a training-curve PNG.
"""

import json
import os
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from keras_distill import data, models
from keras_distill.distiller import Distiller


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

    @classmethod
    def quick(cls):
        return cls(teacher_epochs=3, student_epochs=6, seeds=2)


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


def format_table(rows):
    """The result rows as a Markdown table (mean and range over seeds)."""
    lines = [
        "| model | parameters | seeds | test accuracy (mean) | range (min-max) "
        "| test loss (mean) | training time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        spread = (
            f"{r.accuracy_min:.4f}-{r.accuracy_max:.4f}" if r.seeds > 1 else "(1 run)"
        )
        lines.append(
            f"| {r.model} | {r.parameters:,} | {r.seeds} | {r.test_accuracy:.4f} | "
            f"{spread} | {r.test_loss:.4f} | {r.train_seconds:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(histories, path):
    """Writes validation accuracy and loss per epoch for every model to `path`."""
    import matplotlib

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
    start = time.perf_counter()
    rows, histories, distiller = run(settings, verbose=verbose)
    table = format_table(rows)
    chance = 1.0 / data.NUM_DIGIT_CLASSES
    seconds = time.perf_counter() - start
    print(
        f"\n{table}\n\n(test accuracy over {settings.seeds} student seeds, the "
        f"teacher trained once; chance accuracy: {chance:.2f}; total {seconds:.0f} s)"
    )
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(
            {"settings": asdict(settings), "rows": [asdict(r) for r in rows]},
            f,
            indent=2,
        )
    plot_curves(histories, os.path.join(output_dir, "curves.png"))
    print(f"Wrote {output_dir}/results.md, results.json and curves.png")
    from keras_distill.export import export_student

    export_student(distiller, os.path.join(output_dir, "serving", "digits"))
    return rows
