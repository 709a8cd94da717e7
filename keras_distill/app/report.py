"""Run reports: a PNG of the training curves and schedules, and a Markdown table."""

import os

import numpy as np

from keras_distill.version import require

_CURVE_KEYS = ("alpha", "temperature", "curriculum_fraction")


def _zoom(ax, series, floor=0.0, ceiling=1.0):
    """Sets the y range to where the curves are after the first quarter."""
    tails = [np.asarray(v, "float64")[len(v) // 4 :] for v in series if len(v)]
    tails = [t[np.isfinite(t)] for t in tails if np.isfinite(t).any()]
    if not tails:
        return
    low = min(float(t.min()) for t in tails)
    high = max(float(t.max()) for t in tails)
    margin = max(0.005, 0.1 * (high - low))
    ax.set_ylim(max(floor, low - margin), min(ceiling, high + margin))


def plot_run(history, path, teacher_accuracy=None, title="keras_distill run"):
    """Writes a PNG: accuracy, losses and the scheduled values per epoch.

    Four panels: accuracy (zoomed on the range where it moves), the losses
    (log scale: the KD term starts large), `alpha` and the curriculum
    fraction (both in [0, 1]), and the temperature (its own axis).

    Args:
        history: A `History.history` dict of a `Distiller.fit()`.
        path: Where to write the PNG.
        teacher_accuracy: The teacher's validation accuracy, drawn as a
            reference line. Defaults to `None`.
        title: Figure title. Defaults to `"keras_distill run"`.
    """
    matplotlib = require("matplotlib", "Plotting a run")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (ax_acc, ax_loss), (ax_frac, ax_temp) = axes
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    curves = []
    for key, label in (
        ("accuracy", "student (train)"),
        ("val_accuracy", "student (val)"),
    ):
        if key in history:
            ax_acc.plot(epochs, history[key], label=label)
            curves.append(history[key])
    if teacher_accuracy is not None:
        ax_acc.axhline(
            teacher_accuracy, color="black", linestyle="--", label="teacher (val)"
        )
        curves.append([teacher_accuracy])
    _zoom(ax_acc, curves)
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    fixed = ("loss", "student_loss", "distillation_loss", "hint_loss")
    # With several distillation terms, each term's loss (training only).
    term_losses = _term_keys(history, "_loss", exclude=fixed)
    for key in (*fixed, *term_losses):
        for prefix, style in (("", "-"), ("val_", "--")):
            if key in term_losses and prefix:
                continue
            values = np.asarray(history.get(prefix + key, []), "float64")
            if values.size and np.all(values[np.isfinite(values)] > 0):
                ax_loss.plot(epochs, values, style, label=prefix + key)
    ax_loss.set_yscale("log")
    ax_loss.set(title="Losses (log scale)", xlabel="epoch", ylabel="loss")
    weights = [
        ("alpha", "alpha (weight of the labels)"),
        ("curriculum_fraction", "curriculum: fraction of the data"),
        ("hint_weight", "hint_weight"),
    ]
    # The terms' weights and CTKD's reversal strength (`params.FAMILIES`).
    weights += [
        (key, key)
        for suffix in ("_weight", "_reversal")
        for key in _term_keys(history, suffix, exclude=("hint_weight",))
    ]
    highest = 1.0
    for key, label in weights:
        if key in history:
            ax_frac.plot(epochs, history[key], marker="o", markersize=3, label=label)
            highest = max(highest, float(np.nanmax(history[key])))
    ax_frac.set(
        title="Scheduled weights",
        xlabel="epoch",
        ylabel="value",
        ylim=(-0.05, 1.05 * highest),
    )
    # The distiller's temperature, and each CTKD term's learned one.
    for index, key in enumerate(
        ("temperature", *_term_keys(history, "_temperature", exclude=("temperature",)))
    ):
        if key not in history:
            continue
        ax_temp.plot(
            epochs,
            history[key],
            marker="o",
            markersize=3,
            color=f"C{3 + index}",
            label=key if index else "temperature",
        )
    ax_temp.set(title="Temperature", xlabel="epoch", ylabel="T")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _term_keys(history, suffix, exclude=()):
    """The training-log keys ending in `suffix` (e.g. `dkd_weight`), in order."""
    return [
        key
        for key in history
        if key.endswith(suffix)
        and len(key) > len(suffix)
        and not key.startswith("val_")
        and key not in exclude
    ]


def summary_markdown(rows, title="Results"):
    """A Markdown table from a list of dicts with the same keys."""
    if not rows:
        return f"# {title}\n\n(no results)\n"
    keys = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |"]
    lines.append("|" + "|".join("---" for _ in keys) + "|")
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else f"{v}" for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_tuning(trials, path, title="Tuning: validation accuracy"):
    """Writes a PNG of each trial's score over temperature (log axis) and alpha.

    Args:
        trials: `(temperature, alpha, score)` tuples, optionally with a
            fourth item: a dict of the trial's other hyperparameters (e.g.
            the student's width), written beside each point and, for the
            best trial, in the title.
        path: Where to write the PNG.
        title: Figure title. Defaults to `"Tuning: validation accuracy"`.
    """
    matplotlib = require("matplotlib", "Plotting a search")
    require("matplotlib.ticker", "Plotting a search")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [t[3] if len(t) > 3 else {} for t in trials]
    temperature, alpha, score = (
        np.asarray(v, dtype="float64") for v in zip(*(t[:3] for t in trials))
    )
    fig, ax = plt.subplots(figsize=(7.5, 5))
    points = ax.scatter(
        temperature, alpha, c=score, cmap="viridis", s=90, edgecolors="k"
    )
    best = int(np.nanargmax(score))
    ax.scatter(temperature[best], alpha[best], marker="*", s=350, c="red", label="best")

    def describe(extra):
        return ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in extra.items()
        )

    for t, a, s, extra in zip(temperature, alpha, score, others):
        text = f"{s:.3f}" + (f" ({describe(extra)})" if extra else "")
        ax.annotate(text, (t, a), textcoords="offset points", xytext=(6, 6), fontsize=8)
    winner = (
        f"best: {score[best]:.3f} at T={temperature[best]:.3g}, "
        f"alpha={alpha[best]:.3g}"
        + (f", {describe(others[best])}" if others[best] else "")
    )
    ax.set(
        xscale="log",
        xlabel="temperature (log scale)",
        ylabel="alpha (weight of the labels)",
        title=f"{title}\n{winner}",
    )
    fig.colorbar(points, label="validation accuracy")
    plain = matplotlib.ticker.FormatStrFormatter("%g")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def serving_comparison(
    models,
    x_test,
    y_test,
    quantize=None,
    representative=None,
    requests=300,
    throughput_batch=256,
    warmup_requests=4,
):
    """Exports models as SavedModels and measures them side by side.

    Every model is exported with `kd.export_student` (as it would be
    served), reloaded with TensorFlow alone, and measured in one interleaved
    run (`kd.serving.measure_speed`): SavedModel size, latency of
    one-example requests (p50, p99), throughput at batches of
    `throughput_batch`, and test accuracy and loss of the exported model.

    Args:
        models: A dict `{name: (model, base_dir)}`: a `keras.Model` or a
            `Distiller` (its student is exported), and the TF Serving folder
            to export it into (a new version).
        x_test: Test inputs (NumPy); requests are drawn from them.
        y_test: Integer test labels.
        quantize: The name of one model to also quantize to int8 TFLite
            (`kd.serving.quantize_int8`), measured beside the others as
            `"<name> (int8 TFLite)"`. Defaults to `None` (none).
        representative: Calibration inputs for `quantize` (training
            inputs). Defaults to `None`.
        requests: One-example requests timed per model. Defaults to `300`.
        throughput_batch: Defaults to `256`.
        warmup_requests: Passed to `export_student`. Defaults to `4`.

    Returns:
        A dict `{name: row}`, each row a dict with `parameters`,
        `size_bytes`, `latency_p50_ms`, `latency_p99_ms`, `throughput`
        (examples/s), `accuracy`, `loss`, `path` and `runtime`.
    """
    from keras_distill import serving
    from keras_distill.export import _student_of, export_student

    if quantize is not None and quantize not in models:
        raise ValueError(
            f"`quantize` must be one of the models' names {sorted(models)}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize is not None and representative is None:
        raise ValueError("`quantize` needs `representative` (calibration inputs).")
    x_test = np.asarray(x_test)
    rows, predictors = {}, {}
    for name, (model, base_dir) in models.items():
        exported = export_student(
            model,
            base_dir,
            sample_inputs=x_test[:4],
            warmup_requests=warmup_requests,
            verbose=False,
        )
        predictors[name] = serving.saved_model_predictor(exported.path)
        rows[name] = {
            "parameters": int(_student_of(model)[0].count_params()),
            "size_bytes": int(exported.size_bytes),
            "path": exported.path,
            "runtime": "SavedModel (TensorFlow)",
        }
        if name == quantize:
            # Beside the TF Serving folder, not in it.
            base = os.path.abspath(base_dir).rstrip(os.sep)
            quantized = serving.quantize_int8(
                exported.path,
                representative,
                output_path=f"{base}-{exported.version}-int8.tflite",
            )
            int8_name = f"{name}, int8 TFLite"
            predictors[int8_name] = serving.tflite_predictor(quantized.path)
            rows[int8_name] = {
                "parameters": rows[name]["parameters"],
                "size_bytes": int(quantized.size_bytes),
                "path": quantized.path,
                "runtime": "TFLite interpreter (int8)",
            }
    speeds = serving.measure_speed(
        predictors, x_test, requests=requests, throughput_batch=throughput_batch
    )
    for name, row in rows.items():
        accuracy, loss = serving.accuracy_and_loss(predictors[name], x_test, y_test)
        speed = speeds[name]
        row.update(
            latency_p50_ms=speed.latency_p50_ms,
            latency_p99_ms=speed.latency_p99_ms,
            throughput=speed.throughput,
            throughput_batch=speed.throughput_batch,
            requests=speed.requests,
            accuracy=accuracy,
            loss=loss,
        )
    return rows


def serving_markdown(rows, reference=None):
    """The rows of `serving_comparison` as a Markdown table.

    Args:
        rows: `serving_comparison`'s result.
        reference: The name of the row the speed-ups are relative to (the
            teacher). Defaults to `None` (no speed-up column).
    """
    lines = [
        "| model | parameters | size on disk (KiB) | test accuracy "
        "| latency batch 1, p50 / p99 (ms) | throughput batch 256 (examples/s) "
        + ("| speed-up vs " + reference + " (p50 / throughput) " if reference else "")
        + "| runtime |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if reference else "") + "---|",
    ]
    base = rows.get(reference) if reference else None
    for name, r in rows.items():
        cells = [
            name,
            f"{r['parameters']:,}",
            f"{r['size_bytes'] / 1024:,.0f}",
            f"{r['accuracy']:.4f}",
            f"{r['latency_p50_ms']:.3f} / {r['latency_p99_ms']:.3f}",
            f"{r['throughput']:,.0f}",
        ]
        if base is not None:
            cells.append(
                f"{base['latency_p50_ms'] / r['latency_p50_ms']:.1f}x / "
                f"{r['throughput'] / base['throughput']:.1f}x"
            )
        cells.append(r["runtime"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
