"""The term contract: `DistillationTerm`, and what a term declares of itself.

A term is one distillation method: a `keras.layers.Layer` that compares the
teacher's and the student's outputs (logits) or features and returns one
value per example. It *declares* what it needs and supports as class
attributes and methods; the engine (`keras_distill.distiller`, the teacher
cache, LwF, the tuner, the YAML config) reads only these declarations and
never names a concrete term class.
"""

import keras
from keras import ops

from keras_distill.terms.common import reduce_per_example

SOURCES = ("logits", "features")


@keras.saving.register_keras_serializable(package="keras_distill")
class DistillationTerm(keras.layers.Layer):
    """Base class of a distillation term: one value per example.

    A term compares the teacher's and the student's outputs (logits, for the
    `Distiller`'s `distillation_loss`) or features (in a
    `keras_distill.hints.Hint`). Subclasses implement `call(teacher,
    student, labels=None, temperature=None)` and return a float32 tensor of
    shape `(batch,)`; the distiller averages it with the sample weights
    (`reduce_per_example`) and logs it as `<name>_loss` when it has several
    terms. `labels` are the batch's labels, or `None` for a batch without
    labels; `temperature` is the distiller's current temperature (a scalar
    tensor; a term may ignore it). Teacher and student arrive as float32,
    the teacher's already without gradient.

    A term is a `keras.layers.Layer`: it is saved with the distiller (its
    config through `get_config`, any variables it creates with the
    distiller's weights) and may hold trainable variables, which train with
    the student. Register a subclass with `kd.terms.register("name")` (it
    then has a name usable in Python, YAML configs and the tuner, and is
    serializable) or with `keras.saving.register_keras_serializable()`;
    return every `__init__` argument from `get_config()`.

    What a term declares (class attributes, or properties where the answer
    depends on the instance's options):

    - `default_name`: the name of an instance made without `name=`, and so
      the key of its loss in the logs (`"<name>_loss"`) and of its weight
      variable (`"<name>_weight"`).
    - `reads`: the outputs it can compare, a tuple of `"logits"` (the
      models' outputs: `distillation_loss=`) and `"features"` (intermediate
      layers: `Hint(loss=)`).
    - `needs_labels`: whether `call()` needs `labels` (like DKD); batches
      without labels are refused with a clear error.
    - `elementwise`: whether teacher and student must have the same shape
      (a distance between features). In a hint with `adaptor=None`, a term
      that is not elementwise (RKD, PKT, SP, AT) gets the features as they
      are, whatever their widths.
    - `uses_temperature`: whether its value depends on `temperature`.
    - `accepts_topk`: whether it can be computed from a top-k teacher cache
      (then it implements `compute_topk`).
    - `relational`: whether an example's value depends on the other
      examples of the batch (RKD, PKT, SP, DIST's inter-class relation):
      the teacher cache still works; a shuffled batch gives other values.
    - `closed_form`: None, or the name of a closed form the engine may
      compute in the term's place, value and student gradient, where it
      is the same term: `"forward_kl"`, `T^2 * KL(softmax(t / T) ||
      softmax(s / T))` with the student gradient `T * (softmax(s / T) -
      softmax(t / T))` (the plain KD term; the token-level pass then needs
      no autodiff, `distiller.chunked`).

    And what it owns: `parameter_variables()` (schedulable variables, e.g.
    CTKD's reversal strength), `epoch_logs()` (values written into each
    epoch's logs, e.g. CTKD's learned temperature) and
    `for_learned_temperature()` (a version of itself whose gradient
    reaches a learned temperature).

    Args:
        name: The term's name, a Python identifier. Defaults to the class's
            `default_name`.
        **kwargs: Passed to `keras.layers.Layer`.

    Example:

    ```python
    @kd.terms.register("l1", package="my_project")
    class L1Logits(kd.terms.DistillationTerm):
        default_name = "l1"

        def call(self, teacher, student, labels=None, temperature=None):
            return keras.ops.mean(keras.ops.abs(teacher - student), axis=-1)

    distiller = kd.Distiller(student, teacher,
                             distillation_loss=["kd", "l1"],
                             distillation_loss_weights=[0.7, 0.3])
    ```
    """

    default_name = "term"
    reads = SOURCES
    needs_labels = False
    elementwise = False
    uses_temperature = False
    accepts_topk = False
    relational = False
    closed_form = None

    def __init__(self, name=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name or self.default_name, **kwargs)

    def call(self, teacher, student, labels=None, temperature=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(teacher, student, "
            "labels=None, temperature=None)` returning one value per example."
        )

    # -- What the term owns ----------------------------------------------------

    def parameter_variables(self):
        """`{name: variable}` of the term's schedulable parameters."""
        return {}

    def epoch_logs(self):
        """`{name: float}` written into each epoch's logs (e.g. a learned value)."""
        return {}

    def for_learned_temperature(self):
        """This term, computed so that a gradient reaches the temperature.

        A term whose gradient skips the temperature (a closed-form gradient,
        like the KD term's) returns a copy that differentiates the formula;
        CTKD calls it on the term it wraps. The default is the term itself.
        """
        return self

    def matches_keras_loss(self, loss):
        """Whether `loss` (a `keras.losses` object or name) is this term.

        The keras-io example passes `compile(distillation_loss_fn=...)`;
        the distiller accepts it when its one term says it is that loss.
        """
        return False

    # -- Computing ---------------------------------------------------------------

    def compute(self, teacher, student, labels=None, temperature=1.0):
        """Calls the term on float32 inputs and checks it returns `(batch,)`."""
        self._check_labels_given(labels)
        value = self(
            ops.cast(teacher, "float32"),
            ops.cast(student, "float32"),
            labels=labels,
            temperature=ops.cast(temperature, "float32"),
        )
        return self._checked_per_example(value)

    def reduced(
        self, teacher, student, labels=None, temperature=1.0, sample_weight=None
    ):
        """The term averaged over the batch with the sample weights, a scalar.

        `reduce_per_example(self.compute(...), sample_weight)`; a subclass
        may compute the same value in fewer ops (`KDTerm` does).
        """
        return reduce_per_example(
            self.compute(teacher, student, labels, temperature), sample_weight
        )

    def compute_topk(self, targets, student, labels=None, temperature=1.0):
        """The term from a top-k teacher cache, one value per example.

        `targets` is the batch's dict of top-k teacher outputs (see
        `keras_distill.targets`). Only terms with `accepts_topk` implement
        it.
        """
        raise NotImplementedError(
            f"The distillation term {self.name!r} ({type(self).__name__}) cannot "
            "be computed from a top-k teacher cache."
        )

    def _check_labels_given(self, labels):
        if self.needs_labels and labels is None:
            raise ValueError(
                f"The distillation term {self.name!r} ({type(self).__name__}) "
                "needs labels (e.g. DKD separates the true class); received a "
                "batch without labels. Train on (x, y) batches or choose a term "
                "that does not need labels, such as 'kd'."
            )

    def _checked_per_example(self, value):
        if not hasattr(value, "shape") or len(value.shape) != 1:
            shape = getattr(value, "shape", None)
            raise ValueError(
                f"The distillation term {self.name!r} ({type(self).__name__}) must "
                "return one value per example, a tensor of shape (batch,). It "
                f"returned {'a ' + type(value).__name__ if shape is None else shape}."
            )
        return ops.cast(value, "float32")
