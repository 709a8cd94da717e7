import json
import os

import keras
import numpy as np
import pytest

import keras_distill as kd
from tests.helpers import load_file, weights_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    return load_file(f"examples/{name}.py", name)


@pytest.mark.slow
def test_lwf_keeps_old_task_accuracy_above_fine_tuning():
    results = load_example("lifelong").run(
        task1_epochs=30, task2_epochs=30, seed=0, methods=("fine-tuning", "LwF")
    )
    before, _ = results["after task 1"]
    ft_old, ft_new = results["fine-tuning"]
    lwf_old, lwf_new = results["LwF"]
    # Measured with seed 0: before 0.983; fine-tuning 0.933 / 0.989; LwF (warm-up
    # "auto", alpha 0.8) 0.983 / 0.994. (0.983 / 0.933 when LwF's trunk was frozen by
    # mistake.)
    assert lwf_old - ft_old >= 0.03, results
    assert lwf_old >= before - 0.02, results
    assert lwf_new >= ft_new - 0.01 and ft_new >= 0.9, results


def test_add_task_head_copies_and_leaves_the_old_model_alone():
    old = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    before = [w.copy() for w in old.get_weights()]
    two = kd.continual.add_task_head(old, num_classes=2)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    old_out, new_out = two(x)
    np.testing.assert_allclose(old_out, old(x), atol=1e-6)
    assert new_out.shape == (5, 2)
    lwf = kd.continual.LearningWithoutForgetting(two, old)
    lwf.compile(optimizer="adam", metrics=["accuracy"])
    history = lwf.fit(x, np.array([0, 1, 0, 1, 1]), epochs=2, verbose=0)
    assert weights_equal(old.get_weights(), before)
    assert {"loss", "student_loss", "distillation_loss", "accuracy"} <= set(
        history.history
    )


def test_lwf_save_load(tmp_path):
    old = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(3)]
    )
    lwf = kd.continual.LearningWithoutForgetting(
        kd.continual.add_task_head(old, 2), old
    )
    lwf.compile(optimizer="adam")
    x = np.ones((4, 4), "float32")
    lwf.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    lwf.save(tmp_path / "lwf.keras")
    loaded = keras.models.load_model(tmp_path / "lwf.keras")
    assert isinstance(loaded, kd.continual.LearningWithoutForgetting)
    for a, b in zip(loaded.predict(x, verbose=0), lwf.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lwf_bad_input():
    old = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="two outputs"):
        kd.continual.LearningWithoutForgetting(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), old
        )
    with pytest.raises(ValueError, match="num_classes=0"):
        kd.continual.add_task_head(old, 0)


# -- Li and Hoiem's lambda_o, several heads, warm-up ------------------------------


def test_alpha_and_lambda_mapping():
    assert kd.continual.alpha_for_lambda(1.0, temperature=2.0) == pytest.approx(0.8)
    assert kd.continual.lambda_for_alpha(0.5, temperature=2.0) == pytest.approx(4.0)
    for lam, t in ((0.3, 1.0), (2.0, 3.0)):
        alpha = kd.continual.alpha_for_lambda(lam, t)
        assert kd.continual.lambda_for_alpha(alpha, t) == pytest.approx(lam)
    with pytest.raises(ValueError, match="lambda_old=-1"):
        kd.continual.alpha_for_lambda(-1.0)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_lwf_loss_is_the_papers_with_one_kd_term_per_old_head():
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    teacher = kd.continual.add_task_head(base, 2)  # two old heads: 3 and 2 classes
    student = kd.continual.add_task_head(teacher, 4)
    student.set_weights(
        [
            w + 0.3 * np.random.default_rng(1).normal(size=w.shape)
            for w in student.get_weights()
        ]
    )
    t = 2.0
    lwf = kd.continual.LearningWithoutForgetting(student, teacher, temperature=t)
    lwf.compile(optimizer="adam")
    x = np.random.default_rng(2).normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 3, 0, 1])
    y_pred = lwf(x)
    total, ce, kd_term = (
        float(v) for v in lwf.compute_distillation_loss(x, y, y_pred, None)
    )
    old = [np.asarray(o) for o in teacher(x)]
    new = [np.asarray(o) for o in y_pred]
    reference_kd = 0.0
    for o, s in zip(old, new[:2]):
        p = np.exp(_log_softmax(o / t))
        reference_kd += np.mean(np.sum(p * (np.log(p) - _log_softmax(s / t)), -1))
    reference_kd *= t**2
    reference_ce = -np.mean(_log_softmax(new[2])[np.arange(6), y])
    np.testing.assert_allclose(kd_term, reference_kd, rtol=1e-4)
    np.testing.assert_allclose(ce, reference_ce, rtol=1e-4)
    # The step computes the same (one batch of 6 examples).
    logged = lwf.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    np.testing.assert_allclose(logged["distillation_loss"], reference_kd, rtol=1e-4)
    # alpha = 0.8 is lambda_o = 1: total = 0.8 * (CE + 1 * KL / 1) at T = 2.
    np.testing.assert_allclose(
        total, 0.8 * (reference_ce + reference_kd / t**2), rtol=1e-4
    )


