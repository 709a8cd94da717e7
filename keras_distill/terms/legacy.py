"""The older `keras.losses.Loss` forms of the terms, derived from the terms.

Each is a `TermLoss`: its value is its term's (one code path, the same
checks), and `Distiller(distillation_loss=loss)` uses the term itself. New
code passes the terms (`"kd"`, `kd.terms.KDTerm()`, ...) instead.
"""

import keras

from keras_distill import params as kd_params
from keras_distill.terms.registry import TermLoss, make


def _temperature(value, where):
    return kd_params.check("temperature", value, where)


@keras.saving.register_keras_serializable(package="keras_distill")
class KnowledgeDistillation(TermLoss):
    """Hinton's KD loss as a `keras.losses.Loss`: `y_true` are teacher logits.

    The `"kd"` term (`kd.terms.KDTerm`) at a fixed temperature.

    Args:
        temperature: Softmax temperature `T > 0`. Defaults to `1.0`.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Loss name. Defaults to `"knowledge_distillation"`.

    Example:

    ```python
    loss = kd.losses.KnowledgeDistillation(temperature=4.0)
    value = loss(teacher_logits, student_logits)
    ```
    """

    term_name = "kd"

    def __init__(
        self,
        temperature=1.0,
        reduction="sum_over_batch_size",
        name="knowledge_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _temperature(temperature, "KnowledgeDistillation")

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="keras_distill")
class LogitMSE(TermLoss):
    """The `"mse"` term as a `keras.losses.Loss`: `y_true` are teacher logits.

    Example:

    ```python
    value = kd.losses.LogitMSE()(teacher_logits, student_logits)
    ```
    """

    term_name = "mse"

    def __init__(self, reduction="sum_over_batch_size", name="logit_mse", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_distill")
class DecoupledKD(TermLoss):
    """The `"dkd"` term as a `keras.losses.Loss`.

    `y_true` is a dict `{"teacher_logits": ..., "labels": ...}`.

    Args:
        temperature: Softmax temperature. Defaults to `1.0`.
        alpha: TCKD weight. Defaults to `1.0`.
        beta: NCKD weight. Defaults to `8.0`.

    Example:

    ```python
    loss = kd.losses.DecoupledKD(temperature=4.0, beta=8.0)
    value = loss({"teacher_logits": t, "labels": y}, student_logits)
    ```
    """

    term_name = "dkd"

    def __init__(
        self,
        temperature=1.0,
        alpha=1.0,
        beta=8.0,
        reduction="sum_over_batch_size",
        name="decoupled_kd",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _temperature(temperature, "DecoupledKD")
        self._term = make(self.term_name, alpha=alpha, beta=beta)  # checks both
        self.alpha, self.beta = self._term.alpha, self._term.beta

    def term_options(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def inputs(self, y_true):
        return y_true["teacher_logits"], y_true["labels"]

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="keras_distill")
class HintLoss(TermLoss):
    """The `"mse"` term between features as a `keras.losses.Loss` (FitNets).

    `y_true` are teacher features, `y_pred` the (adapted) student's.

    Reference: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015
    (https://arxiv.org/abs/1412.6550).

    Args:
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Loss name. Defaults to `"hint"`.

    Example:

    ```python
    value = kd.losses.HintLoss()(teacher_features, adapted_student_features)
    ```
    """

    term_name = "mse"

    def __init__(self, reduction="sum_over_batch_size", name="hint", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
