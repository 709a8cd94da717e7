"""Distances between features: mean absolute error and cosine distance
(and mean squared error, the FitNets hint).
"""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _flat, _normalize_rows
from keras_distill.terms.mse import hint_loss
from keras_distill.terms.registry import register

FEATURE_DISTANCES = ("mse", "mae", "cosine")


def feature_distance(teacher_features, student_features, distance: str = "mse"):
    """A distance between features, one value per example.

    Args:
        teacher_features: `(batch, ...)` teacher features.
        student_features: Student features of the same shape.
        distance: `"mse"` (mean squared error over the non-batch axes, the
            FitNets hint), `"mae"` (mean absolute error) or `"cosine"`
            (`1 - cos(student, teacher)` of the flattened features, in
            [0, 2]). Defaults to `"mse"`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    ```pycon
    >>> import numpy as np
    >>> t = np.ones((2, 3), "float32")
    >>> [float(v) for v in feature_distance(t, -t, "cosine")]
    [2.0, 2.0]

    ```
    """
    if distance not in FEATURE_DISTANCES:
        raise ValueError(
            f"`distance` must be one of {FEATURE_DISTANCES}. "
            f"Received: distance={distance!r}"
        )
    if distance == "mse":
        return hint_loss(teacher_features, student_features)
    hint_loss(teacher_features[:0], student_features[:0])  # the shape check
    teacher, student = _flat(teacher_features), _flat(student_features)
    if distance == "mae":
        return ops.mean(ops.abs(student - teacher), axis=-1)
    return 1.0 - ops.sum(_normalize_rows(teacher) * _normalize_rows(student), axis=-1)


@register("cosine", distance="cosine")
@register("mae", distance="mae")
class FeatureDistanceTerm(DistillationTerm):
    """A distance between features (`feature_distance`): MSE, MAE or cosine.

    Args:
        distance: `"mse"`, `"mae"` or `"cosine"`. Defaults to `"mse"`.
        name: Defaults to `"feature_<distance>"`.

    Example:

    ```python
    hint = kd.hints.Hint("conv2", "conv1", loss="cosine")  # uses this term
    ```
    """

    default_name = "feature"
    elementwise = True

    def __init__(self, distance="mse", name=None, **kwargs):
        if distance not in FEATURE_DISTANCES:
            raise ValueError(
                f"`distance` must be one of {FEATURE_DISTANCES}. "
                f"Received: distance={distance!r}"
            )
        super().__init__(name=name or f"feature_{distance}", **kwargs)
        self.distance = distance

    def call(self, teacher, student, labels=None, temperature=None):
        return feature_distance(teacher, student, self.distance)

    def get_config(self):
        return {**super().get_config(), "distance": self.distance}