def test_lwf_rejects_a_teacher_that_does_not_match_the_old_heads():
    base = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(3)]
    )
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"teacher output sizes \[5\].*\[3\]"):
        kd.continual.LearningWithoutForgetting(
            kd.continual.add_task_head(base, 2), other
        )


def test_warm_up_trains_the_new_head_only():
    keras.utils.set_random_seed(0)
    from tests.helpers import digits_subset

    x, y = digits_subset(n=200)
    base = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    student = kd.continual.add_task_head(base, 2)
    before = [w.copy() for w in student.get_weights()]
    labels = (y % 2).astype("int64")
    accuracy_before = np.mean(np.argmax(student.predict(x, verbose=0)[1], -1) == labels)
    kd.continual.warm_up_head(student, x, labels, epochs=15)
    after = student.get_weights()
    assert weights_equal(after[:-2], before[:-2])  # trunk and old head
    assert not np.array_equal(after[-2], before[-2])  # new kernel
    accuracy = np.mean(np.argmax(student.predict(x, verbose=0)[1], -1) == labels)
    assert accuracy > max(accuracy_before, 0.6) + 0.05, (accuracy_before, accuracy)


def test_holdout_split_is_stratified_seeded_and_disjoint():
    y = np.array([0] * 10 + [1] * 10 + [2] * 5)
    train, val = kd.continual.holdout_split(y, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    assert not set(train) & set(val)
    assert np.bincount(y[val]).tolist() == [2, 2, 1]  # 20% of each class
    again, _ = kd.continual.holdout_split(y, 0.2, seed=3)
    other, _ = kd.continual.holdout_split(y, 0.2, seed=4)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    # At least one example of each class on both sides.
    small = np.array([0, 0, 1, 1])
    fit, tiny = kd.continual.holdout_split(small, 0.01)
    assert small[tiny].tolist() == [0, 1] and small[fit].tolist() == [0, 1]


def _warm_up_student(seed=0):
    keras.utils.set_random_seed(seed)
    base = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    return kd.continual.add_task_head(base, 2)


def test_auto_warm_up_holds_out_data_stops_early_and_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype("float32")
    y = rng.integers(0, 2, size=100)  # random labels: the held-out loss soon rises
    student = _warm_up_student()
    before = [w.copy() for w in student.get_weights()]
    history = kd.continual.warm_up_head(
        student,
        x,
        y,
        learning_rate=0.05,
        batch_size=16,
        patience=3,
        max_epochs=300,
        tolerance=0.0,
        seed=7,
    )
    losses = history.history["val_loss"]
    # Stopped early, `patience` epochs after the best one, whose weights it kept.
    assert len(losses) < 300
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert len(losses) == history.best_epoch + 3
    train, val = kd.continual.holdout_split(y, 0.2, seed=7)
    assert len(val) == 20
    # Fitted on the 80 training examples only: 5 batches of 16 per epoch.
    assert history.params["steps"] == 5
    # The held-out loss of the final head is the best epoch's, on that slice.
    features = keras.Model(student.input, student.layers[-1].input)(x[val])
    logits = student.layers[-1](features)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y[val], logits)
    np.testing.assert_allclose(float(loss), min(losses), rtol=1e-4)
    after = student.get_weights()
    assert weights_equal(after[:-2], before[:-2])  # trunk and old head frozen


