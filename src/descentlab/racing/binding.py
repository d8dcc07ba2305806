"""A race's results bound to what they were measured on: the task's data and the model's shape.

``binding.of(task, model)`` is stored in ``race.json``. A race resumed on another binding — the user's
task module now builds other data under the same ``module:attr``, the model grew a layer — is refused
(:func:`descentlab.racing.store.check_binding`): runs on old and new data would be averaged together.

- ``data_sha256``: :meth:`descentlab.tasks.Task.fingerprint` (every split's tensors, or every item of a
  Dataset-backed task);
- ``model_sha256``: SHA-256 of the model's layers as ``repr`` prints them (activations, dropout rates,
  kernel sizes) and its parameter and buffer names, shapes and dtypes (seed 0's instance: a change of
  architecture, not of initialisation), and of the loss function's name. Not covered: code inside a
  custom ``forward`` or a loss's closure — a change there is not seen;
- ``n_train`` / ``n_val`` / ``n_test``: the split sizes the report states (one validation example is
  ``1/n_val`` of accuracy: the resolution of every validation comparison);
- ``optimizers_sha256``: per raced optimizer, SHA-256 of the source file that defines it (a descentlab
  rule's update, a ``torch.optim`` class, a user's factory; ``functools.partial`` unwrapped, its
  arguments' ``repr`` included) and of its preset hyper-parameters. A user who fixes their rule and
  reruns the same command into the same ``--out`` is refused, not answered with the old rule's runs.
  The whole file counts: an edit elsewhere in it refuses the resume too (use another ``--out``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

from ..optim import registry
from ..tasks import Task


def model_fingerprint(task: Task, model: str) -> str:
    module = task.make_model(model, 0)
    layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in
              [*module.named_parameters(), *module.named_buffers()]]
    loss = getattr(task.loss_fn, "__qualname__", None) or type(task.loss_fn).__qualname__
    text = f"{module!r}\n{layout!r}\n{getattr(task.loss_fn, '__module__', '')}.{loss}"
    return hashlib.sha256(text.encode()).hexdigest()


def optimizer_fingerprint(name: str) -> str:
    """SHA-256 of the code behind optimizer ``name`` (see the module docstring)."""
    entry = registry.resolve(name)
    rule = registry.rule_of(name)
    target: Any = rule.update if rule is not None else entry.cls
    parts = [_stable(sorted(entry.preset.items()))]
    while isinstance(target, functools.partial):
        parts.append(_stable((target.args, sorted(target.keywords.items()))))
        target = target.func
    parts.append(_code(target))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _code(target: Any) -> str:
    """``module.qualname`` of a function or class (a callable instance: of its class) and the SHA-256 of the
    source file that defines it (none for C code or a notebook cell: the name stands for it)."""
    target = inspect.unwrap(target)
    if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)
            or inspect.isbuiltin(target)):
        target = type(target)  # a callable instance: its class's code decides what it does
    text = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    try:
        source = inspect.getsourcefile(target)
        with open(source or "", "rb") as file:
            text += " " + hashlib.sha256(file.read()).hexdigest()
    except (OSError, TypeError):
        pass
    return text


def _stable(value: Any) -> str:
    """``value`` as text that is the same in every process: numbers, strings and containers as ``repr``
    prints them, a callable or any other object by its code (:func:`_code`), never by its address."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_stable(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_stable(k)}: {_stable(v)}" for k, v in value.items()) + "}"
    if callable(value):
        return _code(value)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def of(task: Task, model: str, optimizers: Sequence[str] = ()) -> dict[str, Any]:
    """The binding of a race of ``optimizers`` on ``task``'s ``model`` (see the module docstring)."""
    bound: dict[str, Any] = {"data_sha256": task.fingerprint(), "model_sha256": model_fingerprint(task, model),
                             "n_train": task.size("train"), "n_val": task.size("val"),
                             "n_test": task.size("test") if task.has_test else 0}
    if optimizers:
        bound["optimizers_sha256"] = {name: optimizer_fingerprint(name) for name in optimizers}
    return bound
