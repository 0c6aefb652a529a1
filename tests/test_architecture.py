"""The package's structure (docs/architecture.md): no import circle, and
no module imports one on a floor above its own, function-level imports
included. The floors, from the bottom: `config` (global settings),
`ops`, `layers`, `models` (the
core), `models.xlstm` (the KerasHub models, an optional extra the core
never imports), `benchmark`."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_mlstm")
# (prefix, floor), the longest prefix first.
FLOORS = (
    ("keras_mlstm.models.xlstm", 3),
    ("keras_mlstm.benchmark", 4),
    ("keras_mlstm.models", 2),
    ("keras_mlstm.layers", 1),
    ("keras_mlstm.ops", 0),
    ("keras_mlstm.config", -1),  # settings every floor may read
    ("keras_mlstm", 2),  # the package itself exports the core
)


def modules():
    """`{module name: file}` of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(path, known):
    """The package's modules that the module at `path` imports, anywhere
    in it (a function-level import is an edge too)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
    return {name for name in names if name in known}


def floor(module):
    return next(level for prefix, level in FLOORS if module.startswith(prefix))


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_no_module_imports_a_floor_above_its_own():
    upward = [
        (module, imported)
        for module, targets in graph().items()
        for imported in targets
        if floor(imported) > floor(module)
    ]
    assert not upward, upward


def test_no_import_circle():
    edges = graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(edges[module]):
            if state.get(imported) == "open":
                cycle = path[path.index(imported) :] + [imported]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_graph_sees_function_level_imports():
    """The checks above would miss a circle closed inside a function."""
    edges = graph()
    assert "keras_mlstm.models.xlstm" in edges["keras_mlstm.benchmark.generate"]
