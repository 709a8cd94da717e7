"""Curriculum temperature knowledge distillation (Li et al., AAAI 2023)."""

import keras
from keras import ops

from keras_distill import params as kd_params
from keras_distill.terms.base import DistillationTerm
from keras_distill.terms.registry import get_term, register


def gradient_reversal(x, strength):
    """The identity, whose gradient is multiplied by `-strength`.

    Reference: Ganin and Lempitsky, "Unsupervised Domain Adaptation by
    Backpropagation", ICML 2015 (https://arxiv.org/abs/1409.7495).

    Args:
        x: A tensor.
        strength: The reversal strength `lambda >= 0`, a float or scalar
            tensor.
    """
    strength = ops.cast(strength, "float32")

    @ops.custom_gradient
    def reverse(value):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return -strength * upstream

        return value * 1.0, grad

    return reverse(ops.cast(x, "float32"))


@register("ctkd")
class CTKDTerm(DistillationTerm):
    """Curriculum temperature KD (CTKD): a learned, adversarial temperature.

    Wraps a logit term (KD or DKD, with or without logit standardization) and
    replaces the distiller's temperature by a learned one, `T = t_start +
    t_end * sigmoid(theta)`, where `theta` is a trainable variable reached
    through a gradient reversal layer: the student descends the loss while
    the temperature ascends it (it makes the task harder), scaled by the
    reversal strength `lambda`. CTKD raises `lambda` from 0 to 1 with a
    cosine curriculum over the first epochs (the paper: 10): schedule the
    non-trainable `"<name>_reversal"` variable, e.g.
    `kd.callbacks.ParameterScheduler("ctkd_reversal", kd.schedules.cosine(0.0,
    1.0, 10))`. Without a schedule `lambda` stays 0 and `T` stays at its
    initial value.

    Reference: Zheng Li et al., "Curriculum
    Temperature for Knowledge Distillation", AAAI 2023
    (https://arxiv.org/abs/2211.16231). `theta` starts at 1, as in the
    authors' code (so `T` starts at `1 + 20 * sigmoid(1) = 15.6`).

    Args:
        term: The wrapped term: `"kd"`, `"dkd"` or a `DistillationTerm` that
            uses the temperature. Defaults to `"kd"`.
        t_start: The lowest temperature. Defaults to `1.0`.
        t_end: The range above it. Defaults to `20.0`.
        name: Defaults to `"ctkd"`.

    Example:

    ```python
    distiller = kd.Distiller(student, teacher,
                             distillation_loss=kd.losses.CTKDTerm("kd"))
    distiller.fit(x, y, epochs=30, callbacks=[kd.callbacks.ParameterScheduler(
        "ctkd_reversal", kd.schedules.cosine(0.0, 1.0, 10))])
    distiller.distillation_loss.learned_temperature()  # a float
    ```
    """

    default_name = "ctkd"
    reads = ("logits",)

    def __init__(self, term="kd", t_start=1.0, t_end=20.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        term = get_term(term, "term")
        if isinstance(term, CTKDTerm):
            raise ValueError("`term` cannot itself be a CTKDTerm.")
        if not term.uses_temperature:
            raise ValueError(
                f"CTKD learns the temperature of the term it wraps, but {term.name!r} "
                f"({type(term).__name__}) does not use a temperature. Received: "
                f"term={term!r}; wrap 'kd' or 'dkd'."
            )
        self.term = term.for_learned_temperature()
        self.needs_labels = self.term.needs_labels
        self.t_start = kd_params.check("temperature", t_start, "CTKDTerm(t_start)")
        self.t_end = kd_params.Param("t_end", 20.0, 0.0).check(t_end)
        self.theta = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(1.0), name="theta"
        )
        # Checked on every assignment (a schedule's value, a loaded weight).
        self.reversal = kd_params.variable(f"{self.name}_reversal", 0.0)

    def temperature_of(self, theta):
        return self.t_start + self.t_end * ops.sigmoid(theta)

    def learned_temperature(self):
        """The current learned temperature, a Python float."""
        return float(ops.convert_to_numpy(self.temperature_of(self.theta)))

    def parameter_variables(self):
        return {f"{self.name}_reversal": self.reversal}

    def epoch_logs(self):
        return {f"{self.name}_temperature": self.learned_temperature()}

    def call(self, teacher, student, labels=None, temperature=None):
        theta = gradient_reversal(self.theta, self.reversal)
        return self.term.compute(teacher, student, labels, self.temperature_of(theta))

    def get_config(self):
        return {
            **super().get_config(),
            "term": keras.saving.serialize_keras_object(self.term),
            "t_start": self.t_start,
            "t_end": self.t_end,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("term"), dict):
            config["term"] = keras.saving.deserialize_keras_object(config["term"])
        return cls(**config)
