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
STARTS_DIR = "DESCENTLAB_TEST_STARTS"
"""Environment variable of the Ray nodes: the folder where each run that starts leaves a file named by its
worker's pid (with the node's name in it), so the test can find, and kill, the worker running a run."""
HOLD_MARKER = "DESCENTLAB_TEST_HOLD"
"""Environment variable of the Ray nodes that should hold a run: the file whose creation marks that one run
(the first to start on such a node) is waiting to be killed."""
NODE_NAME = "DESCENTLAB_TEST_NODE"
"""Environment variable of a Ray node: its name, written into the start files of its runs."""
HOLD_S = 30.0
"""The longest a held run waits to be killed before it trains normally (the test kills it within seconds)."""


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


def _report_start() -> None:
    """Leave ``STARTS/<n>-<pid>`` (n: how many runs this worker started before) holding the node's
    name; then, on a node told to hold, the first run of the cluster to get here waits to be killed."""
    folder = os.environ[STARTS_DIR]
    mine = [name for name in os.listdir(folder) if name.endswith(f"-{os.getpid()}")]
    partial = os.path.join(folder, f".{len(mine)}-{os.getpid()}")
    with open(partial, "w") as file:
        file.write(os.environ.get(NODE_NAME, ""))
    os.replace(partial, os.path.join(folder, f"{len(mine)}-{os.getpid()}"))  # the test sees whole files only
    marker = os.environ.get(HOLD_MARKER)
    if marker is None:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(HOLD_S)


def lstsq_reports_starts() -> Task:
    """lstsq, each run reporting its worker's pid when it starts (after the run started, before it
    trained); on a node given :data:`HOLD_MARKER`, the first run waits there to be killed."""
    return _with_model(_report_start)


def lstsq_slow() -> Task:
    """lstsq, each run 0.3 s longer: a race long enough to be killed in the middle."""
    return _with_model(lambda: time.sleep(0.3))
