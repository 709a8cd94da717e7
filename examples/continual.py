"""Class-incremental learning on split digits: 5 tasks of 2 classes, one growing head.

Each task's model teaches the next (`kd.continual.learn`): fine-tuning
(lower bound), LwF.MC (KD on the old classes' logits), iCaRL-style
distillation with a 100-example memory chosen by herding, and joint training
on every task so far (upper bound). Prints the metrics table and the LwF.MC
accuracy matrix, and writes `continual_runs/accuracy.png` (a heat map per
method). Rerun after an interruption: finished tasks are loaded, not
retrained. `benchmarks/continual.py` runs this over 3 seeds and more
settings.

Set KERAS_DISTILL_QUICK=1 for a smoke run (2 tasks, 2 epochs).
"""

import os

import keras

import keras_distill as kd

QUICK = os.environ.get("KERAS_DISTILL_QUICK") == "1"


def build_model(num_classes):
    """The trunk and a first head; `learn()` grows the head task by task."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


def main():
    groups = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    tasks = kd.continual.split_classes(
        kd.data.load_digits(seed=0), groups[:2] if QUICK else groups
    )
    results = kd.continual.compare(
        tasks,
        build_model,
        "continual_runs",
        scenario="class",
        epochs=2 if QUICK else 20,
        memory_size=100,
        seed=0,
    )
    matrices = {method: result.accuracy for method, result in results.items()}
    print(kd.continual.format_table(matrices))
    print("\nLwF.MC, accuracy on each task (columns) after each task (rows):")
    print(kd.continual.format_matrix(results["lwf"].accuracy, [t.name for t in tasks]))
    path = kd.continual.plot_accuracy_matrices(
        matrices,
        os.path.join("continual_runs", "accuracy.png"),
        task_names=[t.name for t in tasks],
    )
    print(f"\nheat map: {path}")


if __name__ == "__main__":
    main()
