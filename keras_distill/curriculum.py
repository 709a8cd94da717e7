"""Curriculum staging: teacher-scored difficulty, pacing, a staged tf.data input.

Curriculum learning trains on the easiest examples first and adds harder ones
as training goes on (Bengio, Louradour, Collobert and Weston, "Curriculum
Learning", ICML 2009). Following Hacohen and Weinshall ("On The Power of
Curriculum Learning in Training Deep Networks", ICML 2019,
https://arxiv.org/abs/1904.03626), difficulty is scored by a trained teacher,
and a pacing function gives the fraction of the easiest examples used at each
epoch.

The pieces:

- `teacher_difficulty()` scores every example once, in batches, with a
  progress bar (the teacher's loss on the true label, or one minus its
  confidence for unlabeled data);
- `pacing()` returns a schedule of the epoch giving the data fraction, from a
  minimum fraction up to 1.0;
- `Curriculum` holds the examples sorted by difficulty and builds a
  `tf.data.Dataset` that, at the start of every epoch, reads how many of the
  easiest examples to use from a `tf.Variable`, and shuffles within them;
- `keras_distill.callbacks.CurriculumScheduler` sets that variable from the
  pacing schedule during `fit()`.

Example:

```python
curriculum = kd.curriculum.Curriculum.from_teacher(teacher, x_train, y_train)
distiller.fit(
    curriculum.dataset(batch_size=64),
    epochs=10,
    callbacks=[
        kd.callbacks.CurriculumScheduler(
            curriculum, kd.curriculum.pacing("linear", 0.2, 6)
        )
    ],
)
```
"""

import math

import keras
import numpy as np
from keras import ops

from keras_distill import losses as kd_losses
from keras_distill import params as kd_params
from keras_distill import schedules

PACING_KINDS = ("linear", "root", "exponential", "step")


def check_fraction(value, where: str = "fraction") -> float:
    """Returns `value` as a float if it is in (0, 1], else raises ValueError."""
    try:
        fraction = kd_params.to_float(value, "fraction")
    except ValueError:
        raise ValueError(
            f"{where} must be a number in (0, 1]. Received: {value!r}"
        ) from None
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ValueError(f"{where} must be in (0, 1]. Received: {value!r}")
    return fraction


def teacher_difficulty(
    teacher,
    x,
    y=None,
    batch_size: int = 256,
    teacher_outputs: str = "logits",
    verbose="auto",
) -> np.ndarray:
    """Scores how hard each example is for a trained teacher.

    With labels the score is the teacher's cross-entropy on the true label
    (Hacohen and Weinshall 2019); without labels it is `1 - max_c p(c | x)`,
    one minus the teacher's confidence. Higher means harder. The teacher runs
    once over `x`, in batches, through `predict()` (so with its progress bar).

    Args:
        teacher: A trained `keras.Model`, or a `Distiller` (its teacher is
            used).
        x: Inputs, an array (or anything `teacher.predict` accepts that yields
            examples in a fixed order).
        y: Integer labels of shape `(n,)` or `(n, 1)`, or one-hot labels of
            shape `(n, classes)`. `None` for unlabeled data. Defaults to `None`.
        batch_size: Batch size of the scoring pass. Defaults to `256`.
        teacher_outputs: `"logits"` or `"probabilities"`. Ignored for a
            `Distiller`, which knows its teacher's outputs. Defaults to
            `"logits"`.
        verbose: Passed to `predict()`. Defaults to `"auto"`.

    Returns:
        A float32 NumPy array of shape `(n,)`.

    Example:

    ```python
    scores = kd.curriculum.teacher_difficulty(teacher, x_train, y_train)
    ```
    """
    from keras_distill.distiller import Distiller

    if isinstance(teacher, Distiller):
        teacher, teacher_outputs = teacher.teacher, teacher.teacher_outputs
    kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
    labels = None
    if y is not None:
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[-1] > 1:
            labels = labels.argmax(axis=-1)
        labels = labels.reshape(-1).astype("int64")
        first = keras.tree.flatten(x)[0]
        if isinstance(first, np.ndarray) and len(first) != len(labels):
            raise ValueError(
                f"`x` and `y` must hold the same number of examples. Received: "
                f"{len(first)} inputs and {len(labels)} labels."
            )
    outputs = teacher.predict(x, batch_size=batch_size, verbose=verbose)
    logits = kd_losses.to_logits(outputs, teacher_outputs)
    if labels is not None and labels.shape[0] != ops.shape(logits)[0]:
        raise ValueError(
            f"`x` and `y` must hold the same number of examples. Received: "
            f"{ops.shape(logits)[0]} teacher outputs and {labels.shape[0]} labels."
        )
    return _scores_of_batch(logits, labels).astype("float32")


