"""The layer map of docs/architecture.md, as a test of the import graph.

Builds the graph of `keras_distill` with `ast` (every import, also those
inside functions: a lazy upward import is still an upward dependency) and
fails on a cycle, an import from a higher layer, an import of the package
`__init__` from inside the library, and Keras internals (`keras.src`, a
private attribute Keras defines) outside `_compat`.
"""

import ast
import pathlib
import re

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_distill"

# The single source of truth of the layers (docs/architecture.md is drawn
# from it); a module is matched by its dotted prefix below keras_distill.
LAYERS = {
    0: ("params", "checks", "targets", "_compat", "version"),
    1: ("terms", "losses", "schedules", "hints"),
    2: ("distiller",),
    3: (
        "data",
        "text",
        "decoding",
        "sequence_kd",
        "models",
        "applications",
        "cache",
        "curriculum",
        "augment",
    ),
    4: ("callbacks", "recipes"),
    5: ("tuner", "export", "serving", "transfer", "continual", "distribute"),
    6: ("app", "__main__"),
}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(name):
    if name == "keras_distill":
        return None
    if name == "keras_distill_cli":  # the command's entry point, beside the package
        return max(LAYERS)
    first = name.split(".")[1]
    for layer, names in LAYERS.items():
        if first in names:
            return layer
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def imports(name, path, known):
    """`[(line, imported module)]` of keras_distill modules `name` imports."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("keras_distill", "keras_distill_cli"):
                    found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("keras_distill"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    return found


def graph():
    known = modules()
    return {
        name: [
            (line, target)
            for line, target in imports(name, path, known)
            if target != name
        ]
        for name, path in known.items()
    }


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_from_a_higher_layer_or_the_package():
    problems = []
    for name, edges in graph().items():
        if name == "keras_distill":
            continue
        for line, target in edges:
            if target == "keras_distill" and layer_of(name) < max(LAYERS):
                problems.append(f"{name}:{line} imports the package `keras_distill`")
            elif target != "keras_distill" and layer_of(target) > layer_of(name):
                problems.append(
                    f"{name}:{line} (layer {layer_of(name)}) imports {target} "
                    f"(layer {layer_of(target)})"
                )
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    edges = {
        name: {t for _, t in targets if t != "keras_distill"}
        for name, targets in graph().items()
    }

    # A package's __init__ that re-exports its own modules is not a cycle.
    def inside(a, b):
        return b.startswith(a + ".") or a.startswith(b + ".")

    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if inside(node, target):
                continue
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _keras_private_names():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    objects = [
        model,
        model.optimizer,
        keras.metrics.Mean(),
        keras.losses.MeanSquaredError(),
    ]
    classes = [
        keras.Model,
        keras.layers.Layer,
        keras.Variable,
        keras.optimizers.Optimizer,
        keras.metrics.Metric,
        keras.losses.Loss,
        keras.callbacks.Callback,
    ]
    names = set()
    for thing in [*objects, *classes]:
        names |= set(dir(thing)) | set(getattr(thing, "__dict__", {}))
    return {n for n in names if re.fullmatch(r"_[a-z][A-Za-z0-9_]*", n)}


def _own_names():
    """Private names keras_distill assigns or defines itself."""
    own = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
    return own


def test_keras_internals_only_through_compat():
    private = _keras_private_names() - _own_names()
    problems = []
    for name, path in modules().items():
        if name == "keras_distill._compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = getattr(node, "module", None) or ""
            names = [a.name for a in getattr(node, "names", [])]
            if isinstance(node, ast.Import | ast.ImportFrom) and any(
                n.startswith("keras.src") for n in [module, *names]
            ):
                problems.append(f"{path}:{node.lineno}: imports keras.src")
            if isinstance(node, ast.Attribute) and node.attr in private:
                problems.append(f"{path}:{node.lineno}: {node.attr}")
    assert not problems, "\n".join(problems)


def test_the_docs_layers_are_these():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    lines = block.splitlines()
    for layer, names in LAYERS.items():
        start = next(
            (i for i, text in enumerate(lines) if re.match(rf"\s*{layer}\s", text)),
            None,
        )
        assert start is not None, f"layer {layer} is missing from docs/architecture.md"
        end = next(
            (
                i
                for i, text in enumerate(lines[start + 1 :], start + 1)
                if re.match(r"\s*\d\s", text) or "───" in text
            ),
            len(lines),
        )
        drawn = " ".join(lines[start:end])
        for name in names:
            if name != "__main__":
                assert re.search(rf"\b{re.escape(name)}\b", drawn), (
                    f"docs/architecture.md's layer {layer} omits {name}"
                )


@pytest.mark.parametrize(
    "bad", ["from keras_distill import tuner\n", "import keras.src.ops\n"]
)
def test_the_checks_can_fail(tmp_path, bad, monkeypatch):
    path = PACKAGE / "params.py"
    source = path.read_text()
    monkeypatch.setattr(
        pathlib.Path,
        "read_text",
        lambda self, *a, **k: (
            (bad + source) if self == path else pathlib.Path.open(self).read()
        ),
    )
    with pytest.raises(AssertionError):
        test_no_module_imports_from_a_higher_layer_or_the_package()
        test_keras_internals_only_through_compat()


def test_no_engine_module_names_a_concrete_term_class():
    import keras_distill.terms as terms

    classes = {cls.__name__ for cls in terms.TERMS.values()}
    engine = [
        p
        for p in PACKAGE.rglob("*.py")
        if p.parent.name in ("distiller", "continual", "app", "cache", "tuner")
    ]
    problems = [
        f"{p}:{i}: {name}"
        for p in engine
        for i, line in enumerate(p.read_text().splitlines(), 1)
        for name in classes
        if re.search(rf"\b{name}\b", line)
    ]
    assert not problems, "\n".join(problems)


# A module a maintainer can read in one sitting; the engine's class stays an
# engine (its jobs live in distiller/*.py beside it).
MAX_MODULE_LINES = 800
MAX_DISTILLER_CLASS_LINES = 500


def test_no_module_outgrows_its_concern():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in [*PACKAGE.rglob("*.py"), ROOT / "keras_distill_cli.py"]
    }
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them): {big}"


def test_the_distiller_class_stays_small():
    path = PACKAGE / "distiller" / "model.py"
    tree = ast.parse(path.read_text())
    (node,) = [
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Distiller"
    ]
    length = node.end_lineno - node.lineno + 1
    assert length < MAX_DISTILLER_CLASS_LINES, (
        f"Distiller is {length} lines; move a job into distiller/*.py"
    )
