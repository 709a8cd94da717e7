"""Activation-based attention transfer (Zagoruyko and Komodakis, ICLR 2017)."""

from keras import ops

from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.common import _flat, _normalize_rows
from keras_distill.terms.registry import register


def attention_map(features, p: int = 2):
    """`vec(sum_c |A_c|^p)`, L2-normalised: the attention map of AT.

    Args:
        features: `(batch, height, width, channels)` (channels last), or
            `(batch, length, channels)`.
        p: The power. Defaults to `2`.
    """
    features = ops.cast(features, "float32")
    energy = ops.sum(ops.abs(features) ** p, axis=-1)
    return _normalize_rows(_flat(energy))


def attention_transfer_loss(teacher_features, student_features, p: int = 2):
    """Activation-based attention transfer (AT), one value per example.

    `|| Q_S / ||Q_S|| - Q_T / ||Q_T|| ||_2` with `Q = vec(sum_c |A_c|^p)`
    (the paper's eq. 2 without its `beta / 2`; set that with the term's
    weight). Channels may differ; the spatial sizes must match.

    Reference: Zagoruyko and Komodakis, "Paying More Attention to Attention",
    ICLR 2017 (https://arxiv.org/abs/1612.03928).

    Args:
        teacher_features: `(batch, height, width, channels)` teacher features.
        student_features: `(batch, height, width, channels')` student features.
        p: The power of the attention map. Defaults to `2`.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    t_shape, s_shape = tuple(teacher_features.shape), tuple(student_features.shape)
    if min(len(t_shape), len(s_shape)) < 3:
        # The map sums the channels: of (batch, units) features it is one
        # number per example, normalised to 1, so the loss would always be 0.
        raise ValueError(
            "Attention transfer needs feature maps with spatial axes, e.g. "
            "(batch, height, width, channels); flat features give a constant map "
            f"and a loss of 0. Received: teacher features of shape {t_shape}, "
            f"student features of shape {s_shape}. Hint a convolutional layer, "
            "or use loss='mse' for flat features."
        )
    if len(t_shape) != len(s_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(t_shape[1:-1], s_shape[1:-1])
    ):
        raise ValueError(
            "Attention transfer needs features with the same spatial size. "
            f"Received: teacher features of shape {t_shape}, student features "
            f"of shape {s_shape}."
        )
    diff = attention_map(student_features, p) - ops.stop_gradient(
        attention_map(teacher_features, p)
    )
    return ops.sqrt(ops.maximum(ops.sum(ops.square(diff), axis=-1), 1e-12))


@register("at")
class AttentionTransferTerm(DistillationTerm):
    """Attention transfer (`attention_transfer_loss`; Zagoruyko and Komodakis 2017).

    Args:
        p: The power of the attention map. Defaults to `2`.
        name: Defaults to `"at"`.

    Example:

    ```python
    # Same height and width; the channel counts may differ.
    hint = kd.hints.Hint("conv2", "conv1", loss=kd.losses.AttentionTransferTerm(),
                         adaptor=None)
    ```
    """

    default_name = "at"
    reads = ("features",)

    def __init__(self, p=2, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"`p` must be an integer >= 1. Received: p={p!r}")
        self.p = p

    def call(self, teacher, student, labels=None, temperature=None):
        return attention_transfer_loss(teacher, student, self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.p}
