"""tf.distribute: MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so each
scenario runs in its own Python process, bounded in time.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_distill as kd
    from keras_distill import data, models
    x, y = data.load_digits()["train"]
    x, y = x[:256], y[:256]

    def make(strategy=None):
        keras.utils.set_random_seed(0)
        teacher, student = models.teacher_cnn(), models.student_mlp()
        d = kd.Distiller(student, teacher, alpha=0.3, temperature=3.0)
        d.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        return d
    """
)


def run(code, tmp_path, timeout=240):
    script = tmp_path / "scenario.py"
    script.write_text(_PRELUDE + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(tmp_path):
    result = run(
        """
        single = make()
        h1 = single.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        e1 = single.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = make()
        h2 = mirrored.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        e2 = mirrored.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
        mirrored.save("m.keras")
        loaded = keras.models.load_model("m.keras")
        diff = float(np.abs(loaded.predict(x, verbose=0)
                            - mirrored.predict(x, verbose=0)).max())
        weights = max(float(np.abs(a - b).max()) for a, b in zip(
            single.student.get_weights(), mirrored.student.get_weights()))
        print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                          "single": h1.history, "mirrored": h2.history,
                          "eval_single": e1, "eval_mirrored": e2,
                          "load_diff": diff, "weights_diff": weights}))
        """,
        tmp_path,
    )
    assert result["replicas"] == 2
    for key in ("loss", "student_loss", "distillation_loss"):
        for a, b in zip(result["single"][key], result["mirrored"][key]):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (key, a, b)
        a, b = result["eval_single"][key], result["eval_mirrored"][key]
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (key, a, b)
    # The global-batch loss is not inflated by the replica count.
    assert result["eval_mirrored"]["loss"] < 2 * result["single"]["loss"][0]
    assert result["weights_diff"] < 1e-4
    assert result["load_diff"] < 1e-5


@pytest.mark.slow
def test_mirrored_strategy_last_batch_smaller_than_the_replica_count(tmp_path):
    # 257 examples in batches of 64: the last global batch has one example,
    # so one replica's share is empty. Its mean of nothing must add 0 (as
    # Keras's own losses do), not NaN that stops training as a "NaN loss".
    result = run(
        """
        xs, ys = data.load_digits()["train"]
        xs, ys = xs[:257], ys[:257]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        out = {}
        for name, weights in (("plain", None), ("weighted", np.ones(257))):
            keras.utils.set_random_seed(0)
            with strategy.scope():  # an MLP teacher: TF's CPU convolution
                # itself fails on an empty batch
                d = kd.Distiller(models.student_mlp(), models.student_mlp(hidden=64))
                d.compile(optimizer=keras.optimizers.SGD(0.05))
            h = d.fit(xs, ys, batch_size=64, epochs=1, shuffle=False, verbose=0,
                      sample_weight=weights)
            e = d.evaluate(xs, ys, batch_size=64, verbose=0, return_dict=True)
            out[name] = {"fit": h.history, "eval": e}
        print(json.dumps(out))
        """,
        tmp_path,
    )
    for name in ("plain", "weighted"):
        for key in ("loss", "student_loss", "distillation_loss"):
            assert np.isfinite(result[name]["fit"][key]).all(), (name, key, result)
            assert np.isfinite(result[name]["eval"][key]), (name, key, result)
    for key in ("loss", "student_loss", "distillation_loss"):
        a, b = result["plain"]["fit"][key][0], result["weighted"]["fit"][key][0]
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (key, a, b)


# -- Several workers: kd.distribute.fit under MultiWorkerMirroredStrategy ------

_WORKER_PRELUDE = textwrap.dedent(
    """
    import hashlib, json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import keras_distill as kd
    from keras_distill import data, models
    x, y = data.load_digits()["train"]
    x, y = x[:256], y[:256]
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    task = strategy.cluster_resolver.task_id

    def make():
        keras.utils.set_random_seed(0)
        teacher, student = models.teacher_cnn(), models.student_mlp()
        d = kd.Distiller(student, teacher, alpha=0.3, temperature=3.0)
        d.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        return d

    def report(distiller, **extra):
        weights = distiller.student.get_weights()
        np.savez(f"weights_{task}.npz", *weights)
        digest = hashlib.sha256(b"".join(w.tobytes() for w in weights))
        print(json.dumps({"task": task, "hash": digest.hexdigest(), **extra}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_with_a_teacher_loaded_outside_the_scope(tmp_path):
    # Users load a trained teacher before opening the scope; it is frozen and
    # only read, so it needs no mirrored variables.
    result = run(
        """
        keras.utils.set_random_seed(0)
        teacher = models.teacher_cnn()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            d = kd.Distiller(models.student_mlp(), teacher, alpha=0.3, temperature=3.0)
            d.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        before = [w.copy() for w in teacher.get_weights()]
        h = d.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        same = all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
        print(json.dumps({"loss": h.history["loss"], "teacher_same": same}))
        """,
        tmp_path,
    )
    assert all(np.isfinite(result["loss"]))
    assert result["loss"][-1] < result["loss"][0]
    assert result["teacher_same"]


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(code, folder, count=2, timeout=120):
    """Runs `code` in `count` worker processes; returns each one's JSON line."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "worker.py"
    script.write_text(_WORKER_PRELUDE + textwrap.dedent(code))
    workers = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    processes = []
    for index in range(count):
        config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CONFIG": json.dumps(config)}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=folder,
            )
        )
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def _weights(folder, task):
    with np.load(folder / f"weights_{task}.npz") as arrays:
        return [arrays[k] for k in sorted(arrays.files, key=lambda k: int(k[4:]))]