def check_scores(scores, where: str = "`difficulty`", first_index: int = 0):
    """Raises ValueError naming the first example whose score is NaN or infinite.

    A NaN score sorts anywhere: the "easiest" examples would be arbitrary.
    The one rule for the scores a user gives and the values a scorer
    computes them from.

    Args:
        scores: One score per example (or one row of values per example).
        where: What the scores are, for the message.
        first_index: The index of `scores[0]` among all examples (a scorer
            checks batch by batch). Defaults to `0`.
    """
    scores = np.asarray(scores)
    finite = np.isfinite(scores).reshape(len(scores), -1).all(axis=-1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    row = scores[bad[0]].reshape(-1)
    value = float(row[np.flatnonzero(~np.isfinite(row))[0]])
    raise ValueError(
        f"{where} must be finite. Received {value!r} for example "
        f"{first_index + int(bad[0])} ({bad.size} of {len(scores)} examples "
        "here are NaN or infinite)."
    )


@keras.saving.register_keras_serializable(package="keras_distill")
class RootPacing(schedules.Linear):
    """Root pacing: `sqrt(f0^2 + (1 - f0^2) * t)`, fast first, then slower.

    The competence function of Platanios et al., "Competence-based
    Curriculum Learning for Neural Machine Translation", NAACL 2019
    (https://arxiv.org/abs/1903.09848), with `t` the fraction of the ramp
    done. See `pacing("root", ...)`.
    """

    def __init__(self, init_value, end_value, transition_steps, transition_begin=0):
        super().__init__(init_value, end_value, transition_steps, transition_begin)
        if self.init_value < 0 or self.end_value < 0:
            raise ValueError(
                "`RootPacing` needs values >= 0. Received: "
                f"init_value={init_value!r}, end_value={end_value!r}"
            )

    def value(self, t):
        done = schedules.interpolation(t, self.transition_steps, self.transition_begin)
        start, end = self.init_value**2, self.end_value**2
        return ops.sqrt(start + (end - start) * done)


def pacing(
    kind: str, min_fraction: float, epochs: int, num_steps: int = 4
) -> schedules.Schedule:
    """A pacing function: the fraction of the easiest examples used per epoch.

    Every kind starts at `min_fraction` at epoch 0 and reaches 1.0 (all the
    data) at epoch `epochs`, then stays there:

    - `"linear"`: `f0 + (1 - f0) * t`;
    - `"root"`: `sqrt(f0^2 + (1 - f0^2) * t)` (Platanios et al. 2019): adds
      data quickly at first;
    - `"exponential"`: `f0 * (1 / f0) ** t`: adds data slowly at first;
    - `"step"`: fixed steps: `num_steps + 1` levels evenly spaced from `f0` to
      1, each held for `epochs / num_steps` epochs (Hacohen and Weinshall
      2019).

    with `t = min(epoch / epochs, 1)`.

    Args:
        kind: One of `"linear"`, `"root"`, `"exponential"`, `"step"`.
        min_fraction: Fraction of the data at epoch 0, in (0, 1].
        epochs: Epoch at which all the data is used, an int >= 0 (0 uses all
            the data from the start).
        num_steps: Number of increases for `"step"`. Defaults to `4`.

    Returns:
        A `keras_distill.schedules.Schedule` of the epoch.

    Example:

    ```pycon
    >>> schedule = pacing("linear", 0.2, 4)
    >>> [round(schedule(e), 2) for e in range(6)]
    [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]

    ```
    """
    min_fraction = check_fraction(min_fraction, "`min_fraction`")
    epochs = schedules.whole_number(epochs, "epochs")
    if kind == "linear":
        return schedules.linear(min_fraction, 1.0, epochs)
    if kind == "root":
        return RootPacing(min_fraction, 1.0, epochs)
    if kind == "exponential":
        return schedules.exponential(min_fraction, 1.0, epochs)
    if kind == "step":
        num_steps = schedules.whole_number(num_steps, "num_steps")
        if num_steps < 1:
            raise ValueError(f"`num_steps` must be >= 1. Received: {num_steps!r}")
        boundaries = [round(epochs * k / num_steps) for k in range(1, num_steps + 1)]
        values = np.linspace(min_fraction, 1.0, num_steps + 1).tolist()
        return schedules.step(boundaries, values)
    raise ValueError(f"`kind` must be one of {PACING_KINDS}. Received: kind={kind!r}")


def count_for_fraction(fraction: float, num_examples: int) -> int:
    """Number of examples in the easiest `fraction` (at least 1)."""
    # Rounding first keeps e.g. 0.3 * 10 = 3.0000000000000004 at 3.
    return max(1, min(num_examples, math.ceil(round(fraction * num_examples, 6))))


class Curriculum:
    """Training examples sorted from easy to hard, fed as a staged tf.data input.

    `dataset()` returns a `tf.data.Dataset` that, each time it is iterated
    (Keras iterates it once per epoch), reads how many of the easiest
    examples to use from a `tf.Variable` and draws that epoch from them. No
    Python generator and no copy of the data: changing the fraction between
    epochs (`set_fraction`, or the `CurriculumScheduler` callback) takes
    effect at the next epoch.

    Every epoch has the same length, `n` examples (`ceil(n / batch_size)`
    batches, so Keras's progress bar and step counts stay fixed): at fraction
    `f` the epoch cycles through the easiest `ceil(f * n)` examples, each at
    least once, shuffled. As in Hacohen and Weinshall (2019), the pacing
    decides which examples the next steps are drawn from, not how many steps
    an epoch has.

    Shuffles are stateless functions of `(seed, shuffle_key)`. The
    `shuffle_key` variable goes up by one at each pass over the dataset, and
    `CurriculumScheduler` sets it to the epoch index, so a resumed run draws
    the same epochs as an uninterrupted one.

    The arrays are embedded in the input pipeline, so this suits data that
    fits in memory (up to about 2 GB).

    Args:
        x: Inputs, an array or a dict/tuple of arrays with the same first
            dimension.
        y: Labels, or `None` for unlabeled data. Defaults to `None`.
        difficulty: One score per example, higher is harder (e.g. from
            `teacher_difficulty`).
        sample_weight: Optional per-example weights. Defaults to `None`.
        seed: Seed of the shuffles. Defaults to `None` (drawn from NumPy's
            global generator, which `keras.utils.set_random_seed` seeds).

    Example:

    ```python
    curriculum = kd.curriculum.Curriculum(x, y, difficulty=scores)
    curriculum.set_fraction(0.25)           # the easiest quarter
    train_ds = curriculum.dataset(batch_size=64)
    ```
    """

    def __init__(self, x, y=None, difficulty=None, sample_weight=None, seed=None):
        arrays = [a for a in (x, y, sample_weight) if a is not None]
        sizes = {len(a) for a in keras.tree.flatten(arrays)}
        if difficulty is None:
            raise ValueError(
                "`difficulty` is required: one score per example (higher is "
                "harder), e.g. from `teacher_difficulty()`, or use "
                "`Curriculum.from_teacher()`."
            )
        difficulty = np.asarray(difficulty, dtype="float64").reshape(-1)
        sizes.add(len(difficulty))
        if len(sizes) != 1:
            raise ValueError(
                "`x`, `y`, `sample_weight` and `difficulty` must hold the same "
                f"number of examples. Received sizes {sorted(sizes)}."
            )
        self._set_difficulty(difficulty, seed)
        self.x, self.y, self.sample_weight = x, y, sample_weight

    def _set_difficulty(self, difficulty, seed):
        """Checks the scores and sets the order and the pacing state from them."""
        import tensorflow as tf

        if len(difficulty) == 0:
            raise ValueError("A curriculum needs at least one example.")
        check_scores(difficulty)
        self.num_examples = len(difficulty)
        self.difficulty = difficulty
        self.seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)
        # Stable sort: ties keep their original order, so runs are repeatable.
        self.order = np.argsort(difficulty, kind="stable").astype("int64")
        self.count = tf.Variable(
            self.num_examples, dtype=tf.int64, trainable=False, name="curriculum_count"
        )
        self.shuffle_key = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="curriculum_shuffle_key"
        )

    @classmethod
    def from_teacher(
        cls,
        teacher,
        x,
        y=None,
        sample_weight=None,
        batch_size: int = 256,
        teacher_outputs: str = "logits",
        verbose="auto",
        seed=None,
    ):
        """Scores `x` with `teacher_difficulty()` and builds a `Curriculum`.

        Args:
            teacher: A trained `keras.Model` or a `Distiller`.
            x: Inputs.
            y: Labels or `None`. Defaults to `None`.
            sample_weight: Optional per-example weights. Defaults to `None`.
            batch_size: Batch size of the scoring pass. Defaults to `256`.
            teacher_outputs: `"logits"` or `"probabilities"`. Defaults to
                `"logits"`.
            verbose: Passed to `predict()`. Defaults to `"auto"`.
            seed: Seed of the shuffles. Defaults to `None`.
        """
        difficulty = teacher_difficulty(
            teacher, x, y, batch_size, teacher_outputs, verbose=verbose
        )
        return cls(x, y, difficulty, sample_weight, seed=seed)

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.num_examples} examples, "
            f"seed={self.seed}, fraction={self.fraction:g})"
        )

    @property
    def fraction(self) -> float:
        """Fraction of the examples currently used."""
        return int(self.count.numpy()) / self.num_examples

    def set_fraction(self, fraction: float, shuffle_key=None) -> int:
        """Uses the easiest `fraction` of the examples from the next epoch on.

        Args:
            fraction: In (0, 1].
            shuffle_key: If given, the key of the next epoch's shuffle (e.g.
                the epoch index). Defaults to `None` (keep counting).

        Returns:
            The number of examples used (at least 1).
        """
        fraction = check_fraction(fraction, "The curriculum fraction")
        count = count_for_fraction(fraction, self.num_examples)
        self.count.assign(count)
        if shuffle_key is not None:
            self.shuffle_key.assign(int(shuffle_key))
        return count

    def ids_dataset(self, shuffle: bool = True):
        """A dataset of example ids: one epoch drawn from the current subset.

        Each pass reads the count variable, then yields `n` ids cycling over
        the easiest `count` examples (each at least once), shuffled if
        `shuffle`.
        """
        import tensorflow as tf

        order = tf.constant(self.order)
        count, key = self.count, self.shuffle_key
        size, seed = self.num_examples, self.seed

        def epoch_ids(_):
            shuffle_key = key.assign_add(1) - 1
            selected = order[: count.read_value()]
            ids = tf.gather(
                selected, tf.range(size, dtype=tf.int64) % tf.size(selected, tf.int64)
            )
            if shuffle:
                ids = tf.random.experimental.stateless_shuffle(
                    ids, seed=tf.stack([tf.constant(seed, tf.int64), shuffle_key])
                )
            return tf.data.Dataset.from_tensor_slices(ids)

        ids = tf.data.Dataset.range(1).flat_map(epoch_ids)
        return ids.apply(tf.data.experimental.assert_cardinality(size))

    def dataset(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_remainder: bool = False,
    ):
        """The staged input: batches drawn from the easiest examples.

        Args:
            batch_size: Examples per batch. Defaults to `32`.
            shuffle: Whether to reshuffle every epoch. Defaults to `True`.
            drop_remainder: Whether to drop a last, smaller batch. Defaults
                to `False`.

        Returns:
            A `tf.data.Dataset` of `x`, `(x, y)` or `(x, y, sample_weight)`
            batches, `ceil(n / batch_size)` of them per epoch.
        """
        import tensorflow as tf

        if int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size!r}")
        parts = tuple(
            keras.tree.map_structure(tf.constant, a)
            for a in (self.x, self.y, self.sample_weight)
            if a is not None
        )

        def gather(ids):
            batch = tuple(
                keras.tree.map_structure(lambda a: tf.gather(a, ids), part)
                for part in parts
            )
            return batch[0] if len(batch) == 1 else batch

        ids = self.ids_dataset(shuffle=shuffle)
        ids = ids.batch(int(batch_size), drop_remainder=drop_remainder)
        return ids.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )


