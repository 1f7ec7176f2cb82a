"""How the trainables modules depend on each other: one way, never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import hpsearch.trainables
from tests.driver import python_stdout

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


def test_the_plugin_api_is_one_import_without_torch_or_ray() -> None:
    """``from hpsearch import register_model, ...`` as a plugin author writes it; the import
    stays light (the spec-validation path must not pull torch or Ray)."""
    code = ("import sys, hpsearch\n"
            "from hpsearch import (register_model, register_dataset, register_augmentation,\n"
            "                      register_trainable, Reporter, TrialConfig, UserError)\n"
            "assert {'register_model', 'register_trainable', 'TrialConfig', 'Reporter',\n"
            "        'ImageSets'} <= set(hpsearch.__all__)\n"
            "print([m for m in ('torch', 'ray') if m in sys.modules])\n")
    assert python_stdout(code) == "[]"


def test_a_trial_worker_starts_without_importing_torchvision() -> None:
    """Every new Ray worker imports the trial function's module; torchvision costs it more than
    torch (models and ops pull torch._dynamo). Only a dataset read from disk or a torchvision
    model (resnet18, squeezenet) needs it, inside the trial."""
    code = ("import sys\n"
            "from hpsearch.trainables.tune_adapter import train_trial\n"
            "from hpsearch.trainables.datadir import resolve_root\n"
            "print('torchvision' in sys.modules)\n")
    assert python_stdout(code) == "False"
