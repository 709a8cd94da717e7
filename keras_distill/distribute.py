"""Training a `Distiller` under `tf.distribute`, including several machines.

Keras 3's `fit()` fails under `tf.distribute.MultiWorkerMirroredStrategy`
when there are two or more workers (keras-team/keras issue 20585). `fit()`
here runs the distiller's own `train_step` under `strategy.run` in that case,
with callbacks, per-epoch checkpoints and the same logs as `Model.fit()`.
Under every other strategy it calls `distiller.fit()` itself.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_distill import callbacks as kd_callbacks
from keras_distill.distiller.backends import check_supported

_CHECKPOINT_PREFIX = "ckpt"


def fit(
    distiller,
    dataset,
    epochs=1,
    validation_data=None,
    callbacks=None,
    checkpoint_dir=None,
    steps_per_epoch=None,
    validation_steps=None,
    verbose="auto",
    strategy=None,
):
    """Trains `distiller` under a `tf.distribute` strategy, resuming if stopped.

    With a `tf.distribute.MultiWorkerMirroredStrategy` of two or more workers,
    where Keras's `fit()` fails, this runs the distiller's `train_step` under
    `strategy.run` in a `tf.function`, one global batch per step. The logs
    (`loss`, `student_loss`, `distillation_loss`, compiled metrics and their
    `val_` versions) are reduced across all replicas as `fit()` reduces them,
    so they equal a single-device run on the same global batches. Callbacks
    get the usual `on_train_begin`, `on_epoch_begin`, `on_train_batch_end`,
    `on_epoch_end` and `on_train_end` calls (and the `on_test_*` calls during
    validation); `distiller.stop_training = True` stops training on every
    worker. The progress bar is shown on the chief only.

    Run the same script in every worker process, each with its own
    `TF_CONFIG`. Every worker must call this function with the same
    arguments; each reads its own share of every global batch.

    With `checkpoint_dir`, the state after each epoch (student, optimizer,
    `alpha`, `temperature`, hint adaptors and `hint_weight` if any, and the
    epoch counter) is saved with
    `tf.train.CheckpointManager`: the chief writes to `checkpoint_dir`, the
    other workers to a temporary folder that they delete right away. Calling
    `fit()` again with the same `checkpoint_dir` resumes after the last
    finished epoch (every worker must be able to read `checkpoint_dir`, e.g.
    a shared file system). A run that had finished resumes at `epochs` and
    trains no further; delete the folder to start afresh.

    Under any other strategy (none, `MirroredStrategy`, or a
    `MultiWorkerMirroredStrategy` with one worker), Keras's `fit()` works and
    is called, with a `kd.callbacks.AtomicBackupAndRestore(checkpoint_dir)`
    callback when `checkpoint_dir` is given (a kill during a backup leaves
    the previous one).

    Args:
        distiller: A compiled `keras_distill.Distiller`, created (with its
            teacher and student) and compiled inside `strategy.scope()`.
        dataset: A `tf.data.Dataset` of global batches (`(x, y)`,
            `(x, y, sample_weight)` or `x`). Its batch size must be divisible
            by the number of replicas.
        epochs: Number of epochs to train for (counting epochs finished before
            a restart). Defaults to `1`.
        validation_data: A `tf.data.Dataset` of global batches evaluated at
            the end of each epoch. Defaults to `None`.
        callbacks: A list of `keras.callbacks.Callback`s. Under several
            workers they run in every worker; let only the chief write files.
            Defaults to `None`.
        checkpoint_dir: Folder for per-epoch checkpoints, resumed from on a
            restart. Defaults to `None` (no checkpoints).
        steps_per_epoch: Global batches per epoch. Defaults to `None`: the
            whole dataset.
        validation_steps: Global batches per validation. Defaults to `None`:
            the whole `validation_data`.
        verbose: `"auto"`, `0`, `1` or `2`, as in `Model.fit()` (shown on the
            chief only). Defaults to `"auto"` (`1`).
        strategy: The `tf.distribute.Strategy`. Defaults to `None`: the
            strategy in scope, else the one the distiller was created under.

    Returns:
        A `keras.callbacks.History` with the epochs run by this call.

    Example:

    ```python
    # The same script in every worker; TF_CONFIG names the cluster and the
    # worker's own index.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        distiller = kd.Distiller(student=build_student(), teacher=build_teacher())
        distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = kd.distribute.fit(
        distiller, train_ds, epochs=10, validation_data=val_ds,
        checkpoint_dir="/shared/run1/checkpoints",
    )
    ```
    """
    check_supported(
        "`kd.distribute.fit` (`tf.distribute` strategies)",
        "On JAX, train with `distiller.fit()` and distribute with "
        "`keras.distribution` (e.g. `keras.distribution.set_distribution("
        "keras.distribution.DataParallel())` before building the models), or "
        "use KERAS_BACKEND=tensorflow.",
    )
    if strategy is None:
        if tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
        else:
            strategy = distiller.distribute_strategy
    _check_dataset(dataset, "dataset")
    if validation_data is not None:
        _check_dataset(validation_data, "validation_data")
    arguments = dict(
        epochs=epochs,
        validation_data=validation_data,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        verbose=verbose,
    )
    if not uses_custom_loop(strategy):
        return _keras_fit(distiller, dataset, strategy=strategy, **arguments)
    return _MultiWorkerLoop(distiller, strategy).fit(dataset, **arguments)


def num_workers(strategy):
    """The number of worker processes (chief included) of `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", ())) + len(spec.get("chief", ())))


def uses_custom_loop(strategy):
    """Whether `fit()` uses its own loop (True) or Keras's `fit()` (False).

    Keras's `fit()` fails under a `MultiWorkerMirroredStrategy` of two or more
    workers; it works with one worker and under the other strategies.
    """
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and num_workers(strategy) > 1
    )


def _check_dataset(data, name):
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            f"`{name}` must be a `tf.data.Dataset` of global batches (e.g. "
            f"`tf.data.Dataset.from_tensor_slices((x, y)).batch(64)`). "
            f"Received: {name} of type {type(data).__name__}"
        )


def _check_created_in_scope(distiller, strategy):
    variables = [
        *distiller.trainable_variables,
        *distiller.student.non_trainable_variables,
        *distiller.parameter_variables().values(),
    ]
    for variable in variables:
        value = getattr(variable, "value", variable)
        if not strategy.extended.variable_created_in_scope(value):
            raise ValueError(
                "The distiller must be created (with its student and teacher) "
                "and compiled inside `strategy.scope()` of the strategy it "
                f"trains under ({type(strategy).__name__}). Variable "
                f"{variable.path!r} was created outside it. Create it with "
                "`with strategy.scope(): distiller = kd.Distiller(...); "
                "distiller.compile(...)`."
            )
    if distiller.optimizer is None:
        raise ValueError(
            "The distiller must be compiled (inside `strategy.scope()`) "
            "before training. Call `distiller.compile(optimizer=...)`."
        )


