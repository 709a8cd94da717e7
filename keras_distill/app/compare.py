"""`keras-distill compare`: does distillation help on *your* data?

Trains the config's student four ways, from the same seeds, for the same
epochs, batch size and optimizer (only the training signal differs), and
reports each against the control that matters: the better of the two
students trained without a teacher (with and without the augmentation):

- `scratch`: the labels alone;
- `scratch_aug`: the labels on augmented batches;
- `kd`: the config's distillation (alpha, temperature, terms and their
  `schedules`) on the data;
- `kd_aug`: the same on the augmented batches, the teacher online on each
  batch ("consistent" teaching, Beyer et al., CVPR 2022).

Each seed pairs the rows (same initial weights and batch order), so the
verdict uses the per-seed differences: their mean and 95% interval
(Student's t), "helps" when the whole interval is above zero. Every finished
`(row, seed)` is appended to `progress.jsonl`, so a killed run resumes.
"""

import json
import os
import time

import keras
import numpy as np

from keras_distill import augment, data, models
from keras_distill.app import config as kd_config
from keras_distill.app import quality, runs
from keras_distill.app.run_folder import (
    RUN_MARKER,
    RemoveIfEmpty,
    finish,
    prepare_output,
)

ROWS = ("scratch", "scratch_aug", "kd", "kd_aug")
# The rows without a teacher; the better one is the control of the others.
CONTROLS = ("scratch", "scratch_aug")
PROGRESS = "progress.jsonl"


def augmentation(shape):
    """Label-preserving augmentation for examples of `shape` (no batch axis).

    Images `(h, w, c)`: shifts of up to 2 pixels (1 below 16 pixels) along
    each axis, zero fill; signals `(steps, channels)`: shifts of up to 1/20 of
    the length. No mirror images: a flipped digit or letter is another class.
    """
    if len(shape) == 3:
        pixels = 1 if min(shape[:2]) < 16 else 2
        return augment.compose(
            augment.shift(pixels, axis=1, mode="zeros"),
            augment.shift(pixels, axis=2, mode="zeros"),
        )
    if len(shape) == 2:
        return augment.shift(max(1, shape[0] // 20), axis=1, mode="zeros")
    raise ValueError(
        "`keras-distill compare` augments images (height, width, channels) or "
        f"signals (steps, channels). Received examples of shape {tuple(shape)}."
    )


def compare(config_path, seeds=3, overwrite=False, verbose=0):
    """Runs the comparison of a config file; returns the result dict.

    Writes `compare.md` (the table) and `run.json` into `<output>_compare`.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ValueError(
            f"`--seeds` must be an integer >= 2 (an interval needs two). "
            f"Received: {seeds!r}"
        )
    cfg = kd_config.load(config_path)
    runs.check_in_memory(cfg, "compare")
    out = cfg["output"].rstrip("/") + "_compare"
    with RemoveIfEmpty(out):
        mode = prepare_output(out, cfg, f"compare --seeds {seeds}", overwrite)
        return _compare(cfg, out, mode, seeds, verbose)


def _read_progress(path):
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill: that run runs again
                done[(record["row"], record["seed"])] = record["accuracy"]
    return done


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _compare(cfg, out, mode, seeds, verbose):
    if mode == "resume":
        print(f"== resuming the comparison in {out}")
    keras.utils.set_random_seed(cfg["seed"])
    arrays = runs.in_memory_arrays(cfg)
    splits = data.Splits(None, None, None, arrays["num_classes"], arrays["shape"], "")
    teacher = runs.in_memory_teacher(cfg, out, mode, arrays, splits, verbose)
    (x, y), evaluation = arrays["train"], arrays["test"] or arrays["val"]
    keep = augmentation(arrays["shape"])
    progress = os.path.join(out, PROGRESS)
    done = _read_progress(progress) if mode == "resume" else {}
    start = time.perf_counter()
    for seed in range(seeds):
        for row in ROWS:
            if (row, seed) in done:
                continue
            print(f"== {row}, seed {seed}")
            accuracy = _train_row(
                row, cfg, teacher, splits, (x, y), evaluation, keep, seed
            )
            done[(row, seed)] = accuracy
            _append(progress, {"row": row, "seed": seed, "accuracy": accuracy})
    result = _summary(done, seeds, evaluation is arrays["test"])
    result["seconds"] = time.perf_counter() - start
    table = format_table(result)
    print(table)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(f"# Does distillation help? ({cfg['data']})\n\n{table}\n")
    with open(os.path.join(out, RUN_MARKER), "w") as f:
        json.dump(result, f, indent=2)
    finish(out)
    return result


def _train_row(row, cfg, teacher, splits, train, evaluation, keep, seed):
    """Trains one student; returns its accuracy on `evaluation`."""
    import tensorflow as tf

    x, y = train
    keras.utils.set_random_seed(cfg["seed"] + 1000 * (seed + 1))
    student, _ = runs.build_model(cfg["student"], "student", splits)
    batch = cfg["batch_size"]
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch)
    )
    if row.endswith("_aug"):
        ds = augment.augment_dataset(ds, keep, seed=seed)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    model, callbacks = student, []
    if row.startswith("kd"):
        model = runs.config_distiller(cfg, student, teacher)
        callbacks = runs.schedule_callbacks(cfg)
    models.compile_classifier(model, cfg["distill"]["learning_rate"])
    model.fit(
        ds,
        epochs=cfg["distill"]["epochs"],
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
    )
    return quality.accuracy(student, *evaluation)


def _summary(done, seeds, on_test):
    """Each row against the better of the two scratch rows (by mean accuracy).

    What a user gets without a teacher is the better of training on the
    labels with or without the augmentation (on small images a shift can
    hurt), so KD must beat that one.
    """
    values = {row: [done[(row, s)] for s in range(seeds)] for row in ROWS}
    control = max(CONTROLS, key=lambda row: np.mean(values[row]))
    rows = {}
    for row in ROWS:
        entry = {"accuracy": quality.summarise(values[row]), "values": values[row]}
        if row != control:
            gain = quality.summarise(np.subtract(values[row], values[control]))
            entry["gain"] = gain
            entry["verdict"] = (
                "helps"
                if gain["low"] > 0
                else "hurts"
                if gain["high"] < 0
                else "no clear difference"
            )
        rows[row] = entry
    return {
        "seeds": seeds,
        "split": "test" if on_test else "val",
        "control": control,
        "rows": rows,
    }


def format_table(result):
    """The markdown table of a comparison's result."""
    lines = [
        f"Accuracy on the {result['split']} split over {result['seeds']} seeds "
        f"(mean, 95% interval); gain: the mean of the per-seed differences from "
        f"`{result['control']}`, the better of the rows without a teacher, and "
        "its 95% interval.",
        "",
        f"| row | accuracy | 95% interval | gain vs {result['control']} | "
        "95% interval | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row, entry in result["rows"].items():
        acc = entry["accuracy"]
        cells = [row, f"{acc['mean']:.4f}", f"{acc['low']:.4f}-{acc['high']:.4f}"]
        if "gain" in entry:
            gain = entry["gain"]
            cells += [
                f"{gain['mean']:+.4f}",
                f"{gain['low']:+.4f} to {gain['high']:+.4f}",
                entry["verdict"],
            ]
        else:
            cells += ["(the control)", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
