"""Tasks for the Ray backend's tests, named by import path (``ray_race_tasks:...``) so that Ray
workers import them: the least-squares task, with a model factory that misbehaves on purpose."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from torch import nn

from descentlab.tasks import Task
from descentlab.tasks.registry import get_task

DIE_ONCE_MARKER = "DESCENTLAB_TEST_DIE_ONCE"
"""Environment variable of the Ray nodes: the file whose creation marks that a worker already died."""


def _with_model(build: Any) -> Task:
    task = get_task("lstsq")
    factory = task.models["linear"]

    def model(*args: Any, **kwargs: Any) -> nn.Module:
        build()
        return factory(*args, **kwargs)

    return dataclasses.replace(task, models={**task.models, "linear": model})


def _die_once() -> None:
    """The first run to build its model anywhere in the cluster kills its worker process (as an OOM kill would)."""
    try:
        os.close(os.open(os.environ[DIE_ONCE_MARKER], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def lstsq_dies_once() -> Task:
    """lstsq, but the worker of the first run dies mid-run (after the run started, before it trained)."""
    return _with_model(_die_once)


def lstsq_slow() -> Task:
    """lstsq, each run 0.3 s longer: a race long enough to be killed in the middle."""
    return _with_model(lambda: time.sleep(0.3))
