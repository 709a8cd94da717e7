"""Bad data never trains a silently wrong student: the checks of every batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from tests.helpers import digits_subset, tiny_student, trained_teacher, weights_equal


def _distiller(**kwargs):
    distiller = kd.Distiller(tiny_student(), trained_teacher(), **kwargs)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    return distiller


def _dataset(x, y, batch=32):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.parametrize("bad", [10, -1])
def test_a_bad_label_in_the_last_batch_names_value_range_and_step(bad):
    x, y = digits_subset(n=96)
    y = y.copy()
    y[-1] = bad
    distiller = _distiller()
    with pytest.raises(
        ValueError,
        match=rf"integers in \[0, 10\).*label value of {bad} in training step 3",
    ):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_a_bad_integer_label_stops_the_step_before_any_update():
    # Integer labels are refused by the loss's own kernel (no op in the
    # step): the failing step must still leave the weights of the last good one.
    x, y = digits_subset(n=96)
    y = y.copy()
    y[70] = 10
    distiller = _distiller()
    seen = []
    snapshot = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            [w.copy() for w in distiller.student.get_weights()]
        )
    )
    with pytest.raises(ValueError, match=r"label value of 10 in training step 3"):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0, callbacks=[snapshot])
    assert len(seen) == 2
    assert weights_equal(seen[-1], distiller.student.get_weights())
    assert int(distiller.optimizer.iterations.numpy()) == 2


def test_a_fractional_label_after_the_first_batch_is_refused():
    x, y = digits_subset(n=96)
    y = y.astype("float32")
    y[70] = 3.5
    with pytest.raises(ValueError, match=r"label value of 3\.5 in training step 3"):
        _distiller().fit(_dataset(x, y), epochs=1, verbose=0)


def test_a_nan_input_stops_training_and_keeps_the_last_good_weights():
    x, y = digits_subset(n=96)
    x = x.copy()
    x[70] = np.nan
    distiller, replay = _distiller(), _distiller()
    replay.student.set_weights(distiller.student.get_weights())
    for model in (distiller, replay):
        model.fit(x[:32], y[:32], epochs=1, verbose=0)
    before = [w.copy() for w in distiller.student.get_weights()]
    # Batches 1 and 2 train; batch 3 (examples 64-95) holds the NaN.
    with pytest.raises(
        ValueError,
        # Depending on the CPU's kernels, the NaN reaches the loss or is
        # swallowed by a ReLU and only reaches the gradients: either stops.
        match=r"loss or its gradients became NaN or infinite in training step 4 "
        r"\(loss .*; it started in .*\).*last good step.*NaN or inf in the inputs",
    ):
        distiller.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    after = distiller.student.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert not weights_equal(before, after)  # the two good batches did train
    # ... and the weights are exactly those after the last good batch.
    replay.fit(x[:64], y[:64], epochs=1, batch_size=32, shuffle=False, verbose=0)
    assert weights_equal(replay.student.get_weights(), after)
    # The optimizer counted the good steps only (1 + 2), and its state too.
    assert int(distiller.optimizer.iterations.numpy()) == 3
    assert weights_equal(
        [v.numpy() for v in replay.optimizer.variables],
        [v.numpy() for v in distiller.optimizer.variables],
    )


def test_a_nan_gradient_under_a_finite_loss_stops_training():
    # sqrt(0 * t) is 0 forward, but its gradient is inf * 0 = nan: the loss
    # stays finite while the update would write NaN into the weights.
    x, y = digits_subset(n=64)
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            keras.layers.Lambda(lambda t: t + keras.ops.sqrt(keras.ops.abs(t) * 0.0)),
        ]
    )
    distiller = kd.Distiller(student, trained_teacher())
    distiller.compile(optimizer="adam")
    before = [w.copy() for w in student.get_weights()]
    with pytest.raises(
        ValueError,
        match=r"in training step 1 \(loss [0-9.]+, .*gradients NaN or infinite; ",
    ):
        distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert weights_equal(before, student.get_weights())


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_bad_sample_weights_are_refused(bad):
    x, y = digits_subset(n=64)
    weights = np.ones(64, "float32")
    weights[40] = bad
    with pytest.raises(ValueError, match=r"sample_weight` must be finite and >= 0"):
        _distiller().fit(x, y, sample_weight=weights, batch_size=32, verbose=0)


def test_unlabeled_evaluation_reports_no_made_up_student_loss():
    x, _ = digits_subset(n=64)
    logs = _distiller().evaluate(x, verbose=0, return_dict=True)
    assert np.isnan(logs["student_loss"])
    assert np.isfinite(logs["distillation_loss"]) and logs["distillation_loss"] > 0


@pytest.mark.parametrize("empty", ["arrays", "dataset", "filtered"])
def test_empty_training_data_is_an_error(empty):
    x, y = digits_subset(n=32)
    data = {
        "arrays": (x[:0], y[:0]),
        "dataset": (_dataset(x[:0], y[:0]), None),
        "filtered": (_dataset(x, y).filter(lambda a, b: False), None),
    }[empty]
    with pytest.raises(ValueError, match="no (examples|batches)|empty"):
        _distiller().fit(*data, epochs=1, verbose=0)


@pytest.mark.parametrize("empty", ["arrays", "dataset"])
def test_empty_validation_data_is_an_error_before_training(empty):
    x, y = digits_subset(n=64)
    validation = {
        "arrays": (x[:0], y[:0]),
        "dataset": _dataset(x[:0], y[:0]),
    }[empty]
    distiller = _distiller()
    distiller.build(x.shape)
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=r"validation_data.*(no examples|empty)"):
        distiller.fit(x, y, validation_data=validation, epochs=3, verbose=0)
    assert int(distiller.optimizer.iterations) == 0
    assert weights_equal(distiller.student.get_weights(), before)


def test_one_hot_labels_with_a_sparse_loss_say_so():
    x, y = digits_subset(n=32)
    with pytest.raises(ValueError, match=r"look one-hot.*sparse categorical"):
        _distiller().fit(x, keras.utils.to_categorical(y, 10), epochs=1, verbose=0)


def test_a_shape_mismatch_names_the_model():
    x, y = digits_subset(n=32)
    teacher = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10)], name="flat"
    )
    distiller = kd.Distiller(tiny_student(), teacher)
    distiller.compile(optimizer="adam")
    with pytest.raises(
        ValueError, match=r"teacher \(flat\) expects inputs of shape \(None, 64\)"
    ):
        distiller.fit(x, y, epochs=1, verbose=0)


def _softmax_teacher():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="soft",
    )


def test_declared_outputs_that_contradict_the_architecture_are_refused():
    with pytest.raises(
        ValueError,
        match=r"teacher \(soft\) returns probabilities.*teacher_outputs='logits'",
    ):
        kd.Distiller(tiny_student(), _softmax_teacher())
    with pytest.raises(
        ValueError, match=r"returns logits.*teacher_outputs='probabilities'"
    ):
        kd.Distiller(tiny_student(), trained_teacher(), teacher_outputs="probabilities")
    kd.Distiller(tiny_student(), _softmax_teacher(), teacher_outputs="probabilities")


class _SubclassedSoftmax(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return keras.ops.softmax(self.dense(self.flat(x)))


def test_a_subclassed_model_is_checked_on_the_first_batch():
    x, y = digits_subset(n=32)
    teacher = _SubclassedSoftmax(name="sub")
    teacher(x[:1])  # built (unbuilt teachers are refused)
    distiller = kd.Distiller(tiny_student(), teacher)
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"teacher \(sub\) returns probabilities"):
        distiller.fit(x, y, epochs=1, verbose=0)


class _SubclassedStudent(keras.Model):
    """A student whose class count is only known once it runs."""

    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(classes)

    def call(self, x):
        return self.dense(self.flat(x))


@pytest.mark.parametrize("bad", [3.5, 10, -1])
def test_labels_are_checked_for_a_student_of_unknown_class_count(bad):
    x, y = digits_subset(n=64)
    y = y.astype("float32" if bad == 3.5 else "int64")
    y[40] = bad
    distiller = kd.Distiller(_SubclassedStudent(), trained_teacher())
    distiller.compile(optimizer="adam")
    with pytest.raises(
        ValueError,
        match=rf"integers in \[0, 10\).*label value of {bad} in training step 2",
    ):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=rf"label value of {bad} in an evaluation"):
        distiller.evaluate(_dataset(x, y), verbose=0)


def test_lwf_labels_are_checked_against_the_new_head():
    keras.utils.set_random_seed(0)
    old = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = kd.continual.add_task_head(old, 2)  # new head: 2 classes
    lwf = kd.continual.LearningWithoutForgetting(student, old)
    lwf.compile(optimizer="adam")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.array([0, 1, 0, 1, 0, 1, 0, 2])  # 2 is an old-head class, not the new
    with pytest.raises(ValueError, match=r"integers in \[0, 2\).*label value of 2"):
        lwf.fit(x, y, batch_size=8, epochs=1, verbose=0)
    y = y.astype("float32")
    y[-1] = 0.5
    with pytest.raises(ValueError, match=r"label value of 0\.5"):
        lwf.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_labels_of_each_output_are_checked_against_its_head():
    def two_heads(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6,))
        return keras.Model(
            inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(4)(inputs)]
        )

    rng = np.random.default_rng(0)
    x = rng.random((16, 6), "float32")
    y = [rng.integers(0, 3, 16), rng.integers(0, 4, 16)]
    y[1][5] = 3  # fine for the 4-class head
    distiller = kd.Distiller(two_heads(1), two_heads(0))
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    y[0][5] = 3  # too large for the 3-class head
    with pytest.raises(ValueError, match=r"\[0, 3\).*at output 0.*label value of 3"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.sparse_categorical_crossentropy,
        "SparseCategoricalCrossentropy",
        [keras.losses.SparseCategoricalCrossentropy(from_logits=True)],
    ],
    ids=["function", "class-name", "list"],
)
def test_labels_are_checked_whatever_form_the_sparse_loss_takes(loss):
    x, y = digits_subset(n=64)
    y = y.astype("float32")
    y[40] = 3.5
    student, outputs = tiny_student(), "logits"
    if not isinstance(loss, list):  # these read probabilities (from_logits=False)
        student = keras.Sequential([student, keras.layers.Softmax()])
        outputs = "probabilities"
    distiller = kd.Distiller(student, trained_teacher(), student_outputs=outputs)
    distiller.compile(optimizer="adam", loss=loss)
    with pytest.raises(ValueError, match=r"label value of 3\.5 in training step 2"):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_an_opaque_loss_gets_a_readable_label_error():
    x, y = digits_subset(n=64)
    y = y.copy()
    y[40] = 10
    scce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="adam", loss=lambda t, p: scce(t, p))
    with pytest.raises(ValueError, match=r"integers in \[0, 10\).*label value of 10"):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_the_class_the_loss_ignores_is_a_legal_label():
    x, y = digits_subset(n=64)
    y = y.copy()
    y[:5] = -1
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="adam", loss=loss)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)  # also the pre-fit check
    distiller.fit(_dataset(x, y), epochs=1, verbose=0)
    assert np.isfinite(distiller.evaluate(_dataset(x, y), verbose=0)[0])
    y[40] = -2
    with pytest.raises(ValueError, match=r"or -1, the ignored class.*value of -2"):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_on_batch_methods_raise_the_readable_error():
    x, y = digits_subset(n=16)
    distiller = _distiller()
    labels = y.astype("float32")
    labels[3] = 2.5
    for method in (distiller.test_on_batch, distiller.train_on_batch):
        with pytest.raises(ValueError, match=r"label value of 2\.5"):
            method(x, labels)
    bad = x.copy()
    bad.flat[100] = np.inf
    with pytest.raises(
        ValueError, match=r"NaN or infinite in training step 1 .*started in"
    ):
        distiller.train_on_batch(bad, y)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_and_evaluate_warn_when_xla_turns_the_checks_off(jit_compile):
    import warnings

    x, y = digits_subset(n=32)
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer="sgd", jit_compile=jit_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
        distiller.evaluate(x, y, batch_size=32, verbose=0)
    about_xla = [w for w in caught if "jit_compile=False" in str(w.message)]
    assert len(about_xla) == (2 if jit_compile else 0)
    if jit_compile:
        assert "in-step checks" in str(about_xla[0].message)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.5),
        lambda: keras.optimizers.SGD(1e-2, weight_decay=0.5),
        lambda: keras.optimizers.Adam(1e-3, gradient_accumulation_steps=2),
    ],
    ids=["adamw", "sgd_weight_decay", "accumulation"],
)
def test_a_failed_step_changes_no_variable_also_without_its_gradients(optimizer):
    # Weight decay changes the weights without the gradients, gradient
    # accumulation resets its accumulators, and the loss trackers count the
    # batch: none of it may run on a step that fails.
    x, y = digits_subset(n=64)
    x = x.copy()
    x[40] = np.nan
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer=optimizer())
    distiller.fit(x[:32], y[:32], batch_size=32, verbose=0)
    before = [v.numpy().copy() for v in distiller.student.weights]
    slots = [v.numpy().copy() for v in distiller.optimizer.variables]
    with pytest.raises(ValueError, match=r"NaN or infinite in training step"):
        distiller.fit(x[32:], y[32:], batch_size=32, verbose=0)
    assert weights_equal(before, [v.numpy() for v in distiller.student.weights])
    assert weights_equal(slots, [v.numpy() for v in distiller.optimizer.variables])
    # The trackers were reset by this fit() and counted nothing since.
    assert all(float(v.numpy()) == 0.0 for m in distiller.metrics for v in m.variables)


def test_a_label_refused_by_the_kernel_leaves_weight_decay_undone():
    # The kernel's error stops the step; AdamW's decay must not have run.
    x, y = digits_subset(n=96)
    y = y.copy()
    y[80] = 10
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.5))
    seen = []
    snapshot = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            [w.copy() for w in distiller.student.get_weights()]
        )
    )
    with pytest.raises(ValueError, match=r"label value of 10 in training step 3"):
        distiller.fit(_dataset(x, y), verbose=0, callbacks=[snapshot])
    assert weights_equal(seen[-1], distiller.student.get_weights())
    assert int(distiller.optimizer.iterations.numpy()) == 2


def test_the_common_step_checks_in_one_op_without_a_cond():
    # Integer labels on CPU, no sample weights: the kernel checks the labels,
    # and the finite check is one `Assert` op (a `tf.cond` costs several ops
    # on every step; benchmarks/step_cost.py).
    x, y = digits_subset(n=32)
    distiller = _distiller()
    distiller.fit(x, y, batch_size=32, verbose=0)
    step = tf.function(distiller.train_step).get_concrete_function(
        (
            tf.TensorSpec((None, *x.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        )
    )
    types = [op.type for op in step.graph.get_operations()]
    assert types.count("Assert") == 1
    assert not {"If", "StatelessIf"} & set(types)


def test_a_nan_teacher_output_names_the_distillation_term():
    x, y = digits_subset(n=64)
    logits = np.array(trained_teacher()(x), "float32")
    logits[40, 3] = np.nan  # in the second batch
    batches = tf.data.Dataset.from_tensor_slices(
        (x, y, {kd.distiller.TEACHER_LOGITS_KEY: logits})
    ).batch(32)
    distiller = _distiller()
    before = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError) as caught:
        distiller.fit(batches, verbose=0)
    message = str(caught.value)
    assert "in training step 2 (loss nan, student_loss " in message
    assert "gradients NaN or infinite; it started in distillation_loss)" in message
    assert "Look for NaN or inf in the inputs or labels" in message
    # Step 1 trained; step 2 changed nothing.
    assert int(distiller.optimizer.iterations.numpy()) == 1
    assert not weights_equal(before, distiller.student.get_weights())
    assert all(np.isfinite(w).all() for w in distiller.student.get_weights())


def _batch_norm_student():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),
        ]
    )


def test_a_failed_step_leaves_the_batch_norm_statistics_of_the_last_good_step():
    # BatchNormalization updates its moving statistics in the forward pass,
    # before the check: a NaN batch must not leave NaN statistics (and a
    # student that predicts NaN) behind an error that says the weights are
    # those of the last good step. Nor may the dropout seed advance.
    x, y = digits_subset(n=96)
    x = x.copy()
    x[70] = np.nan
    distiller = kd.Distiller(_batch_norm_student(), trained_teacher())
    distiller.compile(optimizer="adam")
    seen = []
    snapshot = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            [v.numpy().copy() for v in distiller.student.variables]
        )
    )
    with pytest.raises(ValueError, match=r"NaN or infinite in training step 3"):
        distiller.fit(_dataset(x, y), verbose=0, callbacks=[snapshot])
    assert len(seen) == 2
    assert weights_equal(seen[-1], [v.numpy() for v in distiller.student.variables])
    assert np.isfinite(distiller.student.predict(x[:32], verbose=0)).all()
    # The deferred updates still apply on good steps.
    distiller.fit(x[:64], y[:64], batch_size=32, verbose=0)
    assert not weights_equal(seen[-1], [v.numpy() for v in distiller.student.variables])


def test_a_failed_step_leaves_the_compiled_metrics_uncounted():
    x, y = digits_subset(n=96)
    x = x.copy()
    x[70] = np.nan
    distiller = _distiller()  # metrics=["accuracy"]
    seen = []
    snapshot = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            [v.numpy().copy() for m in distiller.metrics for v in m.variables]
        )
    )
    with pytest.raises(ValueError, match=r"NaN or infinite in training step 3"):
        distiller.fit(_dataset(x, y), verbose=0, callbacks=[snapshot])
    after = [v.numpy() for m in distiller.metrics for v in m.variables]
    assert weights_equal(seen[-1], after)


@pytest.mark.parametrize("bad", ["nan", "label"])
def test_with_gradient_accumulation_the_error_names_the_batch_that_failed(bad):
    # `optimizer.iterations` counts updates (every 2nd batch here), not steps.
    x, y = digits_subset(n=96)
    x, y = x.copy(), y.copy()
    if bad == "nan":
        x[70] = np.nan
    else:
        y[70] = 10
    distiller = kd.Distiller(tiny_student(), trained_teacher())
    distiller.compile(optimizer=keras.optimizers.Adam(gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match=r"in training step 3\b"):
        distiller.fit(_dataset(x, y), verbose=0)
