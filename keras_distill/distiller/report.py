"""`LossReport`: a batch's loss by name, what the step's one hook returns."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class LossReport:
    """The loss of one batch, by name (returned by `compute_loss_report`).

    Attributes:
        total: The loss the optimizer minimises (a float32 scalar).
        distillation_loss: The weighted sum of the terms.
        student_loss: The hard-label loss, or `None` for a batch without
            labels.
        hint_loss: The hints' loss, or `None` without hints.
        hint_losses: `{hint log name: its batch mean}` (`hints.log_names`).
        term_losses: `{term name: its batch mean}`, in the terms' order.
        term_weights: `{term name: its weight}` (a variable, or 1.0).

    Example:

    ```python
    report = distiller.compute_loss_report(x, y, distiller(x))
    report.logs()  # {"loss": ..., "student_loss": ..., "distillation_loss": ...}
    ```
    """

    total: Any
    distillation_loss: Any
    student_loss: Any = None
    hint_loss: Any = None
    hint_losses: dict = dataclasses.field(default_factory=dict)
    term_losses: dict = dataclasses.field(default_factory=dict)
    term_weights: dict = dataclasses.field(default_factory=dict)

    def logs(self):
        """`{log name: value}`: `loss`, `student_loss`, `distillation_loss`,
        `hint_loss`, `<term>_loss` (with several terms) and
        `hint_<layer>_loss` (with several hints), those present."""
        logs = {"loss": self.total}
        if self.student_loss is not None:
            logs["student_loss"] = self.student_loss
        logs["distillation_loss"] = self.distillation_loss
        if self.hint_loss is not None:
            logs["hint_loss"] = self.hint_loss
        if len(self.term_losses) > 1:
            logs.update({f"{n}_loss": v for n, v in self.term_losses.items()})
        if len(self.hint_losses) > 1:
            logs.update(self.hint_losses)
        return logs
