"""Run reports: a PNG of the training curves and schedules, and a Markdown table."""

import numpy as np

_CURVE_KEYS = ("alpha", "temperature", "curriculum_fraction")


def plot_run(history, path, teacher_accuracy=None, title="keras_distill run"):
    """Writes a PNG: accuracy and losses per epoch, and the scheduled values.

    Args:
        history: A `History.history` dict of a `Distiller.fit()`.
        path: Where to write the PNG.
        teacher_accuracy: The teacher's validation accuracy, drawn as a
            reference line. Defaults to `None`.
        title: Figure title. Defaults to `"keras_distill run"`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheduled = [k for k in _CURVE_KEYS if k in history]
    panels = 2 + (1 if scheduled else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax = axes[0]
    for key, label in (
        ("accuracy", "student (train)"),
        ("val_accuracy", "student (val)"),
    ):
        if key in history:
            ax.plot(epochs, history[key], label=label)
    if teacher_accuracy is not None:
        ax.axhline(
            teacher_accuracy, color="black", linestyle="--", label="teacher (val)"
        )
    ax.set(title="Accuracy", xlabel="epoch")
    ax = axes[1]
    for key in ("loss", "student_loss", "distillation_loss"):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, label=prefix + key)
    ax.set(title="Losses", xlabel="epoch")
    if scheduled:
        ax = axes[2]
        for key in scheduled:
            ax.plot(epochs, history[key], marker="o", markersize=3, label=key)
        ax.set(title="Scheduled values", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
        trials: `(temperature, alpha, score)` tuples.
        path: Where to write the PNG.
        title: Figure title. Defaults to `"Tuning: validation accuracy"`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperature, alpha, score = (np.asarray(v, dtype="float64") for v in zip(*trials))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = ax.scatter(
        temperature, alpha, c=score, cmap="viridis", s=90, edgecolors="k"
    )
    best = int(np.nanargmax(score))
    ax.scatter(temperature[best], alpha[best], marker="*", s=350, c="red", label="best")
    for t, a, s in zip(temperature, alpha, score):
        ax.annotate(
            f"{s:.3f}", (t, a), textcoords="offset points", xytext=(6, 6), fontsize=8
        )
    ax.set(
        xscale="log",
        xlabel="temperature",
        ylabel="alpha (weight of the labels)",
        title=title,
    )
    fig.colorbar(points, label="validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
