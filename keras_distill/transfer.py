"""Transfer distillation: a teacher from a source label space, a student for another."""

import keras
import numpy as np
from keras import ops

from keras_distill import losses as kd_losses
from keras_distill.distiller.wiring import ComposedTeacher, _check_declared_outputs


@keras.saving.register_keras_serializable(package="keras_distill")
class GroupedTeacher(ComposedTeacher, keras.Model):
    """A teacher re-expressed in a target label space by grouping its classes.

    Target class `j` gets the teacher's total probability of the source
    classes `groups[j]`; the output is the log of those probabilities (valid
    logits). Source classes in no group are dropped and the rest is
    renormalised, so a subset of the source classes is a valid target space.
    Grouping happens at temperature 1; the Distiller then softens the grouped
    distribution with its own temperature.

    Reference: Hinton, Vinyals and Dean 2015, section 5 (specialist models
    distilled on grouped classes).

    Args:
        teacher: The trained source-task `keras.Model`.
        groups: For each target class, the list of source class ids.
        teacher_outputs: `"logits"` or `"probabilities"`. Defaults to
            `"logits"`.

    Example:

    ```python
    # digits teacher (10 classes) -> student for "even" vs "odd"
    grouped = kd.transfer.GroupedTeacher(teacher, [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]])
    distiller = kd.Distiller(student_2_classes, grouped)
    ```
    """

    def __init__(self, teacher, groups, teacher_outputs="logits", **kwargs):
        super().__init__(**kwargs)
        kd_losses.check_output_kind(teacher_outputs, "teacher_outputs")
        # Grouping sums probabilities: a softmax read as logits (or back) would
        # group a wrong distribution, which no later check can see.
        _check_declared_outputs("teacher", teacher, teacher_outputs)
        num_source = teacher.output_shape[-1]
        if isinstance(groups, str | bytes | dict):
            raise ValueError(
                "`groups` must be a list of lists of source class ids, one list "
                f"per target class. Received: groups={groups!r}"
            )
        # NumPy integers are class ids too (a bool is not one).
        groups = [
            [
                int(c) if isinstance(c, np.integer) and not isinstance(c, bool) else c
                for c in g
            ]
            for g in groups
        ]
        if not groups:
            raise ValueError("`groups` must name at least one target class.")
        seen = {}
        for j, group in enumerate(groups):
            if not group:
                raise ValueError(
                    f"Target class {j} has an empty group of source classes."
                )
            missing = [
                c
                for c in group
                if isinstance(c, bool)
                or not (isinstance(c, int) and 0 <= c < num_source)
            ]
            if missing:
                raise ValueError(
                    f"Target class {j} references source classes {missing} that the "
                    f"teacher does not have (it predicts classes 0..{num_source - 1})."
                )
            for c in group:
                if c in seen:
                    raise ValueError(
                        f"Source class {c} is in the groups of target classes "
                        f"{seen[c]} and {j}; each source class may be in one group."
                    )
                seen[c] = j
        self.teacher = teacher
        self.groups = groups
        self.teacher_outputs = teacher_outputs
        matrix = [
            [1.0 if seen.get(c) == j else 0.0 for j in range(len(groups))]
            for c in range(num_source)
        ]
        self._matrix = ops.convert_to_tensor(matrix, "float32")

    def call(self, inputs, training=False):
        logits = kd_losses.to_logits(
            self.teacher(inputs, training=training), self.teacher_outputs
        )
        probabilities = ops.softmax(logits, axis=-1)
        grouped = ops.matmul(probabilities, self._matrix)
        grouped = grouped / ops.sum(grouped, axis=-1, keepdims=True)
        return ops.log(ops.maximum(grouped, 1e-12))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.groups))

    def member_teachers(self):
        """The source-task teacher and the kind its outputs are read as."""
        return [(self.teacher, self.teacher_outputs)]

    @property
    def output_shape(self):
        return (None, len(self.groups))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "groups": self.groups,
                "teacher_outputs": self.teacher_outputs,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)
