"""Run a list of training runs on ``jobs`` worker processes and hand each finished one back.

Measured on the 2-core machine this was written on (benchmarks/race_speed.py, MNIST-1D MLP): two
forked processes with one torch thread each beat two Python threads (the GIL serialises the small
ops of a 100-100 MLP: threads gave no speed-up) and beat one process with two torch threads (which
was many times *slower* than one thread for tensors this small). So: ``fork`` processes, one torch
thread per worker. Fork (not spawn) also lets a user's own task — lambdas and all — reach the
workers without being pickled, and skips re-importing torch in each worker.

Workers ignore SIGINT: Ctrl-C reaches the parent, which stops the workers and keeps every run that
already finished. Workers die with the parent however it ends, SIGKILL included
(:func:`descentlab.lifetime.die_with_parent`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from ..lifetime import die_with_parent
from ..train.result import RunResult
from .record import RunRecord, RunSpec

Job = tuple[RunSpec, ...]
"""Runs that train together: one run, or a batch for the batched engine (:mod:`.batching`)."""
Plan = Callable[[list[RunSpec]], list[Job]]
"""Turns runs to make into jobs; the default makes one job per run."""

RunFn = Callable[..., RunResult]
"""``run_fn(task, *, model, optimizer, schedule, lr, batch_size, epochs, seed, evaluate_test, device)`` ->
a :class:`descentlab.train.RunResult` (the engine is :func:`descentlab.train.train`)."""

MAX_JOBS = 1024
"""The most worker processes a race starts (all are forked at once)."""

# Set in the parent right before the pool forks, so workers inherit them without pickling.
_CONTEXT: dict[str, Any] = {}


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: Any) -> int:
    if jobs is None:
        return default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be an integer in [1, {MAX_JOBS}], got {jobs!r}")
    return jobs


def run_one(spec: RunSpec, context: Mapping[str, Any] | None = None) -> tuple[RunSpec, RunRecord]:
    """Train one run with ``context`` (default: the one inherited from the parent). A run that raises is
    recorded (status ``error``)."""
    ctx = _CONTEXT if context is None else context
    batch_size = ctx["batch_size_for"](spec.optimizer)
    started = time.perf_counter()
    try:
        result = ctx["run_fn"](ctx["task"], model=ctx["model"], optimizer=spec.optimizer, schedule=spec.schedule,
                               lr=spec.lr, batch_size=batch_size, epochs=ctx["epochs"], seed=spec.seed,
                               evaluate_test=spec.phase == ctx["final_phase"], device=ctx["device"])
        if not isinstance(result, RunResult):
            raise TypeError(f"run_fn returned {type(result).__name__}, not a descentlab.train.RunResult")
        record = RunRecord.from_result(spec, result, batch_size, **ctx["stamp"])
    except Exception as error:  # a bad run is recorded, it never stops the race
        record = RunRecord.failed(spec, batch_size, f"{type(error).__name__}: {error}",
                                  traceback.format_exc(limit=-3), time.perf_counter() - started, **ctx["stamp"])
    return spec, record


def run_job(job: Job, context: Mapping[str, Any] | None = None) -> list[tuple[RunSpec, RunRecord]]:
    """Train a job: one run with :func:`run_one`, a batch with ``context["run_batch"]``."""
    ctx = _CONTEXT if context is None else context
    run_batch = ctx.get("run_batch")
    if len(job) > 1 and run_batch is not None:
        return run_batch(job, ctx)
    return [run_one(spec, ctx) for spec in job]


def one_job_per_run(specs: list[RunSpec]) -> list[Job]:
    return [(spec,) for spec in specs]


def _preload() -> None:
    """Import what every run would otherwise import on its first optimizer: torch.optim's first
    ``add_param_group`` imports ``torch._dynamo`` (seconds). Done once in the parent, forked workers
    inherit it instead of each paying for it."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # an optimisation only
        pass


def _init_worker(parent_pid: int) -> None:
    import torch

    die_with_parent(parent_pid)  # whatever kills the race (SIGKILL included), its workers go with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def run_all(specs: Iterable[RunSpec], context: dict[str, Any], jobs: int,
            more: Callable[[RunSpec, RunRecord], list[RunSpec]] | None = None, plan: Plan = one_job_per_run,
            gather: int = 1) -> Iterator[tuple[RunSpec, RunRecord]]:
    """Yield ``(spec, record)`` for every spec as runs finish. ``more(spec, record)`` may return runs
    to add once a run finished (the final runs of an optimizer whose tuning is complete); ``plan``
    groups runs into jobs (each job trains in one worker). Added runs wait until ``gather`` of them
    are waiting or no job is left in flight, so that a batching ``plan`` sees them together."""
    _CONTEXT.clear()
    _CONTEXT.update(context)
    queue = plan(list(specs))
    if jobs <= 1:
        yield from _run_inline(queue, more, plan, gather)
        return
    _preload()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method),
                                   initializer=_init_worker, initargs=(os.getpid(),))
    pending: set[Future[list[tuple[RunSpec, RunRecord]]]] = set()
    waiting: list[RunSpec] = []
    try:
        for job in queue:
            pending.add(executor.submit(run_job, job))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: f.result()[0][0]):
                for spec, record in future.result():
                    yield spec, record
                    waiting += more(spec, record) if more else []
            if waiting and (len(waiting) >= gather or not pending):
                for job in plan(waiting):
                    pending.add(executor.submit(run_job, job))
                waiting = []
    finally:
        if pending:  # interrupted (Ctrl-C, an error, or the consumer stopped): stop the workers now
            for future in pending:
                future.cancel()
            for process in list(getattr(executor, "_processes", {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)  # always: no worker outlives the race
        _CONTEXT.clear()


def _run_inline(queue: list[Job], more: Callable[[RunSpec, RunRecord], list[RunSpec]] | None, plan: Plan,
                gather: int) -> Iterator[tuple[RunSpec, RunRecord]]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    waiting: list[RunSpec] = []
    try:
        while queue:
            for spec, record in run_job(queue.pop(0)):
                yield spec, record
                waiting += more(spec, record) if more else []
            if waiting and (len(waiting) >= gather or not queue):
                queue.extend(plan(waiting))
                waiting = []
    finally:
        torch.set_num_threads(threads)
