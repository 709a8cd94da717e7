"""Reads a YAML node tree against a schema: types, unknown keys, the lines.

`check` walks the nodes of a safe-loaded document (`yaml.compose`), refuses
unknown keys (suggesting the closest), values of the wrong type and
aliases; every message names the file and line (`where`).
"""

import difflib

from keras_distill.version import require

yaml = require("yaml", "Reading a YAML run configuration")


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


class Each:
    """A mapping of any plain keys, each value checked against `schema`."""

    def __init__(self, schema):
        self.schema = schema


# Sections that switch a feature on: absent unless the file has them.
OPTIONAL_SECTIONS = ("curriculum",)


def _line(node):
    return node.start_mark.line + 1


def _at(source, node):
    """`FILE:LINE` of a YAML node."""
    return f"{source}:{_line(node)}"


def short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def suggest(value, choices):
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _items(node, path, source):
    """`(key, key_node, value_node)` of a mapping node: plain keys, no repeats."""
    if not isinstance(node, yaml.MappingNode):
        where = key_name(path) or "the file"
        raise ConfigError(
            f"{_at(source, node)}: {where} must be a mapping of keys to values."
        )
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
        where = key_name(path) or "the top level"
        if key in seen:
            raise ConfigError(
                f"{_at(source, key_node)}: the key '{key}' is given twice in {where} "
                f"(first on line {seen[key]}); keep one."
            )
        seen[key] = _line(key_node)
        KEY_LINES[(source, path + (key,))] = _line(key_node)
        yield key, key_node, value_node


def key_name(path):
    """`distill.loss[1].dkd` for the key path `("distill", "loss", 1, "dkd")`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _value(node, path, source):
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or error
        raise ConfigError(
            f"{_at(source, node)}: {key_name(path)}: {problem} (only plain YAML values "
            "are allowed)."
        ) from None
    except ValueError:  # e.g. an integer of more than 4300 digits
        raise ConfigError(
            f"{_at(source, node)}: {key_name(path)}: the value "
            f"{short(getattr(node, 'value', ''), 40)} is not a usable number."
        ) from None


def check_node(node, schema, path, source):
    result = {}
    for key, key_node, value_node in _items(node, path, source):
        if key not in schema:
            where = key_name(path) or "the top level"
            raise ConfigError(
                f"{_at(source, key_node)}: unknown key {short(key)} in {where}."
                f"{suggest(key, schema)} Valid keys: {', '.join(schema)}."
            )
        spec = schema[key]
        if isinstance(spec, Each):
            result[key] = {
                name: check_node(inner, spec.schema, path + (key, name), source)
                for name, _, inner in _items(value_node, path + (key,), source)
            }
            continue
        if isinstance(spec, dict):
            result[key] = check_node(value_node, spec, path + (key,), source)
            continue
        kind, _ = spec
        LINES[(source, path + (key,))] = _line(value_node)
        if kind == "terms":
            result[key] = _check_terms(value_node, path + (key,), source)
            continue
        value = _value(value_node, path + (key,), source)
        if kind == "weights":
            result[key] = _check_weights(value_node, value, path + (key,), source)
            continue
        check, expected = _TYPES[kind]
        if not check(value):
            raise ConfigError(
                f"{_at(source, value_node)}: {key_name(path + (key,))} must "
                f"be {expected}. Received: {short(value)}{_number_hint(kind, value)}"
            )
        result[key] = float(value) if kind == "float" else value
    return result


def _number_hint(kind, value):
    """YAML reads `1e-3` (no dot in the mantissa) as text: say how to write it."""
    if kind != "float" or not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    mantissa, _, exponent = value.lower().partition("e")
    if exponent and "." not in mantissa:
        return (
            f" (YAML reads {value} as text: write {mantissa}.0e{exponent}, "
            f"or {number!r})"
        )
    return ""


_TERM_FORM = (
    "a term name (e.g. kd), a term with options (e.g. {dkd: {beta: 2.0}}) or a "
    "list of them"
)


def _check_terms(node, path, source):
    """The shape of `distill.loss`; names and options are checked later."""
    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            raise ConfigError(
                f"{_at(source, node)}: {key_name(path)} must name at least one term."
            )
        return [
            _check_term(item, path + (i,), source) for i, item in enumerate(node.value)
        ]
    return _check_term(node, path, source)


def _check_term(node, path, source):
    """One term: `name` or `{name: {option: value, ...}}` (a plain value)."""
    LINES[(source, path)] = _line(node)
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return node.value
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1:
        ((name, _, options),) = _items(node, path, source)
        if isinstance(options, yaml.ScalarNode) and options.tag.endswith(":null"):
            return {name: {}}
        checked = {}
        for key, _, value_node in _items(options, path + (name,), source):
            LINES[(source, path + (name, key))] = _line(value_node)
            if key == "term" and isinstance(value_node, yaml.MappingNode):
                # CTKD's wrapped term, itself a term with options.
                checked[key] = _check_term(value_node, path + (name, key), source)
            else:
                checked[key] = _value(value_node, path + (name, key), source)
        return {name: checked}
    raise ConfigError(
        f"{_at(source, node)}: {key_name(path)} must be {_TERM_FORM}. Received: "
        f"{short(_value(node, path, source))}"
    )


def _check_weights(node, value, path, source):
    """A number, or a list of numbers (their rule is checked with the terms)."""
    values = value if isinstance(value, list) else [value]
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    for i, (item, item_node) in enumerate(zip(values, items)):
        here = path + (i,) if isinstance(value, list) else path
        LINES[(source, here)] = _line(item_node)
        if not _float(item):
            raise ConfigError(
                f"{_at(source, item_node)}: {key_name(here)} must be a number or "
                f"a list of numbers, one per term. Received: {short(item)}"
            )
    return [float(v) for v in values] if isinstance(value, list) else float(value)


# (source, key path) -> line, for errors found after parsing: of the value,
# and of the key.
LINES = {}


KEY_LINES = {}


def where(source, *path):
    """`FILE:LINE` of a key (its value's line), or `FILE` if unknown."""
    line = LINES.get((source, tuple(path))) or KEY_LINES.get((source, tuple(path)))
    return f"{source}:{line}" if line else source


def with_defaults(schema, given):
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, Each):
            out[key] = dict(given.get(key, {}))
        elif isinstance(spec, dict):
            if key in OPTIONAL_SECTIONS and key not in given:
                continue
            out[key] = with_defaults(spec, given.get(key, {}))
        elif key in given:
            out[key] = given[key]
        elif spec[1] is not None:
            out[key] = spec[1]
    return out


def reject_aliases(text, source):
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
        raise ConfigError(yaml_error(source, error)) from None


def yaml_error(source, error):
    mark = getattr(error, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: not valid YAML: {problem}."
