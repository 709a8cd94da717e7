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
  temperature: {kind: linear, start: 8.0, end: 2.0, steps: 29}
curriculum:               # optional: easiest examples first, scored by the teacher
  pacing: root            # linear, root, exponential or step
  min_fraction: 0.25      # fraction of the data at the first epoch
  epochs: 10              # epoch from which all the data is used
export: true
```

Errors name the key and its line, and unknown keys suggest the closest one.
"""

import difflib
import os

import yaml

# Configs are a few hundred bytes: anything much larger is a mistake (or an
# attack), refused before parsing.
MAX_CONFIG_BYTES = 64 * 1024
SCHEDULE_KINDS = ("constant", "linear", "cosine", "exponential")
# Keys each schedule kind needs.
SCHEDULE_KEYS = {
    "constant": ("value",),
    "linear": ("start", "end", "steps"),
    "cosine": ("start", "end", "steps"),
    "exponential": ("start", "end", "steps"),
}
BUILTIN_MODELS = {"teacher": ("teacher_cnn",), "student": ("student_mlp",)}
DATA_NAMES = ("digits", "mnist1d")
IN_MEMORY_DATA = DATA_NAMES
DATA_PREFIXES = ("tfds:", "npz:", "images:")


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
        # Defaults to `<output>_tune`, so `train` and `tune` never collide.
        "output": ("str", None),
    },
    "export": ("bool", True),
}
REQUIRED = (("output",),)
# Sections that switch a feature on: absent unless the file has them.
OPTIONAL_SECTIONS = ("curriculum",)


def _line(node):
    return node.start_mark.line + 1


def _at(source, node):
    """`FILE:LINE` of a YAML node."""
    return f"{source}:{_line(node)}"


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _suggest(value, choices):
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _check(node, schema, path, source):
    if not isinstance(node, yaml.MappingNode):
        where = ".".join(path) or "the file"
        raise ConfigError(
            f"{_at(source, node)}: {where} must be a mapping of keys to values."
        )
    result = {}
    seen = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != (
            "tag:yaml.org,2002:str"
        ):
            raise ConfigError(
                f"{_at(source, key_node)}: keys must be plain names; received a "
                f"{key_node.tag.rsplit(':', 1)[-1]} key."
            )
        key = key_node.value
        where = ".".join(path) or "the top level"
        if key in seen:
            raise ConfigError(
                f"{_at(source, key_node)}: the key '{key}' is given twice in {where} "
                f"(first on line {seen[key]}); keep one."
            )
        seen[key] = _line(key_node)
        if key not in schema:
            raise ConfigError(
                f"{_at(source, key_node)}: unknown key {_short(key)} in {where}."
                f"{_suggest(key, schema)} Valid keys: {', '.join(schema)}."
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
                f"{_at(source, value_node)}: {'.'.join(path + (key,))}: "
                f"{problem} (only plain YAML values are allowed)."
            ) from None
        check, expected = _TYPES[kind]
        if not check(value):
            raise ConfigError(
                f"{_at(source, value_node)}: {'.'.join(path + (key,))} must "
                f"be {expected}. Received: {_short(value)}"
            )
        result[key] = float(value) if kind == "float" else value
        LINES[(source, path + (key,))] = _line(value_node)
    return result


# (source, key path) -> line, for errors found after parsing.
LINES = {}


def _where(source, *path):
    """`FILE:LINE` of a key (its value's line), or `FILE` if unknown."""
    line = LINES.get((source, tuple(path)))
    return f"{source}:{line}" if line else source


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


def _reject_aliases(text, source):
    """Anchors and aliases (`&a`, `*a`) can expand exponentially: not allowed."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor:
                raise ConfigError(
                    f"{source}:{event.start_mark.line + 1}: YAML anchors and aliases "
                    "(&name, *name) are not supported in configs; write the values "
                    "out."
                )
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error(source, error)) from None


def _yaml_error(source, error):
    mark = getattr(error, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: not valid YAML: {problem}."


def parse(text, source="<config>"):
    """Validates YAML `text` and returns the config dict with defaults filled in."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: a config is at most {MAX_CONFIG_BYTES // 1024} KiB; this one "
            f"has {len(text):,} characters."
        )
    _reject_aliases(text, source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error(source, error)) from None
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
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file.")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: a config is at most {MAX_CONFIG_BYTES // 1024} KiB; this file "
            f"has {os.path.getsize(path):,} bytes."
        )
    with open(path, errors="replace") as f:
        config = parse(f.read(MAX_CONFIG_BYTES + 1), source=path)
    config["_source"] = path
    return config


def _check_values(config, source):
    """Checks every value before anything runs (data, models, schedules, ...)."""
    from keras_distill import params

    for name in ("alpha", "temperature"):
        try:
            params.check(name, config["distill"][name])
        except ValueError as error:
            raise ConfigError(
                f"{_where(source, 'distill', name)}: distill.{error}"
            ) from None
    if config["batch_size"] < 1:
        raise ConfigError(
            f"{_where(source, 'batch_size')}: batch_size must be >= 1. "
            f"Received: {config['batch_size']}"
        )
    for section in ("teacher", "distill"):
        if config[section]["epochs"] < 0:
            raise ConfigError(
                f"{_where(source, section, 'epochs')}: {section}.epochs must be >= 0."
            )
    _check_data(config["data"], source)
    _check_output(config["output"], source)
    if config["tune"].get("output") is not None:
        _check_output(config["tune"]["output"], source)
    for key in ("max_trials", "epochs"):
        if config["tune"][key] < 1:
            raise ConfigError(
                f"{_where(source, 'tune', key)}: tune.{key} must be >= 1. "
                f"Received: {config['tune'][key]}"
            )
    for role in ("teacher", "student"):
        _check_model(config[role]["model"], role, source)
    if config["teacher"]["outputs"] not in ("logits", "probabilities"):
        raise ConfigError(
            f"{_where(source, 'teacher', 'outputs')}: teacher.outputs must be "
            "'logits' or 'probabilities'. Received: "
            f"{_short(config['teacher']['outputs'])}"
        )
    if config["distill"]["loss"] not in ("kd", "mse", "dkd"):
        raise ConfigError(
            f"{_where(source, 'distill', 'loss')}: distill.loss must be 'kd', 'mse' "
            f"or 'dkd'. Received: {_short(config['distill']['loss'])}"
            f"{_suggest(config['distill']['loss'], ('kd', 'mse', 'dkd'))}"
        )
    if "curriculum" in config:
        from keras_distill import curriculum

        spec = config["curriculum"]
        try:
            curriculum.pacing(spec["pacing"], spec["min_fraction"], spec["epochs"])
        except ValueError as error:
            raise ConfigError(
                f"{_where(source, 'curriculum')}: curriculum: {error}"
            ) from None
    for name, spec in config.get("schedules", {}).items():
        kind = spec.get("kind", "linear")
        here = _where(source, "schedules", name, "kind")
        if kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"{here}: schedules.{name}.kind must be one of "
                f"{', '.join(SCHEDULE_KINDS)}. Received: {_short(kind)}"
                f"{_suggest(kind, SCHEDULE_KINDS)}"
            )
        missing = [k for k in SCHEDULE_KEYS[kind] if k not in spec]
        if missing:
            raise ConfigError(
                f"{_where(source, 'schedules', name)}: a {kind} schedule needs "
                f"{', '.join(SCHEDULE_KEYS[kind])}; schedules.{name} has no "
                f"{', '.join(missing)}."
            )
        try:
            schedule = build_schedule(spec)
            epochs = config["distill"]["epochs"]
            for epoch in range(epochs):
                params.check(name, schedule(epoch), where=f"epoch {epoch}")
        except ValueError as error:
            raise ConfigError(
                f"{_where(source, 'schedules', name)}: schedules.{name}: {error}"
            ) from None


def _check_data(value, source):
    here = _where(source, "data")
    if value in DATA_NAMES:
        return
    kind, _, rest = value.partition(":")
    if f"{kind}:" not in DATA_PREFIXES or not rest:
        raise ConfigError(
            f"{here}: data must be {', '.join(DATA_NAMES)}, tfds:NAME, npz:PATH or "
            f"images:DIR. Received: {_short(value)}{_suggest(value, DATA_NAMES)}"
        )
    if kind == "npz" and not os.path.isfile(rest):
        raise ConfigError(f"{here}: data: no such .npz file {rest!r}.")
    if kind == "images" and not os.path.isdir(rest):
        raise ConfigError(f"{here}: data: no such image folder {rest!r}.")


def _check_output(value, source):
    here = _where(source, "output")
    if not value.strip():
        raise ConfigError(f"{here}: output must name a folder. Received: ''")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"{here}: output {value!r} is a file, not a folder.")


def _check_model(value, role, source):
    here = _where(source, role, "model")
    if value.endswith(".keras"):
        if not os.path.isfile(value):
            raise ConfigError(f"{here}: {role}.model: no such file {value!r}.")
        return
    builtin = BUILTIN_MODELS[role]
    if value not in builtin:
        raise ConfigError(
            f"{here}: {role}.model must be a .keras file or one of "
            f"{', '.join(builtin)}. Received: {_short(value)}{_suggest(value, builtin)}"
        )


def build_schedule(spec):
    """A `keras_distill.schedules` object from a config mapping."""
    from keras_distill import schedules

    kind = spec.get("kind", "linear")
    if kind == "constant":
        return schedules.constant(spec["value"])
    factory = getattr(schedules, kind)
    return factory(spec["start"], spec["end"], spec["steps"])
