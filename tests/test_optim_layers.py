"""House issue 23: imports inside ``descentlab.optim`` flow down (no circles, deferred imports counted),
and torch._dynamo is not imported by importing descentlab, its optimizers or its CLI's help."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import descentlab.optim

PACKAGE = Path(descentlab.optim.__file__).parent


def _imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports anywhere in it (top level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("descentlab.optim."):
            found.add(node.module.split(".")[2])
    return found


def test_modules_of_optim_import_each_other_without_circles():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert "define" not in graph["rule"] and graph["rule"] <= {"hyper"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(f"import circle: {' -> '.join((*path[path.index(module):], module))}")
        if module in done or module not in graph:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_importing_descentlab_and_its_help_leave_torch_dynamo_out():
    code = ("import sys, descentlab, descentlab.optim, descentlab.optim.engine\n"
            "from descentlab.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