def _first_batch_size(dataset):
    """The size of the dataset's first batch, or None if it is empty."""
    spec = tf.nest.flatten(dataset.element_spec)[0]
    if spec.shape.rank and spec.shape[0] is not None:
        return int(spec.shape[0])
    for batch in dataset.take(1):
        return int(tf.shape(tf.nest.flatten(batch)[0])[0])
    return None


def _check_batch_size(dataset, name, replicas):
    size = _first_batch_size(dataset)
    if size is not None and size % replicas:
        raise ValueError(
            f"The global batch size of `{name}` ({size}) must be divisible by "
            f"the number of replicas ({replicas}), so that every replica gets "
            f"the same number of examples. Batch the dataset by a multiple of "
            f"{replicas}."
        )


def _keras_fit(distiller, dataset, checkpoint_dir, strategy, callbacks, **kwargs):
    callbacks = list(callbacks or [])
    if checkpoint_dir is not None:
        # Keras's BackupAndRestore rewrites its file in place: a kill during a
        # backup leaves none that loads. This one writes beside and swaps.
        callbacks.append(
            kd_callbacks.AtomicBackupAndRestore(checkpoint_dir, delete_checkpoint=False)
        )
    with strategy.scope():
        return distiller.fit(dataset, callbacks=callbacks, shuffle=False, **kwargs)


