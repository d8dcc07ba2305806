"""``--backend ray``: each run of a race is one Ray task; the driver alone writes ``results.jsonl``.

Where the runs go: ``address`` (``--address``, else ``RAY_ADDRESS``) names a running cluster, as
``ray.init(address=...)`` takes it (``auto``: the one ``ray start`` left on this machine). Without
one (or with ``local``), the race starts a private one-node Ray on loopback
(:mod:`descentlab.racing.local_ray`) with ``jobs`` CPUs, and stops it when the race ends, however
it ends.

What reaches a worker: the run (a :class:`RunSpec`) and the race's context, with the task by *name*
(a built-in name or ``module:attr``, resolved on the worker, once per worker process) — so the
task's module, like a user's own rule ``module:attr`` named as an optimizer, must be importable on
every node (installed there, or on the nodes' ``PYTHONPATH``). Each task asks for one CPU, and one
GPU when the race trains on ``cuda``.

Failures: a run that raises is recorded by :func:`~descentlab.racing.runner.run_one` as on the local
backend. A worker process (or node) that dies mid-run is retried by Ray up to :data:`MAX_RETRIES`
times; after that the run is recorded as failed with Ray's reason, and the race goes on. The results
store is only written here, in the driver, one finished run at a time — so a driver killed with
SIGKILL loses only the runs in flight, and rerunning the same command resumes.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from . import local_ray
from .record import RunRecord, RunSpec
from .runner import RaceContext, TaskRef, run_one

MAX_RETRIES = 2
"""Ray reruns a run whose worker died this many times before the run is recorded as failed."""
INSTALL_HINT = "--backend ray needs Ray, which is not installed here: pip install 'descentlab[ray]'"
LOCAL = "local"
"""``--address local``: always a private one-node Ray for this race."""

_TASKS: dict[str, Any] = {}
"""Tasks resolved in this worker process, by name and options (a worker runs many runs of a race)."""


def check_installed() -> None:
    """ValueError with how to install Ray when it is missing (without importing it: see :func:`import_ray`)."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError(INSTALL_HINT)


def chosen_address(address: str | None) -> str:
    """The cluster the race will use: ``address``, else ``RAY_ADDRESS``, else :data:`LOCAL`."""
    return address or os.environ.get("RAY_ADDRESS") or LOCAL


def is_loopback(address: str) -> bool:
    """Whether ``address`` (``local``, or host:port, ray://host:port) is on this machine's loopback."""
    if address == LOCAL:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


def driver_env(address: str, token: str | None) -> dict[str, str]:
    """What the driver's environment needs, set before Ray is first imported (Ray 2.60 reads both then):
    for a cluster on loopback, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, or Ray replaces 127.0.0.1 with
    the machine's outside address; for the private local Ray, its token."""
    env = {local_ray.LOOPBACK_ONLY: "0"} if is_loopback(address) else {}
    return {**env, **(local_ray.auth_env(token) if token is not None else {})}


def check_task_name(task: object) -> None:
    """Ray workers get the task by name: a Task object built in the driver has none they can import."""
    if not isinstance(task, str):
        raise ValueError("backend ray: pass the task as a built-in name or an import path 'module:attr' (importable "
                         f"on every node), not a {type(task).__name__} object")


def _resolved_task(name: str, options: Mapping[str, Any]) -> Any:
    from ..atomic import dumps
    from ..tasks.resolve import resolve_task

    key = dumps([name, dict(options)], sort_keys=True)
    if key not in _TASKS:
        _TASKS[key] = resolve_task(name, **options)
    return _TASKS[key]


def run_on_worker(spec: RunSpec, context: RaceContext) -> tuple[RunSpec, RunRecord]:
    """One run on a Ray worker: the task resolved here by name, then exactly the local backend's run."""
    import torch

    torch.set_num_threads(1)
    if not isinstance(context.task, TaskRef):
        raise TypeError(f"a Ray worker gets the task by name (a TaskRef), got {type(context.task).__name__}")
    return run_one(spec, replace(context, task=_resolved_task(context.task.name, context.task.options)))


@contextmanager
def connected(address: str | None, cpus: int, gpus: int) -> Iterator[Any]:
    """``ray`` connected to the cluster at ``address`` (or a private local one, see the module doc),
    disconnected (and the private one stopped) on the way out, whatever happens inside. A process
    that had imported Ray before keeps the settings it was imported with (see :func:`driver_env`)."""
    check_installed()
    address = chosen_address(address)
    token = local_ray.new_token() if address == LOCAL else None
    local: local_ray.LocalRay | None = None
    with _environment(driver_env(address, token)):
        import ray

        try:
            if token is not None:
                local = local_ray.LocalRay.start(cpus, token)
                address = local.address
            ray.init(address=address, log_to_driver=False, logging_level="WARNING", configure_logging=True)
            try:
                _check_resources(ray, address, gpus)
                yield ray
            finally:
                ray.shutdown()
        finally:
            if local is not None:
                local.stop()


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the block, as it was afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_resources(ray: Any, address: str, gpus: int) -> None:
    """A task asking for what no node has would wait forever: refuse such a race instead."""
    resources = ray.cluster_resources()
    if resources.get("CPU", 0) < 1:
        raise ValueError(f"backend ray: the cluster at {address!r} has no CPU to run on")
    if gpus and resources.get("GPU", 0) < gpus:
        raise ValueError(f"backend ray: --device cuda needs a GPU, and the cluster at {address!r} has none")


def run_all(specs: Iterable[RunSpec], context: RaceContext, address: str | None, cpus: int,
            more: Callable[[RunSpec, RunRecord], list[RunSpec]] | None = None,
            ) -> Iterator[tuple[RunSpec, RunRecord]]:
    """As :func:`descentlab.racing.runner.run_all`, each run a Ray task. ``context.task`` is a
    :class:`~.runner.TaskRef` (the task by name); ``cpus``: the private local Ray's CPUs, when one is started."""
    gpus = 1 if str(context.device).startswith("cuda") else 0
    with connected(address, cpus, gpus) as ray:
        remote = ray.remote(run_on_worker).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES,
                                                   retry_exceptions=False)
        shared = ray.put(context)
        pending: dict[Any, tuple[RunSpec, float]] = {}

        def submit(spec: RunSpec) -> None:
            pending[remote.remote(spec, shared)] = (spec, time.perf_counter())

        for spec in specs:
            submit(spec)
        try:
            while pending:  # every pass takes at least one run off: each task ends, by result or by failure
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in sorted(done, key=lambda r: pending[r][0]):
                    spec, started = pending.pop(ref)
                    record = _outcome(ray, ref, spec, started, context)
                    yield spec, record
                    for extra in (more(spec, record) if more else []):
                        submit(extra)
        finally:
            for ref in pending:  # interrupted: nothing of this race keeps running on the cluster
                ray.cancel(ref, force=True)


def _outcome(ray: Any, ref: Any, spec: RunSpec, started: float, context: RaceContext) -> RunRecord:
    """The run's record, or a failed record with Ray's reason when its worker died past the retries."""
    try:
        _, record = ray.get(ref)
        return record
    except Exception as error:  # WorkerCrashedError, NodeDiedError, a task that could not even start ...
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return RunRecord.failed(spec, f"ray: {reason}", str(error), time.perf_counter() - started, **context.stamp)
