"""What token-level distillation costs: peak memory and step time of one KD step.

Goal (the language-model issue): as the sequence and the vocabulary grow, the
peak memory of one token-level KD step stays within 1.3x of the floor, the
student's own train step plus the teacher's forward pass, and the KD step
takes at most 1.10x the floor's time.

The models are language-model heads at their simplest, so the logits
dominate: token embedding (width 64) -> Dense(64, tanh) -> Dense(vocab), the
teacher twice as wide. Per setting `(batch, seq, vocab)`:

- **floor**: one compiled function running the teacher forward and the
  student's train step (sparse cross-entropy, Adam), both logits alive;
- **KD**: `Distiller(student, teacher, alpha=0.5)` trained by
  `train_on_batch()` (the KD term per token and the hard-label
  cross-entropy, masked, chunked over tokens from a vocabulary of 4096: the
  closed-form pass, `distiller/chunked.closed_form_values`);
- **reverse KL**: the same with `distillation_loss="reverse_kl"`, a term
  without a closed form (the general chunked pass, `chunked_values`: the
  backward pass recomputes each chunk under a tape; JSD, skew KL, TVD, ...
  take the same path);
- **KD, unchunked**: KD with chunking off (for comparison; memory only).

Memory: each run in a fresh process (`ru_maxrss`, minus the process's peak
before the first step), 3 steps. Time: floor, KD and reverse KL alternate
in one process, `STEPS` (20) steps each after warm-up, median per step.
The machine may be shared: memory ratios are robust, time ratios less so.

Run: `.venv/bin/python benchmarks/lm_cost.py` (about 6 minutes on 2 cores);
with `--docs`, it also writes its table into docs/performance.md.
"""

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = [(4, 128, 8192), (4, 512, 32000)]
if os.environ.get("QUICK"):
    SETTINGS = [(2, 64, 8192)]
STEPS = int(os.environ.get("STEPS", 20))


def models(seq, vocab):
    import keras

    def head(width, name, seed):
        keras.utils.set_random_seed(seed)
        ids = keras.Input((seq,), dtype="int32")
        h = keras.layers.Embedding(vocab, 64)(ids)
        h = keras.layers.Dense(width, activation="tanh")(h)
        return keras.Model(ids, keras.layers.Dense(vocab)(h), name=name)

    return head(64, "student", 0), head(128, "teacher", 1)


def batch(b, seq, vocab):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (b, seq)).astype("int32")
    labels = rng.integers(0, vocab, (b, seq)).astype("int32")
    mask = (np.arange(seq)[None] < rng.integers(seq // 2, seq + 1, (b, 1))).astype(
        "float32"
    )
    return ids, labels, mask


def floor_step(student, teacher):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(student.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(ids, labels, mask):
        teacher_logits = teacher(ids, training=False)
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, student(ids, training=True), mask)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss, tf.reduce_sum(teacher_logits[:, :1, :1])

    return step


def distiller_step(student, teacher, chunked=True, term="kd"):
    import keras

    import keras_distill as kd
    from keras_distill.distiller import tokens

    if not chunked:
        tokens.CHUNK_VOCAB = 10**9
    distiller = kd.Distiller(
        student, teacher, alpha=0.5, temperature=1.0, distillation_loss=term
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))

    def step(ids, labels, mask):
        return distiller.train_on_batch(ids, labels, sample_weight=mask)

    return step


def run_memory(mode, b, seq, vocab):
    student, teacher = models(seq, vocab)
    ids, labels, mask = batch(b, seq, vocab)
    if mode == "floor":
        step = floor_step(student, teacher)
    else:
        term = "reverse_kl" if mode == "reverse_kl" else "kd"
        step = distiller_step(student, teacher, mode != "unchunked", term)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(3):
        step(ids, labels, mask)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "before_mib": before}))


def memory(mode, b, seq, vocab):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, __file__, "--memory", mode, str(b), str(seq), str(vocab)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def timing(b, seq, vocab):
    """Median seconds per step of the floor, KD and reverse KL, alternating."""
    import numpy as np

    ids, labels, mask = batch(b, seq, vocab)
    steps = {
        "floor": floor_step(*models(seq, vocab)),
        "kd": distiller_step(*models(seq, vocab)),
        "reverse_kl": distiller_step(*models(seq, vocab), term="reverse_kl"),
    }
    for step in steps.values():
        for _ in range(3):  # trace and warm up
            step(ids, labels, mask)
    times = {name: [] for name in steps}
    for _ in range(STEPS):
        for name, step in steps.items():
            start = time.perf_counter()
            step(ids, labels, mask)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


MODES = ("floor", "kd", "reverse_kl", "unchunked")
LABELS = {
    "floor": "floor",
    "kd": "KD (closed form)",
    "reverse_kl": "reverse KL (general)",
    "unchunked": "KD, unchunked",
}


def main():
    rows = []
    for b, seq, vocab in SETTINGS:
        peaks = {mode: memory(mode, b, seq, vocab) for mode in MODES}
        seconds = timing(b, seq, vocab)
        rows.append((b, seq, vocab, peaks, seconds))
        print(f"done {b}x{seq}x{vocab}", file=sys.stderr, flush=True)
    print(
        "\nOne token-level distillation step against the floor (student train step "
        f"+ teacher forward), {os.cpu_count()} CPU cores; memory: peak RSS growth "
        "over 3 steps, each run in a fresh process; time: median of "
        f"{STEPS} alternating steps"
    )
    print(
        "| batch x seq x vocab | logits (MiB) | step | peak (MiB) | / floor "
        "| step (ms) | / floor |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for b, seq, vocab, peaks, seconds in rows:
        grow = {m: p["peak_mib"] - p["before_mib"] for m, p in peaks.items()}
        logits = b * seq * vocab * 4 / 2**20
        for mode in MODES:
            ms = f"{1000 * seconds[mode]:.1f}" if mode in seconds else "-"
            ratio = (
                f"{seconds[mode] / seconds['floor']:.2f}" if mode in seconds else "-"
            )
            print(
                f"| {b} x {seq} x {vocab} | {logits:.0f} | {LABELS[mode]} "
                f"| {grow[mode]:.0f} | {grow[mode] / grow['floor']:.2f} "
                f"| {ms} | {ratio} |"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        run_memory(sys.argv[2], *map(int, sys.argv[3:6]))
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import docblocks

        with docblocks.report("docs/performance.md", "lm-cost"):
            main()