def test_integer_warm_up_trains_on_everything_for_that_many_epochs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    y = rng.integers(0, 2, size=40)
    history = kd.continual.warm_up_head(
        _warm_up_student(), x, y, epochs=3, batch_size=8
    )
    assert len(history.epoch) == 3 and history.best_epoch == 3
    assert history.params["steps"] == 5 and "val_loss" not in history.history


def test_warm_up_bad_input(tmp_path):
    x = np.zeros((10, 6), "float32")
    y = np.array([0] * 5 + [1] * 5)
    student = _warm_up_student()
    warm_up = kd.continual.warm_up_head
    with pytest.raises(ValueError, match=r"\"auto\".*epochs='fast'"):
        warm_up(student, x, y, epochs="fast")
    with pytest.raises(ValueError, match=r"integer >= 1\. Received: epochs=0"):
        warm_up(student, x, y, epochs=0)
    with pytest.raises(ValueError, match=r"in \(0, 1\).*validation_fraction=1\.0"):
        warm_up(student, x, y, validation_fraction=1.0)
    with pytest.raises(ValueError, match="patience=0"):
        warm_up(student, x, y, patience=0)
    with pytest.raises(ValueError, match="max_epochs=2.5"):
        warm_up(student, x, y, max_epochs=2.5)
    with pytest.raises(ValueError, match=r">= 0\. Received: tolerance=-0\.1"):
        warm_up(student, x, y, tolerance=-0.1)
    with pytest.raises(ValueError, match="Class 1 has 1 training example"):
        warm_up(student, x[:6], np.array([0, 0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="10 inputs and 9 labels"):
        warm_up(student, x, y[:9])
    tasks = _small_tasks([[0, 1], [2, 3]])
    for bad in ("Auto", -1, 2.0, True, None):
        with pytest.raises(ValueError, match=f"warmup_epochs={bad!r}"):
            kd.continual.learn(
                tasks, build_mlp, tmp_path, scenario="task", warmup_epochs=bad
            )
    assert not os.path.exists(tmp_path / "run.json")


def test_add_task_head_twice_and_grow_head_keep_the_old_outputs():
    keras.utils.set_random_seed(0)
    old = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    three = kd.continual.add_task_head(kd.continual.add_task_head(old, 2), 4)
    outputs = three(x)
    assert [o.shape[-1] for o in outputs] == [3, 2, 4]
    np.testing.assert_allclose(outputs[0], old(x), atol=1e-6)
    # A model that has been a teacher is frozen; copies of it must train.
    kd.continual.LearningWithoutForgetting(kd.continual.add_task_head(old, 4), old)
    assert not old.layers[0].trainable
    again = kd.continual.add_task_head(old, 4)
    assert len(again.trainable_weights) == len(again.weights) == 6
    grown = kd.continual.grow_head(old, 2)
    assert len(grown.trainable_weights) == len(grown.weights) == 4
    logits = np.asarray(grown(x))
    assert logits.shape == (5, 5)
    np.testing.assert_allclose(logits[:, :3], old(x), atol=1e-6)
    view = kd.continual.old_classes_view(grown, 3)
    np.testing.assert_allclose(view(x)[0], old(x), atol=1e-6)
    np.testing.assert_allclose(view(x)[1], logits, atol=1e-6)
    new_only = kd.continual.old_classes_view(grown, 3, new_classes_only=True)
    np.testing.assert_allclose(new_only(x)[1], logits[:, 3:], atol=1e-6)
    with pytest.raises(ValueError, match="num_new_classes=0"):
        kd.continual.grow_head(old, 0)
    with pytest.raises(ValueError, match="one output"):
        kd.continual.grow_head(three, 2)


def test_class_incremental_lwf_saves_and_loads(tmp_path):
    old = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6), keras.layers.Dense(3)]
    )
    view = kd.continual.old_classes_view(kd.continual.grow_head(old, 2), 3)
    lwf = kd.continual.LearningWithoutForgetting(view, old)
    lwf.compile(optimizer="adam")
    x = np.ones((4, 4), "float32")
    lwf.fit(x, np.array([0, 4, 3, 1]), epochs=1, verbose=0)
    lwf.save(tmp_path / "lwf.keras")
    loaded = keras.models.load_model(tmp_path / "lwf.keras")
    for a, b in zip(loaded.predict(x, verbose=0), lwf.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- Exemplar memory ---------------------------------------------------------------


def test_herding_picks_the_example_nearest_the_mean_first_and_tracks_it():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8)) + 1.0
    order = kd.continual.herding(features, 10)
    assert len(set(order.tolist())) == 10
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    mean = unit.mean(0)
    assert order[0] == np.argmin(np.linalg.norm(unit - mean, axis=1))
    herded = np.linalg.norm(unit[order].mean(0) - mean)
    randoms = [
        np.linalg.norm(unit[rng.permutation(60)[:10]].mean(0) - mean)
        for _ in range(200)
    ]
    assert herded < np.percentile(randoms, 1)


