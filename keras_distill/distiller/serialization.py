"""Saving and loading the `Distiller`: its config, terms and parameters."""

import warnings

import keras
from keras import ops

from keras_distill import params as kd_params


class Serialization:
    """The `Distiller`'s config and saving checks (a mixin)."""

    def compile_from_config(self, config):
        # `compile()` is overridden, so Keras would skip it when loading.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def load_weights(self, filepath, *args, **kwargs):
        try:
            return super().load_weights(filepath, *args, **kwargs)
        except ValueError as error:
            if "could not be loaded" not in str(error):
                raise
            # Keras lists layers and variable counts, not what went wrong.
            raise ValueError(
                f"The weights in {str(filepath)!r} do not fit this distiller: they "
                "were saved by one whose student, teacher or hint adaptors have "
                "other layers or shapes. Build the distiller as the one that saved "
                f"them, then load. Keras's error: {error}"
            ) from error

    def load_own_variables(self, store):
        # Loading assigns every variable, and the parameter variables refuse
        # a bad value as it is assigned: nothing is left to check afterwards.
        before = self._own_parameter_values()
        try:
            super().load_own_variables(store)
        except ValueError as error:
            raise ValueError(
                f"The saved distiller holds an invalid parameter: {error}"
            ) from None
        _warn_if_replaced(before, self._own_parameter_values())

    def _own_parameter_values(self):
        """`{name: float}` of the parameters this distiller's own variables hold.

        The terms' variables (CTKD's temperature) load with the terms.
        """
        found = self.parameter_variables()
        for term in (*self.distillation_terms, *self.hint_terms):
            for name in term.parameter_variables():
                found.pop(name, None)
        return {
            name: float(ops.convert_to_numpy(variable))
            for name, variable in found.items()
        }

    def save(self, filepath, *args, **kwargs):
        # A file that `load_model()` would refuse is not written.
        self._check_stored_parameters("The distiller to save holds")
        return super().save(filepath, *args, **kwargs)

    def _check_stored_parameters(self, prefix):
        """Raises if a parameter variable holds a value its rule refuses."""
        for name, variable in self.parameter_variables().items():
            value = float(ops.convert_to_numpy(variable))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the usual-range warning
                    kd_params.check(name, value)
            except ValueError as error:
                raise ValueError(f"{prefix} an invalid `{name}`: {error}") from None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": (
                    keras.saving.serialize_keras_object(self._teacher_views[0])
                    if len(self._teacher_views) == 1
                    else [
                        keras.saving.serialize_keras_object(t)
                        for t in self._teacher_views
                    ]
                ),
                "teacher_weights": self.teacher_weights,
                "teacher_temperatures": self.teacher_temperatures,
                "hints": [hint.get_config() for hint in self.hints] or None,
                "hint_weight": (
                    float(ops.convert_to_numpy(self._hint_weight))
                    if self._hint_weight is not None
                    else 1.0
                ),
                "alpha": float(ops.convert_to_numpy(self._alpha)),
                "temperature": float(ops.convert_to_numpy(self._temperature)),
                "token_reduction": self.token_reduction,
                "teacher_vocabulary": self.teacher_vocabulary,
                "teacher_outputs": self.teacher_outputs,
                "student_outputs": self.student_outputs,
                "distillation_loss": self._terms_config(),
                "distillation_loss_weights": (
                    None
                    if self._term_weights is None
                    else [float(ops.convert_to_numpy(w)) for w in self._term_weights]
                ),
            }
        )
        return config

    def _terms_config(self):
        """The terms as saved: names as given, other terms by their config."""
        saved = [
            given or keras.saving.serialize_keras_object(term)
            for given, term in zip(self._term_names_given, self.distillation_terms)
        ]
        if self._term_layout is not None:
            return [
                None
                if entry is None
                else [saved[i] for i in entry]
                if isinstance(entry, list | tuple)
                else saved[entry]
                for entry in self._term_layout
            ]
        return saved if self._term_given_as_list else saved[0]

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        teacher = config["teacher"]
        config["teacher"] = (
            [keras.saving.deserialize_keras_object(t) for t in teacher]
            if isinstance(teacher, list)
            else keras.saving.deserialize_keras_object(teacher)
        )
        loss = config.get("distillation_loss")
        if isinstance(loss, dict):
            config["distillation_loss"] = keras.saving.deserialize_keras_object(loss)
        elif isinstance(loss, list):

            def restore(item):
                if isinstance(item, list):
                    return [restore(i) for i in item]
                if isinstance(item, dict):
                    return keras.saving.deserialize_keras_object(item)
                return item

            config["distillation_loss"] = restore(loss)
        # The teachers' weights are loaded after construction: an unbuilt
        # (subclassed) teacher is expected here.
        return cls(**config, _from_config=True)


def _warn_if_replaced(before, after):
    """Warns naming each parameter that loading changed from its own value.

    Loading weights (a `keras.callbacks.BackupAndRestore` backup resuming a
    run, `load_weights`) restores the scheduled parameters of the run that
    saved them: a resumed run goes on as it was, whatever values this
    distiller was constructed with.
    """
    changed = [
        f"{name}={after[name]:g} (this distiller had {before[name]:g})"
        for name in before
        if name in after and after[name] != before[name]
    ]
    if changed:
        warnings.warn(
            "Loading weights restored " + ", ".join(changed) + ": a resumed run "
            "(keras.callbacks.BackupAndRestore) continues with the saved run's "
            "values. To train with this distiller's values instead, start from a "
            "new backup folder (or set them, e.g. `distiller.temperature = ...`, "
            "after loading).",
            UserWarning,
            stacklevel=2,
        )
