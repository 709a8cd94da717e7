"""Run configuration files for the `keras-distill` command (YAML, validated).

Example `run.yaml`:

```yaml
data: digits              # or mnist1d, fashion_mnist, tfds:NAME, npz:PATH, ...
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

`distill.loss` is a registered term name (`keras_distill.terms.TERMS`: kd,
dkd, dist, reverse_kl, ...), a term with options, or a list of them, weighted by
`distill.loss_weights`; `schedules` may also schedule the terms' parameters
(`<term>_weight`, `<term>_reversal`, rules from `params`):

```yaml
distill:
  loss:
    - kd: {standardize: true}
    - dkd: {beta: 2.0}
  loss_weights: [0.7, 0.3]
schedules:
  dkd_weight: {kind: linear, start: 0.05, end: 0.3, steps: 19}
```

Errors name the key and its line, and unknown keys suggest the closest one.
"""

import os

from keras_distill.app.yaml_schema import (
    ConfigError,
    Each,
    check_node,
    key_name,
    reject_aliases,
    short,
    suggest,
    where,
    with_defaults,
    yaml,
    yaml_error,
)

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
# Either role may be any of these (or a .keras file, or a keras.applications
# model: `keras_distill.applications.NAMES`); the first is the role's default.
BUILTIN_MODELS = {
    "teacher": ("teacher_cnn", "student_cnn", "student_mlp", "causal_lm"),
    "student": ("student_mlp", "student_cnn", "teacher_cnn", "causal_lm"),
}
DATA_NAMES = ("digits", "mnist1d", "mnist", "fashion_mnist", "movie_reviews")
# Token data for language models, and the models that read it.
TEXT_DATA = ("movie_reviews",)
TEXT_MODELS = ("causal_lm",)
IN_MEMORY_DATA = DATA_NAMES
DATA_PREFIXES = ("tfds:", "npz:", "images:")


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
    # Text data (`movie_reviews`): tokens per sequence, reviews to use.
    "sequence_length": ("int", 64),
    "max_reviews": ("int", 0),
    "teacher": {
        "model": ("str", "teacher_cnn"),
        "epochs": ("int", 20),
        "learning_rate": ("float", 3e-3),
        "outputs": ("str", "logits"),
        # keras.applications models: a weights file (without the top), or none.
        "weights": ("str", None),
        # causal_lm: width and layers of the decoder.
        "width": ("int", 128),
        "layers": ("int", 4),
    },
    "student": {
        "model": ("str", "student_mlp"),
        "hidden": ("int", 16),
        "weights": ("str", None),
        "width": ("int", 48),
        "layers": ("int", 2),
    },
    # Per-token distillation of language models (see `Distiller`).
    "token_reduction": ("str", "tokens"),
    "distill": {
        "alpha": ("float", 0.1),
        "temperature": ("float", 4.0),
        "epochs": ("int", 30),
        "learning_rate": ("float", 1e-2),
        # A term name, `{name: {options}}`, or a list of them (`_check_terms`).
        "loss": ("terms", "kd"),
        # A number or a list of numbers, one per term.
        "loss_weights": ("weights", None),
    },
    # Any parameter of the distiller (checked once the terms are known).
    "schedules": Each(_SCHEDULE),
    "curriculum": {
        "pacing": ("str", "linear"),
        "min_fraction": ("float", 0.25),
        "epochs": ("int", 10),
    },
    "tune": {
        "max_trials": ("int", 5),
        "epochs": ("int", 5),
        # Distillation terms to choose from (as `distill.loss` entries).
        "terms": ("terms", None),
        # Defaults to `<output>_tune`, so `train` and `tune` never collide.
        "output": ("str", None),
    },
    "export": ("bool", True),
}
REQUIRED = (("output",),)


