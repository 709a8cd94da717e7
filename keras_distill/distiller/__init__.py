"""The `Distiller`: a small engine over plug-in terms, split by concern.

- `model`: the `Distiller` itself: wiring of student, teachers, terms and
  hints; the schedulable parameters; `compile` (also keras-io's form).
- `objective`: the loss. `compute_loss_report` is the one hook the step
  calls; it binds the terms to the outputs and teachers.
- `tf_step`: the TensorFlow train and test steps (the guard, deferred
  updates, packed logs).
- `jax_step`: the JAX train and test steps (stateless; the guard selects
  the old state and raises after the step).
- `backends`: picks the step of the running backend; the one error for what
  needs TensorFlow (`BackendNotSupportedError`).
- `step_logs`: the loss trackers and metric results both steps update.
- `batch_checks`: the in-step checks of every batch.
- `fit_checks`: the checks of whole inputs before `fit()`/`evaluate()`.
- `serialization`: config, saving and loading.
- `arguments`: argument checks, term resolution, the other APIs' names.
- `wiring`: facts about the models (outputs, classes, input shapes).
"""

from keras_distill.distiller.arguments import (  # noqa: F401
    _check_term_names,
    check_alpha,
    check_hint_weight,
    check_temperature,
)
from keras_distill.distiller.fit_checks import _warn_if_no_weight  # noqa: F401
from keras_distill.distiller.model import Distiller
from keras_distill.distiller.wiring import (  # noqa: F401
    ComposedTeacher,
    _check_declared_outputs,
    _check_declared_values,
    _last_activation,
    _looks_like,
    _outputs_message,
)
from keras_distill.targets import (  # noqa: F401  (re-exported)
    TEACHER_LOGITS_KEY,
    TOPK_INDICES_KEY,
    TOPK_LOGITS_KEY,
    TOPK_REST_KEY,
)

__all__ = ["Distiller", "check_alpha", "check_hint_weight", "check_temperature"]
