"""The ``descentlab`` command: a thin argparse layer over the Python API.

Each subcommand lives in its own module of this package, exposing ``add_parser(subparsers)`` that
registers the parser and sets ``func(args) -> int``. Building the parser imports no torch, so ``--help``
answers without it (tests/test_cli_help.py): a module's top level and ``add_parser`` import only torch-free
modules (the defaults the help quotes come from :mod:`.defaults`), and ``func`` imports the work when it
runs. Usage errors (bad arguments, bad values the API rejects with ValueError/TypeError) print one line
and exit with status 2, no traceback; so do argparse's own complaints (no usage block). A failure of the
system while working (OSError, out of memory) prints one line and exits with status 1.
``DESCENTLAB_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..version import __version__

SUBCOMMANDS = ("optimizers", "tasks", "train", "landscape", "guide", "race", "study", "lrfind", "bench")
"""Modules of this package that each add one subcommand, in the order ``--help`` lists them."""


class UsageError(Exception):
    """Raised by a subcommand for bad input: reported in one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line (``descentlab train: error: ...``), exit status 2: the usage
    block argparse prints first is left to ``--help``. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: object) -> str:
    """The first non-empty line of ``message`` (torch's errors append C++ stack frames after it)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else type(message).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="descentlab",
        description="Race, watch and benchmark the gradient-descent family (GD, SGD, momentum, "
        "AdaGrad, RMSProp, Adam).",
    )
    parser.add_argument("--version", action="version", version=f"descentlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would name the top-level parser: name the subcommand they were given to
        prog = f"descentlab {args.command}" if getattr(args, "command", None) else "descentlab"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError) as error:
        # The API rejects bad input with ValueError/TypeError naming the argument and value.
        if os.environ.get("DESCENTLAB_DEBUG"):
            raise
        print(f"descentlab {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:  # the system failed the work (disk full, out of memory, ...)
        if os.environ.get("DESCENTLAB_DEBUG"):
            raise
        print(f"descentlab {args.command}: failed: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
