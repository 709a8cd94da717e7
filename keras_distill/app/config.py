"""Run configuration files for the `keras-distill` command (YAML, validated).

Example `run.yaml`:

```yaml
data: digits              # or tfds:mnist, npz:path.npz, images:folder
output: runs/digits
teacher:
  model: teacher_cnn      # a built-in architecture, or a saved .keras file
  epochs: 20
student:
  model: student_mlp
  hidden: 8
distill:
  alpha: 0.1
  temperature: 4.0
  epochs: 30
schedules:
  temperature: {kind: linear, start: 8.0, end: 2.0, steps: 30}
curriculum:               # optional: easiest examples first, scored by the teacher
  pacing: root            # linear, root, exponential or step
  min_fraction: 0.25      # fraction of the data at the first epoch
  epochs: 10              # epoch from which all the data is used
export: true
```

Errors name the key and its line, and unknown keys suggest the closest one.
"""

import difflib

import yaml


class ConfigError(ValueError):
    """A configuration file does not match the schema."""


def _float(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_int, "an integer"),
    "float": (_float, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}

_SCHEDULE = {
    "kind": ("str", "linear"),
    "start": ("float", None),
    "end": ("float", None),
    "steps": ("int", None),
    "value": ("float", None),
}

SCHEMA = {
    "data": ("str", "digits"),
    "output": ("str", None),
    "batch_size": ("int", 64),
    "seed": ("int", 0),
    "teacher": {
        "model": ("str", "teacher_cnn"),
        "epochs": ("int", 20),
        "learning_rate": ("float", 3e-3),
        "outputs": ("str", "logits"),
    },
    "student": {
        "model": ("str", "student_mlp"),
        "hidden": ("int", 16),
    },
    "distill": {
        "alpha": ("float", 0.1),
        "temperature": ("float", 4.0),
        "epochs": ("int", 30),
        "learning_rate": ("float", 1e-2),
        "loss": ("str", "kd"),
    },
    "schedules": {"alpha": _SCHEDULE, "temperature": _SCHEDULE},
    "curriculum": {
        "pacing": ("str", "linear"),
        "min_fraction": ("float", 0.25),
        "epochs": ("int", 10),
    },
    "tune": {
        "max_trials": ("int", 5),
        "epochs": ("int", 5),
    },
    "export": ("bool", True),
}
REQUIRED = (("output",),)
# Sections that switch a feature on: absent unless the file has them.
OPTIONAL_SECTIONS = ("curriculum",)


def _line(node):
    return node.start_mark.line + 1


def _check(node, schema, path, source):
    if not isinstance(node, yaml.MappingNode):
        where = ".".join(path) or "the file"
        raise ConfigError(
            f"{source}, line {_line(node)}: {where} must be a mapping of keys to "
            "values."
        )
    result = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            where = ".".join(path) or "the top level"
            raise ConfigError(
                f"{source}, line {_line(key_node)}: unknown key '{key}' in {where}."
                f"{hint} Valid keys: {', '.join(schema)}."
            )
        spec = schema[key]
        if isinstance(spec, dict):
            result[key] = _check(value_node, spec, path + (key,), source)
            continue
        kind, _ = spec
        try:
            value = yaml.safe_load(yaml.serialize(value_node))
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or error
            raise ConfigError(
                f"{source}, line {_line(value_node)}: {'.'.join(path + (key,))}: "
                f"{problem} (only plain YAML values are allowed)."
            ) from None
        check, expected = _TYPES[kind]
        if not check(value):
            raise ConfigError(
                f"{source}, line {_line(value_node)}: {'.'.join(path + (key,))} must "
                f"be {expected}. Received: {value!r}"
            )
        result[key] = float(value) if kind == "float" else value
    return result


def _defaults(schema, given):
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            if spec is _SCHEDULE:
                if key in given:
                    out[key] = given[key]
                continue
            if key in OPTIONAL_SECTIONS and key not in given:
                continue
            out[key] = _defaults(spec, given.get(key, {}))
        elif key in given:
            out[key] = given[key]
        elif spec[1] is not None:
            out[key] = spec[1]
    return out


def parse(text, source="<config>"):
    """Validates YAML `text` and returns the config dict with defaults filled in."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if node is None:
        raise ConfigError(f"{source}: the file is empty.")
    given = _check(node, SCHEMA, (), source)
    for path in REQUIRED:
        if path[0] not in given:
            raise ConfigError(f"{source}: the key '{'.'.join(path)}' is required.")
    config = _defaults(SCHEMA, given)
    _check_values(config, source)
    return config


def load(path):
    """Reads and validates a YAML config file (`yaml.safe_load` rules)."""
    with open(path) as f:
        return parse(f.read(), source=str(path))


def _check_values(config, source):
    from keras_distill import params

    try:
        for name in ("alpha", "temperature"):
            params.check(name, config["distill"][name])
    except ValueError as error:
        raise ConfigError(f"{source}: distill: {error}") from None
    for key in ("batch_size",):
        if config[key] < 1:
            raise ConfigError(f"{source}: {key} must be >= 1. Received: {config[key]}")
    for section in ("teacher", "distill"):
        if config[section]["epochs"] < 0:
            raise ConfigError(f"{source}: {section}.epochs must be >= 0.")
    if "curriculum" in config:
        from keras_distill import curriculum

        spec = config["curriculum"]
        try:
            curriculum.pacing(spec["pacing"], spec["min_fraction"], spec["epochs"])
        except ValueError as error:
            raise ConfigError(f"{source}: curriculum: {error}") from None
    for name, spec in config.get("schedules", {}).items():
        if spec.get("kind") not in ("constant", "linear", "cosine", "exponential"):
            raise ConfigError(
                f"{source}: schedules.{name}.kind must be one of constant, linear, "
                f"cosine, exponential. Received: {spec.get('kind')!r}"
            )


def build_schedule(spec):
    """A `keras_distill.schedules` object from a config mapping."""
    from keras_distill import schedules

    kind = spec.get("kind", "linear")
    if kind == "constant":
        return schedules.constant(spec["value"])
    factory = getattr(schedules, kind)
    return factory(spec["start"], spec["end"], spec["steps"])
