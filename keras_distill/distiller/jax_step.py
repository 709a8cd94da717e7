"""The JAX step: stateless `train_step`/`test_step`, the guard by selection.

Keras's JAX trainer calls `train_step(state, data)` with every variable's
value in `state` and assigns the returned state back at the end of the
epoch (`keras/src/backend/jax/trainer.py`). This step is stateless as that
one is: the student, the teachers and the loss run inside a
`keras.StatelessScope` mapping the variables to the state, under
`jax.value_and_grad`; the optimizer applies the gradients with
`stateless_apply`; the trackers and compiled metrics update in a scope of
their own.

The guard: a traced JAX function can neither stop itself nor format a
message. The step computes the same checks as the TensorFlow step (labels,
sample weights, a non-finite loss or gradient sum) as flags, and returns
for every variable `where(ok, new, old)`: a bad step changes nothing. After
the step, in Python, `_checked` reads the flags and raises the TensorFlow
step's `ValueError` (its message formatted from the values the step
returned), with the unchanged state as the one `fit()` keeps.
"""

import keras
from keras import ops

from keras_distill import _compat
from keras_distill import checks as kd_checks
from keras_distill.distiller.batch_checks import nonfinite_problem
from keras_distill.distiller.step_logs import StepLogs

_GUARD = "keras_distill/guard"  # the key of the step's own outputs in its logs