def parse(text, source="<config>", library=True):
    """Validates YAML `text` and returns the config dict with defaults filled in.

    `library=False` checks what needs no Keras (types, keys, ranges, files,
    model names), so the command reports those mistakes before TensorFlow
    loads; the terms, schedules and curriculum are checked with `True`.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: a config is at most {MAX_CONFIG_BYTES // 1024} KiB; this one "
            f"has {len(text):,} characters."
        )
    reject_aliases(text, source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error(source, error)) from None
    if node is None:
        raise ConfigError(f"{source}: the file is empty.")
    given = check_node(node, SCHEMA, (), source)
    for path in REQUIRED:
        if path[0] not in given:
            raise ConfigError(f"{source}: the key '{'.'.join(path)}' is required.")
    config = with_defaults(SCHEMA, given)
    _check_plain_values(config, source)
    if library:
        _check_values(config, source)
    return config


def load(path, library=True):
    """Reads and validates a YAML config file (`yaml.safe_load` rules; `parse`)."""
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file.")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: a config is at most {MAX_CONFIG_BYTES // 1024} KiB; this file "
            f"has {os.path.getsize(path):,} bytes."
        )
    with open(path, errors="replace") as f:
        config = parse(f.read(MAX_CONFIG_BYTES + 1), source=path, library=library)
    config["_source"] = path
    return config


def _check_plain_values(config, source):
    """The checks that need no Keras: ranges, data, output, models, text."""
    from keras_distill import params

    for name in ("alpha", "temperature"):
        try:
            params.check(name, config["distill"][name])
        except ValueError as error:
            raise ConfigError(
                f"{where(source, 'distill', name)}: distill.{error}"
            ) from None
    for section in ("teacher", "distill"):
        _check_learning_rate(config[section]["learning_rate"], section, source)
    if config["batch_size"] < 1:
        raise ConfigError(
            f"{where(source, 'batch_size')}: batch_size must be >= 1. "
            f"Received: {config['batch_size']}"
        )
    for section in ("teacher", "distill"):
        if config[section]["epochs"] < 0:
            raise ConfigError(
                f"{where(source, section, 'epochs')}: {section}.epochs must be >= 0."
            )
    if config["teacher"]["epochs"] == 0 and not str(
        config["teacher"]["model"]
    ).endswith(".keras"):
        raise ConfigError(
            f"{where(source, 'teacher', 'epochs')}: teacher.epochs must be >= 1 "
            f"for a teacher trained here (teacher.model: "
            f"{short(config['teacher']['model'])}): with 0 epochs it keeps its "
            "random weights and the student learns nothing. Received: 0. To use a "
            "trained teacher, set teacher.model to its .keras file."
        )
    _check_data(config["data"], source)
    _check_output(config["output"], source)
    if config["tune"].get("output") is not None:
        _check_output(config["tune"]["output"], source)
    for key in ("max_trials", "epochs"):
        if config["tune"][key] < 1:
            raise ConfigError(
                f"{where(source, 'tune', key)}: tune.{key} must be >= 1. "
                f"Received: {config['tune'][key]}"
            )
    for role in ("teacher", "student"):
        _check_model(config[role]["model"], role, source, config[role].get("weights"))
    _check_text(config, source)
    if config["teacher"]["outputs"] not in ("logits", "probabilities"):
        raise ConfigError(
            f"{where(source, 'teacher', 'outputs')}: teacher.outputs must be "
            "'logits' or 'probabilities'. Received: "
            f"{short(config['teacher']['outputs'])}"
        )


def _check_values(config, source):
    """The checks that build library objects: terms, curriculum, schedules."""
    from keras_distill import params, schedules

    terms = build_terms(config["distill"]["loss"], source)
    _check_term_weights(config["distill"].get("loss_weights"), terms, source)
    known = ("alpha", "temperature", *term_parameters(terms))
    if config["tune"].get("terms") is not None:
        build_terms(config["tune"]["terms"], source, ("tune", "terms"))
    if "curriculum" in config:
        from keras_distill import curriculum

        spec = config["curriculum"]
        try:
            curriculum.pacing(spec["pacing"], spec["min_fraction"], spec["epochs"])
        except ValueError as error:
            raise ConfigError(
                f"{where(source, 'curriculum')}: curriculum: {error}"
            ) from None
    for name, spec in config.get("schedules", {}).items():
        if name not in known:
            raise ConfigError(
                f"{where(source, 'schedules', name)}: unknown key {short(name)} in "
                f"schedules: this run has no parameter of that name."
                f"{suggest(name, known)} Valid keys: {', '.join(known)}."
            )
        kind = spec.get("kind", "linear")
        here = where(source, "schedules", name, "kind")
        if kind not in SCHEDULE_KINDS:
            raise ConfigError(
                f"{here}: schedules.{name}.kind must be one of "
                f"{', '.join(SCHEDULE_KINDS)}. Received: {short(kind)}"
                f"{suggest(kind, SCHEDULE_KINDS)}"
            )
        missing = [k for k in SCHEDULE_KEYS[kind] if k not in spec]
        if missing:
            raise ConfigError(
                f"{where(source, 'schedules', name)}: a {kind} schedule needs "
                f"{', '.join(SCHEDULE_KEYS[kind])}; schedules.{name} has no "
                f"{', '.join(missing)}."
            )
        try:
            schedule = build_schedule(spec)
            epochs = config["distill"]["epochs"]
            # The epochs that bound its values, not every epoch (10**14 of
            # them would take days).
            schedules.check_over(
                schedule,
                epochs,
                lambda epoch, name=name, schedule=schedule: params.check(
                    name, schedule(epoch), where=f"epoch {epoch}"
                ),
            )
        except ValueError as error:
            raise ConfigError(
                f"{where(source, 'schedules', name)}: schedules.{name}: {error}"
            ) from None


def _term_options(cls):
    """The options of a term class: its `__init__` arguments (`name` included)."""
    import inspect

    return [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def _build_term(spec, path, source):
    from keras_distill import terms

    name, options = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
    here = where(source, *path)
    known = terms.names("logits")
    if name not in known:
        raise ConfigError(
            f"{here}: {key_name(path)}: unknown distillation term {short(name)}."
            f"{suggest(name, known)} Known terms: {', '.join(known)}."
        )
    cls, defaults = terms.entry(name)
    allowed = [key for key in _term_options(cls) if key not in defaults]
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"{where(source, *path, name, key)}: {key_name(path)}.{name}: unknown "
                f"option {short(key)} of the term {name}."
                f"{suggest(key, allowed)} Its options: {', '.join(allowed)}."
            )
    kwargs = dict(options)
    if isinstance(kwargs.get("term"), dict):
        kwargs["term"] = _build_term(kwargs["term"], path + (name, "term"), source)
    try:
        return terms.make(name, **kwargs)
    except (ValueError, TypeError) as error:
        # The option the message names, if any, gives the line.
        named = [key for key in options if f"`{key}`" in str(error)]
        line = where(source, *path, name, named[0]) if named else here
        raise ConfigError(f"{line}: {key_name(path)}.{name}: {error}") from None


def build_terms(loss, source="<config>", path=("distill", "loss")):
    """The `DistillationTerm`s of a validated `distill.loss`, in order.

    A name builds `terms.make(name)` (a registered name that reads
    logits); `{name: {options}}` passes the options to its constructor
    (`name` among them, to tell two terms of one kind apart). Errors are
    `ConfigError`s with the entry's `FILE:LINE`;
    `path` is the key the terms are under (`tune.terms` too).
    """
    from keras_distill import distiller

    entries = loss if isinstance(loss, list) else [loss]
    many = isinstance(loss, list)
    terms = [
        _build_term(spec, path + ((i,) if many else ()), source)
        for i, spec in enumerate(entries)
    ]
    names = [term.name for term in terms]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(
                f"{where(source, *path, i)}: {key_name(path + (i,))}: the "
                f"term name '{name}' is used twice (it names the `{name}_loss` log "
                f"and the `{name}_weight` parameter); give one a name, e.g. "
                f"{{{type(terms[i]).default_name}: {{name: {name}_2}}}}."
            )
    try:
        distiller._check_term_names(terms)
    except ValueError as error:
        raise ConfigError(
            f"{where(source, *path)}: {key_name(path)}: {error}"
        ) from None
    return terms


def term_parameters(terms):
    """The schedulable parameters the terms give a run's distiller, by name.

    Each term's weight (`<name>_weight`, `params.FAMILIES`; a run creates
    the weights when `loss_weights` is given, there are several terms, or a
    weight is scheduled) and the terms' own parameters (CTKD's
    `<name>_reversal`).
    """
    from keras_distill import params

    names = [params.term_weight_name(term.name) for term in terms]
    for term in terms:
        names += list(term.parameter_variables())
    return names


def term_weights(config, terms):
    """The `distillation_loss_weights` a run passes the `Distiller`, or None."""
    from keras_distill import params

    weights = config["distill"].get("loss_weights")
    if weights is not None:
        return weights if isinstance(weights, list) else [weights]
    scheduled = {params.term_weight_name(term.name) for term in terms}
    if len(terms) > 1 or scheduled & set(config.get("schedules", {})):
        return [1.0] * len(terms)
    return None


def _check_term_weights(weights, terms, source):
    from keras_distill import params

    if weights is None:
        return
    many = isinstance(weights, list)
    values = weights if many else [weights]
    if len(values) != len(terms):
        names = ", ".join(term.name for term in terms)
        raise ConfigError(
            f"{where(source, 'distill', 'loss_weights')}: distill.loss_weights "
            f"needs one weight per term of distill.loss ({len(terms)}: {names}). "
            f"Received {len(values)}: {short(weights)}"
        )
    for i, (term, value) in enumerate(zip(terms, values)):
        path = ("distill", "loss_weights") + ((i,) if many else ())
        try:
            params.check(params.term_weight_name(term.name), value)
        except ValueError as error:
            raise ConfigError(
                f"{where(source, *path)}: {key_name(path)}: {error}"
            ) from None


def _check_learning_rate(value, section, source):
    """A learning rate must be finite and > 0 (a negative one ascends the loss)."""
    from keras_distill import params

    here = where(source, section, "learning_rate")
    try:
        number = params.check_finite(value, f"{section}.learning_rate")
    except ValueError as error:
        raise ConfigError(f"{here}: {error}") from None
    if not number > 0:
        raise ConfigError(
            f"{here}: {section}.learning_rate must be > 0 (the optimizer's step "
            f"size). Received: {value!r}"
        )


def _check_data(value, source):
    here = where(source, "data")
    if value in DATA_NAMES:
        return
    kind, _, rest = value.partition(":")
    if f"{kind}:" not in DATA_PREFIXES or not rest:
        raise ConfigError(
            f"{here}: data must be {', '.join(DATA_NAMES)}, tfds:NAME, npz:PATH or "
            f"images:DIR. Received: {short(value)}{suggest(value, DATA_NAMES)}"
        )
    if kind == "npz" and not os.path.isfile(rest):
        raise ConfigError(f"{here}: data: no such .npz file {rest!r}.")
    if kind == "images" and not os.path.isdir(rest):
        raise ConfigError(f"{here}: data: no such image folder {rest!r}.")


def _check_output(value, source):
    here = where(source, "output")
    if not value.strip():
        raise ConfigError(f"{here}: output must name a folder. Received: ''")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ConfigError(f"{here}: output {value!r} is a file, not a folder.")


def _check_text(config, source):
    """Text data goes with language models, and their sizes are positive."""
    text = config["data"] in TEXT_DATA
    for role in ("teacher", "student"):
        model = config[role]["model"]
        if model.endswith(".keras"):
            continue
        if text != (model in TEXT_MODELS):
            wanted = "causal_lm" if text else BUILTIN_MODELS[role][0]
            raise ConfigError(
                f"{where(source, role, 'model')}: data {config['data']!r} needs "
                f"a {'language model' if text else 'classifier'}: {role}.model: "
                f"{wanted} (or a .keras file). Received: {short(model)}"
            )
        if model in TEXT_MODELS:
            for key in ("width", "layers"):
                if config[role][key] < 1:
                    raise ConfigError(
                        f"{where(source, role, key)}: {role}.{key} must be >= 1. "
                        f"Received: {config[role][key]}"
                    )
    if config["sequence_length"] < 2:
        raise ConfigError(
            f"{where(source, 'sequence_length')}: sequence_length must be >= 2. "
            f"Received: {config['sequence_length']}"
        )
    if config["max_reviews"] != 0 and config["max_reviews"] < 3:
        raise ConfigError(
            f"{where(source, 'max_reviews')}: max_reviews must be 0 (all) or "
            f">= 3. Received: {config['max_reviews']}"
        )
    if config["token_reduction"] not in ("tokens", "sequences"):
        raise ConfigError(
            f"{where(source, 'token_reduction')}: token_reduction must be "
            f"'tokens' or 'sequences'. Received: {short(config['token_reduction'])}"
            f"{suggest(config['token_reduction'], ('tokens', 'sequences'))}"
        )


def data_options(config):
    """The loader's options of the config's data (the text source's sizes)."""
    if config["data"] not in TEXT_DATA:
        return {}
    options = {"sequence_length": config["sequence_length"]}
    if config["max_reviews"]:
        options["max_reviews"] = config["max_reviews"]
    return options


def _check_model(value, role, source, weights=None):
    here = where(source, role, "model")
    if value.endswith(".keras"):
        if not os.path.isfile(value):
            raise ConfigError(f"{here}: {role}.model: no such file {value!r}.")
        return
    from keras_distill import applications

    if value.startswith(applications.PREFIX):
        try:
            applications.check(value, weights, f"{here}: {role}.model")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return
    builtin = BUILTIN_MODELS[role]
    if value not in builtin:
        raise ConfigError(
            f"{here}: {role}.model must be a .keras file, "
            f"keras.applications.NAME (e.g. keras.applications.MobileNetV3Small) "
            f"or one of {', '.join(builtin)}. Received: "
            f"{short(value)}{suggest(value, builtin)}"
        )
    if weights is not None:
        raise ConfigError(
            f"{where(source, role, 'weights')}: {role}.weights is for "
            f"keras.applications models; {value!r} is built by this library. "
            "Remove it, or load your weights into a .keras file."
        )


def build_schedule(spec):
    """A `keras_distill.schedules` object from a config mapping."""
    from keras_distill import schedules

    kind = spec.get("kind", "linear")
    if kind == "constant":
        return schedules.constant(spec["value"])
    factory = getattr(schedules, kind)
    return factory(spec["start"], spec["end"], spec["steps"])
