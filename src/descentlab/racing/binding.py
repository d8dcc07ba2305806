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
  ``1/n_val`` of accuracy: the resolution of every validation comparison).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..tasks import Task


def model_fingerprint(task: Task, model: str) -> str:
    module = task.make_model(model, 0)
    layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in
              [*module.named_parameters(), *module.named_buffers()]]
    loss = getattr(task.loss_fn, "__qualname__", None) or type(task.loss_fn).__qualname__
    text = f"{module!r}\n{layout!r}\n{getattr(task.loss_fn, '__module__', '')}.{loss}"
    return hashlib.sha256(text.encode()).hexdigest()


def of(task: Task, model: str) -> dict[str, Any]:
    """The binding of a race on ``task``'s ``model`` (see the module docstring)."""
    return {"data_sha256": task.fingerprint(), "model_sha256": model_fingerprint(task, model),
            "n_train": task.size("train"), "n_val": task.size("val"),
            "n_test": task.size("test") if task.has_test else 0}
