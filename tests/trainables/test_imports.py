"""How the trainables modules depend on each other: one way, never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import hpsearch.trainables

PACKAGE = Path(hpsearch.trainables.__file__).parent


def _imports(path: Path) -> set[str]:
    """The ``hpsearch.trainables.*`` modules a file imports anywhere (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("hpsearch.trainables.")}
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = {f"hpsearch.trainables.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    assert not graph["hpsearch.trainables.cost"]  # measuring a model needs no model by name
