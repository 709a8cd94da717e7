"""The batch format for precomputed teacher outputs.

A batch may end with a dict of the teacher's outputs computed ahead of time
(by `keras_distill.cache.TeacherCache` or the tuner), so that the training
step does not run the teacher:

- dense: `{"teacher_logits": (batch, classes)}`;
- top-k: `{"teacher_topk_logits": (batch, k), "teacher_topk_indices":
  (batch, k), "teacher_rest_logsumexp": (batch,)}`: the k largest logits,
  their class ids, and the log-sum-exp of the other logits (see
  `keras_distill.losses.topk_kd_loss`).

The producers (cache, tuner) and the consumer (`Distiller`) import the keys
from here.

Example:

```python
batch = (x, y, {kd.targets.TEACHER_LOGITS_KEY: logits})
x, y, sample_weight, targets = kd.targets.unpack_batch(batch)
```
"""

import keras

TEACHER_LOGITS_KEY = "teacher_logits"
TOPK_LOGITS_KEY = "teacher_topk_logits"
TOPK_INDICES_KEY = "teacher_topk_indices"
TOPK_REST_KEY = "teacher_rest_logsumexp"


def is_targets(value) -> bool:
    """Whether `value` is a dict of precomputed teacher outputs."""
    return isinstance(value, dict) and (
        TEACHER_LOGITS_KEY in value or TOPK_LOGITS_KEY in value
    )


def is_topk(targets) -> bool:
    """Whether `targets` holds the top-k form."""
    return targets is not None and TOPK_LOGITS_KEY in targets


def unpack_batch(data):
    """Splits a batch into `(x, y, sample_weight, teacher_targets)`.

    Accepts `x`, `(x,)`, `(x, y)`, `(x, y, sample_weight)`, each optionally
    followed by a dict of precomputed teacher outputs. `teacher_targets` is
    `None` when the batch carries none.
    """
    teacher_targets = None
    if isinstance(data, tuple | list) and data and is_targets(data[-1]):
        teacher_targets = data[-1]
        data = tuple(data[:-1])
        if len(data) == 1:
            data = data[0]
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    return x, y, sample_weight, teacher_targets


# The attribute holding a producer's mark (`mark`).
_MARK_ATTRIBUTE = "_keras_distill_producer"


class ProducerMark:
    """What the `Distiller` asks of a producer's dataset (see `mark`).

    Args:
        check_teacher: `check_teacher(teacher)` raises unless `teacher`
            computed the dataset's teacher outputs.
        readable_error: Optional `readable_error(error)`: for a TensorFlow
            error raised while the dataset is read, the exception to raise
            instead (naming the problem), or `None`. Defaults to `None`.
    """

    def __init__(self, check_teacher, readable_error=None):
        self.check_teacher = check_teacher
        self.readable_error = readable_error or (lambda error: None)


def mark(dataset, check_teacher, readable_error=None) -> None:
    """Marks a producer's `tf.data.Dataset` of precomputed teacher outputs.

    The `Distiller` runs `check_teacher(teacher)` once before `fit()` or
    `evaluate()` on `dataset` or on any dataset made from it (`take`,
    `repeat`, ...), in Python: no step pays for it. A TensorFlow error
    while it trains on it goes through `readable_error` (see `ProducerMark`).
    """
    setattr(dataset, _MARK_ATTRIBUTE, ProducerMark(check_teacher, readable_error))


def marks_of(dataset) -> list:
    """The `ProducerMark`s of `dataset` and of the datasets it is made from."""
    from keras_distill import _compat

    found, seen, stack = [], set(), [dataset]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found_mark = getattr(node, _MARK_ATTRIBUTE, None)
        if found_mark is not None:
            found.append(found_mark)
            continue  # what it is made from is the producer's
        stack.extend(_compat.dataset_inputs(node))
    return found
