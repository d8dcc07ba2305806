"""``descentlab tasks``: list the built-in tasks and models."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("tasks", help="list the tasks and models",
                                   description="List the built-in tasks (offline data sets) and models.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.registry import TASKS, model_description, model_names

    width = max(len(name) for name in TASKS)
    print("tasks:")
    for spec in TASKS.values():
        models = ", ".join(f"{m}*" if m == spec.default_model else m for m in spec.models)
        print(f"  {spec.name:<{width}}  {spec.kind:<14}  models: {models}")
        print(f"  {'':<{width}}  {spec.description}")
    print("models (* = the task's default):")
    for name in model_names():
        print(f"  {name:<{width}}  {model_description(name)}")
    return 0
