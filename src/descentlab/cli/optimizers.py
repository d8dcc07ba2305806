"""``descentlab optimizers``: list the registered optimizers with their defaults."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("optimizers", help="list the optimizers and their defaults",
                                   description="List the registered optimizers, their torch class and defaults.")
    parser.set_defaults(func=run)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def run(args: argparse.Namespace) -> int:
    from ..optim import entries

    rows = []
    for entry in entries():
        rule = getattr(entry.cls, "rule", None)
        math = rule.math_names if rule is not None else tuple(entry.defaults)
        shown = {k: v for k, v in entry.defaults.items() if k in math or k == "lr"}
        defaults = ", ".join(f"{k}={format_value(v)}" for k, v in shown.items())
        rows.append((entry.name, entry.cls.__name__, defaults, entry.summary))
    widths = [max(len(r[i]) for r in [*rows, ("name", "class", "defaults", "")]) for i in range(2)]
    print(f"{'name':<{widths[0]}}  {'class':<{widths[1]}}  defaults")
    for name, cls, defaults, summary in rows:
        print(f"{name:<{widths[0]}}  {cls:<{widths[1]}}  {defaults}")
        print(f"{'':<{widths[0]}}  {'':<{widths[1]}}  {summary}")
    return 0