class _MultiWorkerLoop:
    """`fit()` for a `MultiWorkerMirroredStrategy` of several workers."""

    def __init__(self, distiller, strategy):
        _check_created_in_scope(distiller, strategy)
        self.distiller = distiller
        self.strategy = strategy
        self.is_chief = strategy.extended.should_checkpoint
        resolver = strategy.cluster_resolver
        self.task = f"{resolver.task_type}_{resolver.task_id}"
        with strategy.scope():
            if not distiller.optimizer.built:
                distiller.optimizer.build(distiller.trainable_variables)
        self.train_function = self._make_function(distiller.train_step)
        self.test_function = self._make_function(distiller.test_step)
        self.sum_function = self._make_sum_function()

    def _make_function(self, step):
        strategy = self.strategy

        @tf.function
        def one_step(iterator):
            outputs = strategy.run(step, args=(next(iterator),))
            # As Keras's trainer does ("auto" reduction): the mean over all
            # replicas of every worker.
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), outputs
            )

        return one_step

    def _any_worker(self, flag):
        """True on every worker if `flag` is True on any worker."""
        return bool(self._sum_across_workers(float(flag)) > 0)

    def _sum_across_workers(self, value):
        """The sum of a Python number over the workers (a collective op)."""
        return float(self.sum_function(tf.constant(value, tf.float32)))

    def _make_sum_function(self):
        strategy = self.strategy
        local_replicas = strategy.num_replicas_in_sync // num_workers(strategy)

        @tf.function
        def total(value):
            per_replica = strategy.run(lambda: value / local_replicas)
            return strategy.reduce("SUM", per_replica, axis=None)

        return total

    def _metrics(self):
        return {
            k: float(keras.ops.convert_to_numpy(v))
            for k, v in self.distiller.get_metrics_result().items()
        }

    def _reset_metrics(self):
        for metric in self.distiller.metrics:
            metric.reset_state()

    def _run_epoch(self, function, dataset, steps, on_batch):
        """Runs `function` on up to `steps` global batches; returns the count.

        `on_batch` is `(begin(step), end(step, logs), should_stop())`.
        """
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        step = 0
        while steps is None or step < steps:
            on_batch[0](step)
            try:
                logs = function(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                break
            logs = {k: float(v) for k, v in logs.items()}
            on_batch[1](step, logs)
            step += 1
            if on_batch[2]():
                break
        return step

    def _evaluate(self, data, steps, callbacks):
        self._reset_metrics()
        callbacks.on_test_begin()
        self._run_epoch(
            self.test_function,
            data,
            steps,
            (callbacks.on_test_batch_begin, callbacks.on_test_batch_end, bool),
        )
        logs = self._metrics()
        callbacks.on_test_end(logs)
        return logs

    def fit(
        self,
        dataset,
        epochs,
        validation_data,
        callbacks,
        checkpoint_dir,
        steps_per_epoch,
        validation_steps,
        verbose,
    ):
        distiller, strategy = self.distiller, self.strategy
        # The checks `Distiller.fit()` makes of a teacher cache's dataset.
        distiller._check_precomputed_teacher(dataset)
        if validation_data is not None:
            distiller._check_precomputed_teacher(validation_data)
        replicas = strategy.num_replicas_in_sync
        _check_batch_size(dataset, "dataset", replicas)
        if validation_data is not None:
            _check_batch_size(validation_data, "validation_data", replicas)
        if steps_per_epoch is None:
            cardinality = int(dataset.cardinality())
            if cardinality == tf.data.INFINITE_CARDINALITY:
                raise ValueError("`dataset` is infinite: pass `steps_per_epoch`.")
            if cardinality >= 0:
                steps_per_epoch = cardinality
        if verbose == "auto":
            verbose = 1
        checkpoint = _Checkpoint(self, checkpoint_dir)
        initial_epoch = checkpoint.restore()

        callbacks = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=bool(verbose) and self.is_chief,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch,
            model=distiller,
        )
        history = next(
            c for c in callbacks.callbacks if isinstance(c, keras.callbacks.History)
        )
        distiller.stop_training = False
        epoch_logs = {}
        callbacks.on_train_begin()
        try:
            for epoch in range(initial_epoch, epochs):
                self._reset_metrics()
                callbacks.on_epoch_begin(epoch)
                self._run_epoch(
                    self.train_function,
                    dataset,
                    steps_per_epoch,
                    (
                        callbacks.on_train_batch_begin,
                        callbacks.on_train_batch_end,
                        lambda: self._any_worker(distiller.stop_training),
                    ),
                )
                epoch_logs = self._metrics()
                if validation_data is not None:
                    val_logs = self._evaluate(
                        validation_data, validation_steps, callbacks
                    )
                    epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
                checkpoint.save(epoch + 1)
                callbacks.on_epoch_end(epoch, epoch_logs)
                if self._any_worker(distiller.stop_training):
                    distiller.stop_training = True
                    break
        finally:
            checkpoint.close()
        callbacks.on_train_end(logs=epoch_logs)
        return history


class _Checkpoint:
    """Per-epoch `tf.train.Checkpoint`s, saved the multi-worker way."""

    def __init__(self, loop, directory):
        self.loop = loop
        self.directory = directory
        if directory is None:
            return
        distiller = loop.distiller
        with loop.strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        state = dict(distiller.training_state(), epoch=self.epoch)
        self.checkpoint = tf.train.Checkpoint(**state)
        if loop.is_chief:
            self.write_dir = directory
        else:
            # Every worker must save (saving is collective), but only the
            # chief's copy is kept.
            self.write_dir = os.path.join(
                tempfile.gettempdir(),
                f"keras_distill_{loop.task}_{os.getpid()}",
            )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.write_dir,
            max_to_keep=2,
            checkpoint_name=_CHECKPOINT_PREFIX,
        )

    def restore(self):
        """Restores the chief's last checkpoint; returns its epoch count."""
        if self.directory is None:
            return 0
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is not None:
            try:  # The parameter variables refuse a bad restored value.
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except ValueError as error:
                raise ValueError(
                    f"The checkpoint {latest!r} holds an invalid parameter: {error}"
                ) from None
        epoch = int(self.epoch.numpy())
        loop = self.loop
        total = loop._sum_across_workers(epoch)
        if total != epoch * num_workers(loop.strategy):
            raise RuntimeError(
                f"The workers resumed from different epochs (this one from "
                f"epoch {epoch}). Every worker must be able to read the "
                f"chief's checkpoint_dir {self.directory!r} (a shared folder)."
            )
        return epoch

    def save(self, epoch):
        if self.directory is None:
            return
        self.epoch.assign(epoch)
        self.manager.save(checkpoint_number=epoch)
        if not self.loop.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def close(self):
        if self.directory is not None and not self.loop.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