def _max_diff(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


_UNINTERRUPTED = """
errors = {}
outside = make()  # Created outside strategy.scope().
for name, call in {
    "scope": lambda: kd.distribute.fit(outside, train_ds, strategy=strategy),
    "batch": None,
    "type": lambda: kd.distribute.fit(outside, (x, y)),
}.items():
    if call is None:
        continue
    try:
        call()
    except (TypeError, ValueError) as e:
        errors[name] = str(e)
with strategy.scope():
    distiller = make()
try:
    kd.distribute.fit(distiller, tf.data.Dataset.from_tensor_slices((x, y)).batch(63))
except ValueError as e:
    errors["batch"] = str(e)
history = kd.distribute.fit(distiller, train_ds, epochs=3, validation_data=train_ds,
                            checkpoint_dir="checkpoints", verbose=0)
report(distiller, history=history.history, epochs=history.epoch, errors=errors,
       custom=kd.distribute.uses_custom_loop(strategy),
       workers=kd.distribute.num_workers(strategy),
       replicas=strategy.num_replicas_in_sync)
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    return folder, run_workers(_UNINTERRUPTED, folder)


@pytest.mark.slow
def test_two_workers_train_identically_with_fit_logs(uninterrupted, tmp_path):
    folder, outputs = uninterrupted
    assert [o["task"] for o in outputs] == [0, 1]
    assert all(o["custom"] and o["workers"] == 2 == o["replicas"] for o in outputs)
    # Both workers end with the same student, bit for bit.
    assert outputs[0]["hash"] == outputs[1]["hash"]
    assert _max_diff(_weights(folder, 0), _weights(folder, 1)) == 0.0
    history = outputs[0]["history"]
    assert outputs[1]["history"] == history
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    # Only the chief's checkpoints are kept.
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]
    # The logs equal those of single-device fit() on the same global batches.
    reference = run(
        """
        d = make()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
        h = d.fit(ds, epochs=3, validation_data=ds, verbose=0)
        print(json.dumps({"history": h.history}))
        """,
        tmp_path,
    )["history"]
    assert sorted(reference) == sorted(history)
    for key, values in reference.items():
        for a, b in zip(values, history[key]):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (key, a, b)


@pytest.mark.slow
def test_two_workers_bad_input_errors(uninterrupted):
    errors = uninterrupted[1][0]["errors"]
    assert "strategy.scope()" in errors["scope"], errors
    assert "(63)" in errors["batch"] and "(2)" in errors["batch"], errors
    assert "tf.data.Dataset" in errors["type"] and "tuple" in errors["type"], errors


_INTERRUPTED = """
class Crash(Exception):
    pass

class CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Crash()

with strategy.scope():
    distiller = make()
callbacks = [CrashAfterFirstEpoch()] if sys.argv[1:] == ["crash"] else []
try:
    history = kd.distribute.fit(distiller, train_ds, epochs=3, validation_data=train_ds,
                                checkpoint_dir="checkpoints", callbacks=callbacks,
                                verbose=0)
except Crash:
    report(distiller, crashed=True)
else:
    report(distiller, crashed=False, epochs=history.epoch, history=history.history)
"""


@pytest.mark.slow
def test_two_workers_resume_after_interruption(uninterrupted, tmp_path):
    reference_folder, reference = uninterrupted
    script = _INTERRUPTED.replace("sys.argv[1:]", "[os.environ['SCENARIO']]")
    os.environ["SCENARIO"] = "crash"
    try:
        first = run_workers(script, tmp_path)
    finally:
        os.environ["SCENARIO"] = "resume"
    try:
        resumed = run_workers(script, tmp_path)
    finally:
        del os.environ["SCENARIO"]
    assert all(o["crashed"] for o in first)
    assert all(not o["crashed"] for o in resumed)
    # The rerun starts at the second epoch (index 1) ...
    assert [o["epochs"] for o in resumed] == [[1, 2], [1, 2]]
    # ... and ends where the uninterrupted run ended.
    assert resumed[0]["hash"] == resumed[1]["hash"]
    assert _max_diff(_weights(tmp_path, 0), _weights(reference_folder, 0)) < 1e-6
    full = reference[0]["history"]["loss"]
    for a, b in zip(resumed[0]["history"]["loss"], full[1:]):
        assert abs(a - b) < 1e-5, (a, b)


def test_default_strategy_falls_back_to_keras_fit(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    import keras_distill as kd
    from keras_distill import data, models

    x, y = data.load_digits()["train"]
    ds = tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(64)
    keras.utils.set_random_seed(0)
    distiller = kd.Distiller(models.student_mlp(), models.teacher_cnn())
    distiller.compile(optimizer="sgd")
    calls = []
    original = kd.Distiller.fit

    def recording_fit(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(kd.Distiller, "fit", recording_fit)
    assert not kd.distribute.uses_custom_loop(tf.distribute.get_strategy())
    history = kd.distribute.fit(
        distiller, ds, epochs=2, checkpoint_dir=str(tmp_path / "backup"), verbose=0
    )
    assert len(calls) == 1 and history.epoch == [0, 1]
    assert history.history["loss"][1] < history.history["loss"][0]
    backups = [
        c for c in calls[0]["callbacks"] if type(c).__name__ == "AtomicBackupAndRestore"
    ]
    assert len(backups) == 1
    # Rerunning resumes: the two epochs are done, so none is run again.
    again = kd.distribute.fit(
        distiller, ds, epochs=2, checkpoint_dir=str(tmp_path / "backup"), verbose=0
    )
    assert again.epoch == []
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        kd.distribute.fit(distiller, x[:128])


@pytest.mark.slow
def test_custom_loop_trains_and_checkpoints_hint_adaptors(tmp_path):
    # The multi-worker loop, run here by one worker: the optimizer covers the
    # hint adaptors and the checkpoint restores them.
    result = run(
        """
        from keras_distill import distribute
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)

        def hinted(seed):
            keras.utils.set_random_seed(seed)
            with strategy.scope():
                d = kd.Distiller(models.student_cnn(), models.teacher_cnn(),
                                 hints=[kd.hints.Hint("conv2", "conv1")])
                d.compile(optimizer=keras.optimizers.SGD(0.05))
            return d

        def adaptor(d):
            return d.hint_adaptors[0].get_weights()[0]

        d = hinted(0)
        start = adaptor(d).copy()
        h = distribute._MultiWorkerLoop(d, strategy).fit(
            ds, epochs=2, validation_data=None, callbacks=None,
            checkpoint_dir="ckpt", steps_per_epoch=None, validation_steps=None,
            verbose=0)
        trained = adaptor(d)
        d2 = hinted(1)  # other initial weights, restored from the checkpoint
        distribute._MultiWorkerLoop(d2, strategy).fit(
            ds, epochs=2, validation_data=None, callbacks=None,
            checkpoint_dir="ckpt", steps_per_epoch=None, validation_steps=None,
            verbose=0)
        print(json.dumps({
            "hint_loss": h.history["hint_loss"],
            "adaptor_moved": float(np.abs(trained - start).max()),
            "restored_diff": float(np.abs(adaptor(d2) - trained).max()),
            "hint_weight": float(d2.hint_weight.numpy()),
        }))
        """,
        tmp_path,
    )
    assert result["hint_loss"][-1] < result["hint_loss"][0]
    assert result["adaptor_moved"] > 0
    assert result["restored_diff"] == 0.0
    assert result["hint_weight"] == 1.0