# Default shuffle buffer of the streamed pipelines, in examples: memory that
# does not grow with the data.
STREAM_SHUFFLE_BUFFER = 10_000


def _stream_parts(element):
    """`(x, y)` of a source element: `x`, `(x,)`, `(x, y)` or `(x, y, w)`."""
    if isinstance(element, tuple | list):
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


def _scores_of_batch(logits, labels, first_index=0):
    """The difficulty scores of one batch of teacher logits (see
    `teacher_difficulty`); `first_index` is the batch's first example."""
    log_probs = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
    check_scores(
        log_probs,
        "The teacher's outputs (as log-probabilities), from which the difficulty "
        "is scored,",
        first_index,
    )
    if labels is None:
        return 1.0 - np.exp(log_probs.max(axis=-1))
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[-1] > 1:
        labels = labels.argmax(axis=-1)
    labels = labels.reshape(-1).astype("int64")
    classes = log_probs.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"Labels must be integers in [0, {classes}). Received labels from "
            f"{labels.min()} to {labels.max()}."
        )
    return -log_probs[np.arange(len(labels)), labels]


class StreamingCurriculum(Curriculum):
    """A curriculum over a `tf.data` source too large for memory.

    Like `Curriculum`, but the examples stay in the source (e.g. TFRecord
    files) and are read again every epoch: only a score, a rank and an
    input fingerprint per example are held in memory (about 80 bytes per
    example at peak, with their copies in the pipeline), and the shuffle
    buffer is bounded. Each epoch streams the source, keeps the
    examples whose difficulty rank is below the current count, cycles
    through them until the epoch has `n` examples (as `Curriculum` does; at
    fraction `f` an epoch reads the source about `1 / f` times), and
    shuffles them in consecutive blocks of `shuffle_buffer` examples
    (stateless permutations of the seed, the epoch and the block, so a
    resumed run draws the epochs an uninterrupted one draws). Examples move
    within their block only: order the files so that a block mixes classes,
    or make `shuffle_buffer` large.

    Examples are identified by their position in the source, which must
    therefore yield them in the same order every time it is iterated (files
    read in a fixed order, no shuffling before this pipeline). Each example's
    input is checked in the pipeline against the fingerprint recorded when
    it was scored, so a source whose order changed fails instead of training
    on the wrong curriculum.

    Use it with `keras_distill.callbacks.CurriculumScheduler` like a
    `Curriculum`.

    Args:
        source: An unbatched `tf.data.Dataset` of examples (`x`, `(x, y)` or
            `(x, y, sample_weight)`), in a fixed order, that can be iterated
            again and again.
        difficulty: One score per example of `source`, in its order
            (higher is harder).
        fingerprints: Per-example input fingerprints, `(n, 2)`, from
            `keras_distill.cache.fingerprints`, checked in the pipeline.
            Defaults to `None` (no check).
        shuffle_buffer: Examples per shuffled block. Defaults to `10_000`.
        seed: Seed of the shuffles. Defaults to `None`.

    Example:

    ```python
    files = sorted(tf.io.gfile.glob("data/train-*.tfrecord"))
    source = tf.data.TFRecordDataset(files).map(parse)   # (x, y), in order
    curriculum = kd.curriculum.StreamingCurriculum.from_teacher(teacher, source)
    distiller.fit(curriculum.dataset(batch_size=256), epochs=10, callbacks=[
        kd.callbacks.CurriculumScheduler(
            curriculum, kd.curriculum.pacing("linear", 0.2, 6)
        )
    ])
    ```
    """

    def __init__(
        self,
        source,
        difficulty,
        fingerprints=None,
        shuffle_buffer=STREAM_SHUFFLE_BUFFER,
        seed=None,
    ):
        import tensorflow as tf

        if not isinstance(source, tf.data.Dataset):
            raise TypeError(
                "`source` must be an unbatched `tf.data.Dataset` of examples. "
                f"Received: {source!r} of type {type(source).__name__}"
            )
        if (
            isinstance(shuffle_buffer, bool)
            or not isinstance(shuffle_buffer, int | np.integer)
            or shuffle_buffer < 1
        ):
            raise ValueError(
                "`shuffle_buffer` must be a whole number >= 1 (examples). "
                f"Received: shuffle_buffer={shuffle_buffer!r}"
            )
        # float64, as `Curriculum`: float32 would make close scores ties and
        # turn a score above 3.4e38 into inf.
        difficulty = np.asarray(difficulty, dtype="float64").reshape(-1)
        if len(difficulty) == 0:
            raise ValueError("A curriculum needs at least one example.")
        count = int(source.cardinality())
        if count >= 0 and count != len(difficulty):
            raise ValueError(
                f"`source` holds {count} examples but `difficulty` has "
                f"{len(difficulty)} scores: one score per example is needed."
            )
        if fingerprints is not None:
            fingerprints = np.asarray(fingerprints, dtype="float64")
            if fingerprints.shape != (len(difficulty), 2):
                raise ValueError(
                    "`fingerprints` must have shape (examples, 2), from "
                    "`kd.cache.fingerprints`. Received shape "
                    f"{fingerprints.shape} for {len(difficulty)} examples."
                )
        self._set_difficulty(difficulty, seed)
        self.source = source
        self.x = self.y = self.sample_weight = None
        self.fingerprints = fingerprints
        self.shuffle_buffer = int(shuffle_buffer)
        self.ranks = np.empty(self.num_examples, "int32")
        self.ranks[self.order] = np.arange(self.num_examples, dtype="int32")

    @classmethod
    def from_teacher(
        cls,
        teacher,
        source,
        batch_size: int = 256,
        teacher_outputs: str = "logits",
        verbose="auto",
        shuffle_buffer=STREAM_SHUFFLE_BUFFER,
        seed=None,
    ):
        """Scores `source` with the teacher in one streamed pass.

        The score is `teacher_difficulty`'s: the teacher's cross-entropy on
        the label, or one minus its confidence for unlabeled examples.
        Each example's input fingerprint is recorded in the same pass.

        Args:
            teacher: A trained `keras.Model` or a `Distiller`.
            source: An unbatched `tf.data.Dataset` of `x`, `(x, y)` or
                `(x, y, sample_weight)`, in a fixed order.
            batch_size: Batch size of the scoring pass. Defaults to `256`.
            teacher_outputs: `"logits"` or `"probabilities"`. Defaults to
                `"logits"`.
            verbose: Progress bar (`"auto"`, 0 or 1). Defaults to `"auto"`.
            shuffle_buffer: Defaults to `10_000`.
            seed: Defaults to `None`.
        """
        import tensorflow as tf

        from keras_distill import cache as kd_cache
        from keras_distill.distiller import Distiller

        if isinstance(teacher, Distiller):
            teacher, teacher_outputs = teacher.teacher, teacher.teacher_outputs
        kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
        if not isinstance(source, tf.data.Dataset):
            raise TypeError(
                "`source` must be an unbatched `tf.data.Dataset` of examples. "
                f"Received: {source!r} of type {type(source).__name__}"
            )

        @tf.function(reduce_retracing=True)
        def logits_of(x):
            return kd_losses.to_logits(teacher(x, training=False), teacher_outputs)

        if keras.backend.backend() != "tensorflow":  # JAX: compiled by predict

            def logits_of(x):
                outputs = teacher.predict_on_batch(ops.convert_to_numpy(x))
                return ops.convert_to_numpy(
                    kd_losses.to_logits(outputs, teacher_outputs)
                )

        cardinality = int(source.cardinality())
        steps = -(-cardinality // int(batch_size)) if cardinality > 0 else None
        bar = keras.utils.Progbar(
            steps, verbose=1 if verbose == "auto" else verbose, unit_name="batch"
        )
        scores, prints = [], []
        batches = source.batch(int(batch_size)).prefetch(2)
        seen = 0
        for step, batch in enumerate(batches):
            x, y = _stream_parts(batch)
            scores.append(_scores_of_batch(logits_of(x), y, seen).astype("float32"))
            seen += len(scores[-1])
            prints.append(kd_cache.fingerprints(ops.convert_to_numpy(x)))
            bar.update(step + 1)
        if not scores:
            raise ValueError("`source` yielded no examples to score.")
        return cls(
            source,
            np.concatenate(scores),
            fingerprints=np.concatenate(prints),
            shuffle_buffer=shuffle_buffer,
            seed=seed,
        )

    def ids_dataset(self, shuffle: bool = True):
        raise NotImplementedError(
            "A StreamingCurriculum reads its examples from its source; use `dataset()`."
        )

    def dataset(
        self,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_remainder: bool = False,
    ):
        """The staged input, streamed: batches from the easiest examples.

        Args:
            batch_size: Examples per batch. Defaults to `32`.
            shuffle: Shuffle (within blocks of `shuffle_buffer` examples)
                every epoch. Defaults to `True`.
            drop_remainder: Drop a last, smaller batch. Defaults to `False`.

        Returns:
            A `tf.data.Dataset` of batches, `ceil(n / batch_size)` per epoch.
        """
        import tensorflow as tf

        from keras_distill import cache as kd_cache
        from keras_distill import checks as kd_checks

        if int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size!r}")
        ranks = tf.constant(self.ranks)
        stored = None if self.fingerprints is None else tf.constant(self.fingerprints)
        count, key = self.count, self.shuffle_key
        size, seed, buffer = self.num_examples, self.seed, self.shuffle_buffer
        source = self.source
        message = (
            f"{kd_checks.PREFIX}The curriculum's source yielded an example that is "
            "not the one scored at its position (fingerprint mismatch): the source "
            "must yield its examples in the same order every time (files in a "
            f"fixed order, no shuffling before the curriculum).{kd_checks.END}"
        )

        def checked(index, element):
            if stored is None:
                return element
            x, _ = _stream_parts(element)
            given = kd_cache._fingerprints_tf(x[None])[0]
            expected = stored[index]
            ok = tf.reduce_all(
                tf.abs(given - expected)
                <= kd_cache._FINGERPRINT_RTOL * (tf.abs(given) + tf.abs(expected) + 1.0)
            )
            with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
                return tf.nest.map_structure(tf.identity, element)

        def epoch(_):
            shuffle_key = key.assign_add(1) - 1
            limit = tf.cast(count.read_value(), tf.int32)
            kept = (
                source.enumerate()
                .filter(lambda i, e: tf.gather(ranks, i) < limit)
                .map(checked)
                .repeat()
                .take(size)
            )
            if not shuffle:
                return kept

            def shuffle_block(index, block):
                # A stateless permutation of (seed, epoch key, block): the same
                # epochs in a resumed run as in an uninterrupted one.
                rows = tf.shape(tf.nest.flatten(block)[0])[0]
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(rows),
                    seed=tf.stack(
                        [tf.constant(seed, tf.int64), shuffle_key * 1_000_003 + index]
                    ),
                )
                return tf.nest.map_structure(lambda a: tf.gather(a, order), block)

            return kept.batch(buffer).enumerate().map(shuffle_block).unbatch()

        ds = tf.data.Dataset.range(1).flat_map(epoch)
        ds = ds.apply(tf.data.experimental.assert_cardinality(size))
        return ds.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(
            tf.data.AUTOTUNE
        )


__all__ = [
    "Curriculum",
    "StreamingCurriculum",
    "STREAM_SHUFFLE_BUFFER",
    "RootPacing",
    "PACING_KINDS",
    "check_fraction",
    "count_for_fraction",
    "pacing",
    "teacher_difficulty",
]
