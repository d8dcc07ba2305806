"""Tasks for the Ray backend's tests, named by import path (``ray_race_tasks:...``) so that Ray
workers import them: the least-squares task, with a model factory instrumented for the tests (it says
which worker started a run, holds a run until the test kills its worker, or slows every run)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from descentlab.tasks import Task
from descentlab.tasks.registry import get_task

STARTS_DIR = "DESCENTLAB_TEST_STARTS"
"""Environment variable of the Ray nodes: the folder where each run that starts leaves a file named by its
worker's pid (with the node's name in it), so the test can find, and kill, the worker running a run."""
HOLD_MARKER = "DESCENTLAB_TEST_HOLD"
"""Environment variable of the Ray nodes that should hold a run: the file whose creation marks that one run
(the first to start on such a node) is waiting to be killed."""
NODE_NAME = "DESCENTLAB_TEST_NODE"
"""Environment variable of a Ray node: its name, written into the start files of its runs."""
AFTER_NODE = "DESCENTLAB_TEST_AFTER"
"""Environment variable of a Ray node: the name of another node; this node's runs wait (at most
:data:`HOLD_S`) until a run has started there, so that the other node surely gets runs of the race."""
HOLD_S = 30.0
"""The longest a held run waits to be killed before it trains normally (the test kills it within seconds)."""


def _with_model(build: Any) -> Task:
    task = get_task("lstsq")
    factory = task.models["linear"]

    def model(*args: Any, **kwargs: Any) -> nn.Module:
        build()
        return factory(*args, **kwargs)

    return dataclasses.replace(task, models={**task.models, "linear": model})


def _report_start() -> None:
    """Leave ``STARTS/<n>-<pid>`` (n: how many runs this worker started before) holding the node's
    name; then wait for a run on the node named by :data:`AFTER_NODE`, if any; then, on a node told to
    hold, the first run of the cluster to get here waits to be killed."""
    folder = os.environ.get(STARTS_DIR)
    if folder is None:  # not a Ray node: race v3's driver builds the model once to fingerprint it (binding)
        return
    mine = [name for name in os.listdir(folder) if name.endswith(f"-{os.getpid()}")]
    partial = os.path.join(folder, f".{len(mine)}-{os.getpid()}")
    with open(partial, "w") as file:
        file.write(os.environ.get(NODE_NAME, ""))
    os.replace(partial, os.path.join(folder, f"{len(mine)}-{os.getpid()}"))  # the test sees whole files only
    _wait_for_node(folder, os.environ.get(AFTER_NODE))
    marker = os.environ.get(HOLD_MARKER)
    if marker is None:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(HOLD_S)


def _wait_for_node(folder: str, node: str | None) -> None:
    deadline = time.monotonic() + HOLD_S
    while node is not None and time.monotonic() < deadline:
        for name in os.listdir(folder):
            if not name.startswith(".") and Path(folder, name).read_text() == node:
                return
        time.sleep(0.05)


def lstsq_reports_starts() -> Task:
    """lstsq, each run reporting its worker's pid when it starts (after the run started, before it
    trained); on a node given :data:`HOLD_MARKER`, the first run waits there to be killed; on a node
    given :data:`AFTER_NODE`, runs wait for the other node to start one."""
    return _with_model(_report_start)


def lstsq_slow() -> Task:
    """lstsq, each run 0.3 s longer: a race long enough to be killed in the middle."""
    return _with_model(lambda: time.sleep(0.3))
