"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers flow down (cli -> study -> lab ->
report/lrfind -> racing -> train -> tasks -> optim -> the torch-free bottom: version, atomic, ...), nothing
but the command line imports the package root, and no package has an import circle between its modules.
The same check as ``make lint`` (``lint-imports``), run on the code this test imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import descentlab

ROOT = Path(__file__).resolve().parents[1]
CHECK = ("import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def test_the_import_contracts_are_kept():
    src = str(Path(descentlab.__file__).resolve().parents[1])  # the descentlab under test, wherever it is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert "Contracts: 3 kept, 0 broken." in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
