"""The numbers continual-learning papers report, and what `learn()` returns.

`accuracy_metrics` (average accuracy, forgetting, backward transfer),
`format_table`, `format_matrix`, `plot_accuracy_matrices` (matplotlib is
imported only there) and `SequenceResult`.
"""

import dataclasses
import os

import numpy as np

# -- Metrics ---------------------------------------------------------------------


def accuracy_metrics(accuracy) -> dict:
    """Average accuracy, forgetting and backward transfer of an accuracy matrix.

    `accuracy[i, j]` is the test accuracy on task `j` after training task
    `i` (NaN for `j > i`). After the last task `T`:

    - average accuracy: `mean_j accuracy[T, j]`;
    - forgetting (Chaudhry et al. 2018): `mean_{j<T} (max_{l<T} accuracy[l, j]
      - accuracy[T, j])`;
    - backward transfer (Lopez-Paz and Ranzato 2017): `mean_{j<T}
      (accuracy[T, j] - accuracy[j, j])` (negative: forgetting).

    Forgetting and backward transfer are NaN for a single task. Also
    returns `"average_accuracy_per_step"`, the average accuracy after each
    task.

    Args:
        accuracy: A square `(T, T)` array.

    Returns:
        A dict of floats (and one list).

    Example:

    ```pycon
    >>> m = np.array([[1.0, np.nan], [0.8, 0.9]])
    >>> metrics = accuracy_metrics(m)
    >>> [round(metrics[k], 2) for k in ("average_accuracy", "forgetting")]
    [0.85, 0.2]

    ```
    """
    a = np.asarray(accuracy, "float64")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not a.size:
        raise ValueError(
            f"`accuracy` must be a square (tasks, tasks) matrix. Received shape "
            f"{a.shape}."
        )
    last = len(a) - 1
    per_step = [float(np.mean(a[i, : i + 1])) for i in range(len(a))]
    if last == 0:
        forgetting = transfer = float("nan")
    else:
        forgetting = float(
            np.mean([np.max(a[j:last, j]) - a[last, j] for j in range(last)])
        )
        transfer = float(np.mean([a[last, j] - a[j, j] for j in range(last)]))
    return {
        "average_accuracy": per_step[-1],
        "forgetting": forgetting,
        "backward_transfer": transfer,
        "average_accuracy_per_step": per_step,
    }


def _spread(values):
    values = np.asarray(values, "float64")
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def format_table(results) -> str:
    """A Markdown table of the metrics of several methods.

    Args:
        results: `{method: matrix or list of matrices}` (one per seed). With
            several seeds, each cell reads `mean [min, max]`.

    Returns:
        The table as a string.
    """
    lines = [
        "| method | average accuracy | forgetting | backward transfer | seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, matrices in results.items():
        if isinstance(matrices, np.ndarray) and matrices.ndim == 2:
            matrices = [matrices]
        metrics = [accuracy_metrics(m) for m in matrices]
        cells = [
            _spread([m[key] for m in metrics])
            for key in ("average_accuracy", "forgetting", "backward_transfer")
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {len(metrics)} |")
    return "\n".join(lines)


def format_matrix(accuracy, task_names=None) -> str:
    """The accuracy matrix as a Markdown table (rows: after task i)."""
    a = np.asarray(accuracy, "float64")
    names = task_names or [str(j + 1) for j in range(len(a))]
    lines = [
        "| after \\ on | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for i, row in enumerate(a):
        cells = ["" if np.isnan(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {names[i]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy_matrices(results, path, task_names=None, title=None):
    """Draws each method's (mean) accuracy matrix as an annotated heat map PNG.

    Args:
        results: `{method: matrix or list of matrices}`; lists are averaged.
        path: Where to write the PNG.
        task_names: Labels of the tasks. Defaults to `1, 2, ...`.
        title: A title over the figure. Defaults to `None`.

    Returns:
        `path`.
    """
    from keras_distill.version import require

    matplotlib = require("matplotlib", "Plotting accuracy matrices")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(results)
    figure, axes = plt.subplots(
        1, count, figsize=(3.4 * count + 0.8, 3.6), squeeze=False
    )
    image = None
    for axis, (method, matrices) in zip(axes[0], results.items()):
        mean = np.mean(
            np.asarray(matrices, "float64").reshape(-1, *np.shape(matrices)[-2:]), 0
        )
        names = task_names or [str(j + 1) for j in range(len(mean))]
        image = axis.imshow(
            np.ma.masked_invalid(mean), vmin=0.0, vmax=1.0, cmap="viridis"
        )
        for i in range(len(mean)):
            for j in range(len(mean)):
                if not np.isnan(mean[i, j]):
                    axis.text(
                        j,
                        i,
                        f"{mean[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if mean[i, j] < 0.6 else "black",
                    )
        average = accuracy_metrics(mean)["average_accuracy"]
        axis.set_title(f"{method}\n(average accuracy {average:.3f})", fontsize=10)
        axis.set_xticks(range(len(mean)), names, fontsize=8)
        axis.set_yticks(range(len(mean)), names, fontsize=8)
        axis.set_xlabel("accuracy on task")
    axes[0][0].set_ylabel("after training task")
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="accuracy")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


@dataclasses.dataclass
class SequenceResult:
    """What `learn()` returns.

    Attributes:
        accuracy: The `(T, T)` accuracy matrix (NaN above the diagonal).
        method: The method.
        scenario: `"task"` or `"class"`.
        task_names: The tasks' names.
        directory: The folder holding each step's model (`task_<i>.keras`).
        trained: The task indices this call trained (empty when everything
            was already done).
        warmup_epochs: Per task, the epochs of the new head's warm-up its
            weights come from (the best epoch with `"auto"`), `None` where
            there was none.
        nme_accuracy: For `"icarl"`, the `(T, T)` accuracy matrix of iCaRL's
            nearest-mean-of-exemplars classifier
            (`ExemplarMemory.nearest_mean_scores`); `None` otherwise.
    """

    accuracy: np.ndarray
    method: str
    scenario: str
    task_names: list
    directory: str
    trained: list
    warmup_epochs: list = dataclasses.field(default_factory=list)
    nme_accuracy: np.ndarray | None = None

    def metrics(self):
        """`accuracy_metrics(self.accuracy)`."""
        return accuracy_metrics(self.accuracy)

    def model_path(self, task):
        """Path of the model saved after task `task` (0-based)."""
        return os.path.join(self.directory, f"task_{task + 1}.keras")
