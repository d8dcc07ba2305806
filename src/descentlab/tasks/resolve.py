"""Turn what a user names as a task into a :class:`Task`: a built-in name (``mnist1d``), an import
path ``module:attr`` to a ``Task`` or to a callable returning one (``mypkg.tasks:make_task``), or a
``Task`` object itself. The module must be importable (installed, or on ``PYTHONPATH``)."""

from __future__ import annotations

import importlib
from typing import Any

from .registry import TASKS, Task, get_task


def is_import_path(spec: str) -> bool:
    return ":" in spec


def resolve_task(spec: Task | str, **options: Any) -> Task:
    """The task ``spec`` names; ``options`` go to a built-in task's builder or to the callable an import
    path names. Raises ValueError naming ``spec`` when it does not resolve to a Task."""
    if isinstance(spec, Task):
        if options:
            raise ValueError(f"task options {sorted(options)} need a task name or import path, not a Task object")
        return spec
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"task must be a task name, an import path 'module:attr' or a Task, got {spec!r}")
    if not is_import_path(spec):
        return get_task(spec, **options)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"task {spec!r}: an import path is 'module:attr', e.g. 'mypkg.tasks:make_task'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"task {spec!r}: cannot import module {module_name!r} ({error}; is it on PYTHONPATH?)") \
            from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"task {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, Task):
        if options:
            raise ValueError(f"task {spec!r} is a Task object: it takes no task options, got {sorted(options)}")
        return target
    if not callable(target):
        raise ValueError(f"task {spec!r}: {attribute!r} is a {type(target).__name__}, expected a descentlab Task "
                         "or a callable returning one")
    try:
        task = target(**options)
    except TypeError as error:  # called with arguments it does not take (task options, or none it needs)
        raise ValueError(f"task {spec!r}: {attribute}({', '.join(f'{k}=...' for k in options)}) failed: {error}") \
            from None
    if not isinstance(task, Task):
        raise ValueError(f"task {spec!r}: {attribute}() returned a {type(task).__name__}, expected a descentlab Task")
    return task


def default_model_of(spec: str) -> str | None:
    """A built-in task's default model without building its data; None for an import path."""
    entry = TASKS.get(spec)
    return entry.default_model if entry is not None else None