def test_memory_keeps_a_fixed_budget_split_by_class(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(0)
    memory = kd.continual.ExemplarMemory(12, selection="herding")
    x = rng.normal(size=(40, 3)).astype("float32")
    memory.update(model, x, np.repeat([0, 1], 20))
    assert len(memory) == 12 and memory.classes == [0, 1]
    first_zero = memory.arrays()[0][:3]
    memory.update(model, x, np.repeat([2, 3], 20))
    x_stored, y_stored = memory.arrays()
    assert len(memory) == 12 and np.bincount(y_stored).tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(x_stored[:3], first_zero)  # shrinking keeps the first
    memory.save(tmp_path / "memory.npz")
    again = kd.continual.ExemplarMemory(12)
    again.load(tmp_path / "memory.npz")
    for a, b in zip(again.arrays(), memory.arrays()):
        np.testing.assert_array_equal(a, b)
    randomly = kd.continual.ExemplarMemory(4, selection="random", seed=3)
    randomly.update(model, x, np.repeat([0, 1], 20))
    assert np.bincount(randomly.arrays()[1]).tolist() == [2, 2]
    with pytest.raises(ValueError, match="size=-1"):
        kd.continual.ExemplarMemory(-1)
    with pytest.raises(ValueError, match="selection='best'"):
        kd.continual.ExemplarMemory(5, selection="best")


# -- Metrics -----------------------------------------------------------------------


def test_accuracy_metrics_by_hand():
    nan = np.nan
    a = np.array([[0.9, nan, nan], [0.6, 0.8, nan], [0.5, 0.7, 0.95]])
    m = kd.continual.accuracy_metrics(a)
    assert m["average_accuracy"] == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert m["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert m["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert m["average_accuracy_per_step"] == pytest.approx([0.9, 0.7, 0.7166667])
    # Forgetting uses the best earlier accuracy, not the first one.
    b = np.array([[0.5, nan, nan], [0.9, 0.8, nan], [0.6, 0.8, 0.9]])
    assert kd.continual.accuracy_metrics(b)["forgetting"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        kd.continual.accuracy_metrics(np.zeros((2, 3)))


def test_table_and_heat_map(tmp_path):
    a = np.array([[0.9, np.nan], [0.6, 0.8]])
    table = kd.continual.format_table({"lwf": [a, a * 0.9], "finetune": a})
    assert "| lwf | 0.665 [0.630, 0.700] |" in table
    assert "| finetune | 0.700 |" in table
    path = kd.continual.plot_accuracy_matrices(
        {"lwf": [a, a], "finetune": a}, tmp_path / "m.png"
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# -- Sequences of tasks ------------------------------------------------------------


def _small_tasks(groups, n=150):
    from tests.helpers import digits

    small = {k: (x[:n], y[:n]) for k, (x, y) in digits().items()}
    return kd.continual.split_classes(small, groups)


def build_mlp(num_classes):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {root!r})
import keras_distill as kd
from tests.continual_test import _small_tasks, build_mlp
original = kd.continual.LearningWithoutForgetting.fit
calls = []
def fit(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the third task's training: kill -9 ourselves
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
kd.continual.LearningWithoutForgetting.fit = fit
kd.continual.learn(_small_tasks([[0, 1], [2, 3], [4, 5]]), build_mlp, {out!r},
                   method="icarl", memory_size=12, epochs=5)
"""


@pytest.mark.slow
def test_class_incremental_sequence_resumes_after_kill_9(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    out = str(tmp_path / "run")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN.format(root=ROOT, out=out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with open(os.path.join(out, "run.json")) as f:
        state = json.load(f)
    assert state["finished"] == 2
    stamps = {
        name: os.stat(os.path.join(out, name)).st_mtime_ns
        for name in ("task_1.keras", "task_2.keras", "memory_2.npz")
    }
    assert not os.path.exists(os.path.join(out, "task_3.keras"))

    tasks = _small_tasks([[0, 1], [2, 3], [4, 5]])
    result = kd.continual.learn(
        tasks, build_mlp, out, method="icarl", memory_size=12, epochs=5
    )
    assert result.trained == [2]  # tasks 1 and 2 were not trained again
    for name, stamp in stamps.items():
        assert os.stat(os.path.join(out, name)).st_mtime_ns == stamp, name
    a = result.accuracy
    assert a.shape == (3, 3)
    np.testing.assert_array_equal(a[:2], np.asarray(state["accuracy"], "float64"))
    assert np.all(np.isnan(a[np.triu_indices(3, 1)]))
    assert np.all(np.isfinite(a[np.tril_indices(3)]))
    assert a[2, 2] > 0.8  # the new classes are learnt
    final = keras.models.load_model(result.model_path(2))
    assert final.output_shape == (None, 6)  # one head, grown to every class
    memory = kd.continual.ExemplarMemory(12)
    memory.load(os.path.join(out, "memory_3.npz"))
    assert np.bincount(memory.arrays()[1]).tolist() == [2] * 6
    # iCaRL's nearest-mean-of-exemplars classifier, beside the head's rows
    # (the killed run's first two rows kept, the third computed on resume).
    nme = result.nme_accuracy
    assert nme.shape == (3, 3) and np.all(np.isnan(nme[np.triu_indices(3, 1)]))
    assert np.all((nme[np.tril_indices(3)] >= 0) & (nme[np.tril_indices(3)] <= 1))
    np.testing.assert_array_equal(nme[:2], np.asarray(state["nme_accuracy"]))
    # Everything done: a third call trains nothing and gives the same matrix.
    again = kd.continual.learn(
        tasks, build_mlp, out, method="icarl", memory_size=12, epochs=5
    )
    assert again.trained == []
    np.testing.assert_array_equal(again.accuracy, a)
    # Other settings are refused rather than mixed into the folder.
    with pytest.raises(ValueError, match="other settings.*epochs"):
        kd.continual.learn(tasks, build_mlp, out, method="icarl", memory_size=12)


def test_learn_warms_up_on_held_out_data_by_default(tmp_path):
    tasks = _small_tasks([[0, 1], [2, 3]])
    # Random labels for the new task, so that the held-out loss soon rises.
    x, y = tasks[1].train
    noisy = np.random.default_rng(0).choice([2, 3], size=len(y))
    tasks[1] = kd.continual.Task((x, noisy), tasks[1].test, (2, 3))
    result = kd.continual.learn(
        tasks, build_mlp, tmp_path / "lwf", scenario="task", method="lwf", epochs=1
    )
    assert result.warmup_epochs[0] is None  # the first task has no new head
    assert 1 <= result.warmup_epochs[1] < 150  # stopped long before the cap
    with open(tmp_path / "lwf" / "run.json") as f:
        state = json.load(f)
    assert state["config"]["warmup_epochs"] == "auto"
    assert state["warmup_epochs_run"] == result.warmup_epochs
    plain = kd.continual.learn(
        tasks,
        build_mlp,
        tmp_path / "ft",
        scenario="task",
        method="finetune",
        epochs=1,
        warmup_epochs=0,
    )
    assert plain.warmup_epochs == [None, None]


def test_task_incremental_sequence_and_baselines(tmp_path):
    tasks = _small_tasks([[0, 1, 2], [3, 4]])
    results = kd.continual.compare(
        tasks,
        build_mlp,
        tmp_path,
        methods=["lwf", "joint"],
        scenario="task",
        epochs=2,
        warmup_epochs=2,
    )
    for method, result in results.items():
        assert result.accuracy.shape == (2, 2) and np.isnan(result.accuracy[0, 1])
        model = keras.models.load_model(result.model_path(1))
        assert [o.shape[-1] for o in model.outputs] == [3, 2], method
        assert result.accuracy[1, 1] > 0.6, (method, result.accuracy)
    # The task-1 model is the same for both (same seed, same training).
    np.testing.assert_allclose(
        results["lwf"].accuracy[0, 0], results["joint"].accuracy[0, 0]
    )


def test_learn_bad_input(tmp_path):
    tasks = _small_tasks([[0, 1], [2, 3]])
    learn = kd.continual.learn
    with pytest.raises(ValueError, match=r"non-empty list.*tasks=\[\]"):
        learn([], build_mlp, tmp_path)
    overlapping = _small_tasks([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="Class 1 is in task 0 and task 1"):
        learn(overlapping, build_mlp, tmp_path)
    with pytest.raises(ValueError, match="memory_size=-3"):
        learn(tasks, build_mlp, tmp_path, method="icarl", memory_size=-3)
    with pytest.raises(ValueError, match="4 classes need memory_size >= 4"):
        learn(tasks, build_mlp, tmp_path, method="icarl", memory_size=3)
    with pytest.raises(ValueError, match="method='ewc'"):
        learn(tasks, build_mlp, tmp_path, method="ewc")
    with pytest.raises(ValueError, match="scenario='domain'"):
        learn(tasks, build_mlp, tmp_path, scenario="domain")
    with pytest.raises(ValueError, match="scenario='class'"):
        learn(tasks, build_mlp, tmp_path, scenario="task", method="icarl")
    with pytest.raises(ValueError, match="warmup_epochs=-1"):
        learn(tasks, build_mlp, tmp_path, scenario="task", warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"labels \[7\] outside its classes \(0, 1\)"):
        bad = kd.continual.Task(
            (tasks[0].train[0], np.full(len(tasks[0].train[1]), 7)),
            tasks[0].test,
            (0, 1),
        )
        learn([bad], build_mlp, tmp_path)
    with pytest.raises(ValueError, match=r"Classes \[42\] of group \[0, 42\]"):
        _small_tasks([[0, 42]])
    with pytest.raises(ValueError, match="one output of `num_classes` logits"):
        learn(tasks, lambda n: build_mlp(n + 1), tmp_path / "wrong")
    assert not os.path.exists(tmp_path / "run.json")  # nothing ran


def test_nearest_mean_of_exemplars_picks_the_class_of_the_nearest_mean():
    # Features are the head's inputs: here the model's own inputs.
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inputs))
    memory = kd.continual.ExemplarMemory(6, selection="random")
    x = np.asarray([[1, 0], [2, 0.1], [0, 1], [0.1, 2], [-1, 0], [-2, -0.1]], "f4")
    memory.update(model, x, np.asarray([0, 0, 1, 1, 2, 2]))
    queries = np.asarray([[5, 1], [1, 5], [-3, 0.5]], "float32")
    scores = memory.nearest_mean_scores(model, queries, [0, 1, 2])
    assert scores.shape == (3, 3)
    assert np.argmax(scores, axis=1).tolist() == [0, 1, 2]
    # Columns follow the order asked for.
    swapped = memory.nearest_mean_scores(model, queries, [2, 1, 0])
    assert np.argmax(swapped, axis=1).tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match=r"has none of \[7\]"):
        memory.nearest_mean_scores(model, queries, [0, 7])
