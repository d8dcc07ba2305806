"""Tasks: offline, seeded data + model factories + losses (datasets.py, models.py) and 2-D
loss surfaces (surfaces.py)."""

from .registry import (
    TASKS,
    Task,
    custom_task,
    from_tensors,
    get_task,
    half_mse,
    model_names,
    task_names,
)
from .resolve import resolve_task

__all__ = ["TASKS", "Task", "custom_task", "from_tensors", "get_task", "half_mse", "model_names", "resolve_task",
           "task_names"]
