"""The package layers stay one-way and free of cycles: a walk over every module's imports
(module level and inside functions), no import-linter needed.

Layers, top to bottom; a module may import its own layer's modules and those below, never
above: ``cli`` > ``evaluation`` > ``training`` > ``runs`` > ``inference`` > ``components`` >
the foundations (``config``, ``registry``, ``errors``, ``param_store``, ``boundary``).
ARCHITECTURE.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyrovae"

LAYERS = [
    ("cli",),
    ("evaluation",),
    ("training",),
    ("runs",),
    ("inference",),
    ("components",),
    ("config", "registry", "errors", "param_store", "boundary"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The pyrovae modules ``path`` imports (absolute or relative, anywhere in the file)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pyrovae")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pyrovae"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules} - {name}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself and __main__ re-export everything
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    return None


def test_every_module_belongs_to_a_layer():
    loose = [m for m in GRAPH if m.count(".") >= 1 and layer(m) is None]
    assert loose == ["pyrovae.__main__"], f"modules outside every layer: {loose}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    own = layer(module)
    if own is None:
        return
    upward = [m for m in GRAPH[module] if (layer(m) is not None and layer(m) < own)]
    assert not upward, f"{module} imports a higher layer: {upward}"


def test_no_import_cycles():
    # Tarjan-free check: a depth-first search that reports the first back edge.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for child in sorted(GRAPH.get(node, ())):
            if child.rpartition(".")[0] == node or node.rpartition(".")[0] == child:
                continue  # a package and its own submodules
            if state.get(child) == 1:
                cycle = path[path.index(child) :] + [child]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if child not in state:
                visit(child)
        path.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state and layer(module) is not None:
            visit(module)


def test_public_functions_do_not_shadow_modules():
    import pyrovae

    for name in pyrovae.__all__:
        assert (PACKAGE / name).with_suffix(".py").exists() is False, name
        assert not (PACKAGE / name).is_dir(), f"pyrovae.{name} hides the package pyrovae/{name}"