class JaxStep(StepLogs):
    """The `Distiller`'s train and test steps on JAX (a mixin)."""

    def train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_values, metric_values = state
        x, y, sample_weight, teacher_targets = self.unpack_batch(data)
        layout, named_order = [], []

        def loss_fn(trainable_values):
            mapping = [
                *zip(self.trainable_variables, trainable_values),
                *zip(self.non_trainable_variables, non_trainable),
                *zip(self.optimizer.variables, optimizer_values),
            ]
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as s:
                step = ops.convert_to_tensor(_compat.step_count(self.optimizer))
                problems, fixed_y, weights, y_pred, report = self._batch_losses(
                    x, y, sample_weight, teacher_targets, True, step
                )
                scaled = self.optimizer.scale_loss(report.total)
                checks = _problem_outputs(problems, layout)
            updated = [
                _current(s, v, old)
                for v, old in zip(self.non_trainable_variables, non_trainable)
            ]
            named_order[:] = list(report.logs())
            aux = (y_pred, report.logs(), fixed_y, weights, checks, step, updated)
            return scaled, aux

        (_, aux), gradients = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        y_pred, named, fixed_y, weights, checks, step, updated = aux
        new_trainable, new_optimizer = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        logs, new_metrics = self._stateless_logs(
            metric_values, x, fixed_y, y_pred, weights, named
        )
        flags = [ops.isfinite(named["loss"])]
        gradient_sum = None
        # As on TensorFlow: a `LossScaleOptimizer` handles its own overflows.
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            gradient_sum = sum(
                ops.sum(ops.cast(g, "float32")) for g in jax.tree.leaves(gradients)
            )
            flags.append(ops.isfinite(gradient_sum))
        finite = ops.all(ops.stack(flags))
        ok = ops.logical_and(finite, ops.logical_not(_any(checks[0])))
        new_state = self._guarded(
            ok,
            (new_trainable, updated, new_optimizer, new_metrics),
            (trainable, non_trainable, optimizer_values, metric_values),
        )
        # The values a failure reports, in the TensorFlow step's order (a
        # dict through JAX comes back with its keys sorted).
        names = list(named_order)
        values = [named[name] for name in names]
        if gradient_sum is not None:
            names.append("gradients")
            values.append(gradient_sum)
        logs[_GUARD] = {"ok": ok, "checks": checks, "named": values, "step": step}
        self._jax_layouts["train"] = (layout, names)
        return logs, new_state

    def _guarded(self, ok, new, old):
        """The guard: the step's new state where `ok`, else the old one."""
        return _select(ok, new, old)

    def test_step(self, state, data):
        trainable, non_trainable, metric_values = state
        x, y, sample_weight, teacher_targets = self.unpack_batch(data)
        layout = []
        mapping = [
            *zip(self.trainable_variables, trainable),
            *zip(self.non_trainable_variables, non_trainable),
        ]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            problems, fixed_y, weights, y_pred, report = self._batch_losses(
                x, y, sample_weight, teacher_targets, False, None
            )
            problems.append(
                nonfinite_problem(x, report.total, lambda: "an evaluation batch")
            )
            checks = _problem_outputs(problems, layout)
        named = report.logs()
        logs, new_metrics = self._stateless_logs(
            metric_values, x, fixed_y, y_pred, weights, named
        )
        ok = ops.logical_not(_any(checks[0]))
        new_metrics = _select(ok, new_metrics, metric_values)
        logs[_GUARD] = {"ok": ok, "checks": checks, "named": [], "step": 0}
        self._jax_layouts["test"] = (layout, [])
        return logs, (trainable, non_trainable, new_metrics)

    def _batch_losses(self, x, y, sample_weight, teacher_targets, training, step):
        """The checks and losses of a batch, in the caller's stateless scope."""
        if step is None:
            where = lambda: "an evaluation batch"  # noqa: E731
        else:
            where = lambda: kd_checks.format_message("training step {}", step + 1)  # noqa: E731
        problems, y, sample_weight = self.check_batch(x, y, sample_weight, where)
        y_pred, report = self.compute_step_losses(
            x, y, sample_weight, teacher_targets, training, problems, where
        )
        return problems, y, sample_weight, y_pred, report

    def _stateless_logs(self, metric_values, x, y, y_pred, sample_weight, named):
        """`(logs, new metric values)`: the trackers and metrics of a step."""
        with keras.StatelessScope(
            state_mapping=list(zip(self.metrics_variables, metric_values))
        ) as scope:
            self._update_loss_trackers(x, _Logs(named))
            logs = dict(self._metrics_result(x, y, y_pred, sample_weight))
        new = [
            _current(scope, v, old)
            for v, old in zip(self.metrics_variables, metric_values)
        ]
        return logs, new

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # The JAX trainer builds the compiled metrics and loss symbolically
        # from the first batch before training; a batch without labels
        # (Hinton's transfer set) has nothing to build them with: they wait
        # for a labelled batch, as on TensorFlow.
        # Keras's unpacking reads a batch's precomputed teacher outputs (a
        # dict, see `targets`) as its sample weights.
        if isinstance(sample_weight, dict):
            sample_weight = None
        if y is None:
            return self.get_metrics_result()
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        if y is None:  # only called to build the compiled loss (see above)
            return ops.zeros((), "float32")
        if isinstance(sample_weight, dict):  # teacher outputs (see above)
            sample_weight = None
        return super().compute_loss(x, y, y_pred, sample_weight, **kwargs)

    # -- The functions `fit()` calls -----------------------------------------

    @property
    def _jax_layouts(self):
        """`{"train"|"test": the messages of the traced step's checks}`."""
        layouts = self.__dict__.get("_kd_jax_layouts")
        if layouts is None:
            layouts = {}
            object.__setattr__(self, "_kd_jax_layouts", layouts)
        return layouts

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        self._check_jax_fit()
        super().make_train_function(force)
        self.train_function = self._checked(self.train_function, "train")
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force)
        self.test_function = self._checked(self.test_function, "test")
        return self.test_function

    def _check_jax_fit(self):
        if self.steps_per_execution != 1:
            raise ValueError(
                "The Distiller on the JAX backend checks every step (a bad batch "
                "changes nothing and stops `fit()`), so it runs one step per "
                "execution. Received: steps_per_execution="
                f"{self.steps_per_execution}. Compile with steps_per_execution=1, "
                "or use the TensorFlow backend (KERAS_BACKEND=tensorflow)."
            )

    def _live(self, kind):
        """The variables callbacks read or set mid-epoch (`JaxLiveVariables`)."""
        variables = list(self.parameter_variables().values())
        if kind == "train":
            variables += [self.optimizer.iterations, _compat.step_count(self.optimizer)]
        return _compat.JaxLiveVariables(self, variables, kind)

    def _checked(self, function, kind):
        """`function(state, iterator)`, raising after a step that failed a check."""
        live = self._live(kind)
        self._jax_layouts.setdefault("live", {})[kind] = live

        def checked(state, iterator):
            logs, state = function(live.before(state), iterator)
            live.after(state)
            guard = logs.pop(_GUARD)
            if not bool(guard["ok"]):
                _compat.set_jax_trainer_state(self, state, kind)
                raise ValueError(self._failure_message(guard, kind))
            return logs, state

        return checked

    def jax_state_sync(self):
        for live in self._jax_layouts.get("live", {}).values():
            live.into_trainer(self)
        super().jax_state_sync()

    def _failure_message(self, guard, kind):
        """The TensorFlow step's message for a failed step's outputs."""
        flags, leaves = guard["checks"]
        layout, names = self._jax_layouts[kind]
        messages = []
        for failed, (message, _count), values in zip(flags, layout, leaves):
            if bool(failed):
                messages.append(_render(message, values))
        if messages:
            return " ".join(m.strip() for m in messages).strip()
        step = int(guard["step"]) + 1
        values = {name: float(v) for name, v in zip(names, guard["named"])}
        return kd_checks.nonfinite_message(
            values, lambda: f"training step {step}", self._parameter_note
        )


class _Logs:
    """A report's `logs()` given back (what `_update_loss_trackers` reads)."""

    def __init__(self, named):
        self.named = named

    def logs(self):
        return self.named


def _current(scope, variable, old):
    """The value `scope` recorded for `variable`, else `old`."""
    value = scope.get_current_value(variable)
    return old if value is None else value


def _any(flags):
    if not flags:
        return ops.convert_to_tensor(False)
    return ops.any(ops.stack([ops.cast(flag, "bool") for flag in flags]))


def _select(ok, new, old):
    """`new` where `ok`, else `old`, for each array of the two structures."""
    return keras.tree.map_structure(lambda n, o: ops.where(ok, n, o), new, old)


def _problem_outputs(problems, layout):
    """`(flags, values)` of the checks; `layout` gets each one's message.

    Each message is built (not formatted) while tracing: a `checks.Message`
    whose values the step returns, or a plain string.
    """
    flags, values = [], []
    for failed, message_fn in problems:
        message = message_fn()
        leaves = message.leaves() if isinstance(message, kd_checks.Message) else []
        layout.append((message, len(leaves)))
        flags.append(failed)
        values.append([ops.convert_to_tensor(v) for v in leaves])
    return flags, values


def _render(message, values):
    if isinstance(message, kd_checks.Message):
        return message.render(iter(values))
    return str(message)
