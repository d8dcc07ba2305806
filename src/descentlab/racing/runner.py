"""Run a race's jobs on ``jobs`` worker processes and hand each finished run back.

Measured on the 2-core machine this was written on (benchmarks/race_speed.py, MNIST-1D MLP): two
forked processes with one torch thread each beat two Python threads (the GIL serialises the small
ops of a 100-100 MLP: threads gave no speed-up) and beat one process with two torch threads (which
was many times *slower* than one thread for tensors this small). So: one ``fork``ed process per job,
one torch thread each, at most ``jobs`` at a time. Fork (not spawn) lets a user's own task — lambdas
and all — and the race's :class:`RaceContext` reach the worker without being pickled, and skips
re-importing torch in each worker; the results come back through a pipe.

A worker that dies (SIGKILL from the OOM killer, a segfault in native code) takes only its own job:
its runs are tried again once in a fresh process (:data:`RETRIES`), and if that one dies too each of
them is recorded as failed, naming the signal, and the race goes on. Workers ignore SIGINT: Ctrl-C
reaches the parent, which stops the workers and keeps every run that already finished. Workers die
with the parent however it ends, SIGKILL included (:func:`descentlab.lifetime.die_with_parent`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..lifetime import die_with_parent
from ..tasks import Task
from ..train.result import RunResult
from .record import FINAL, RunRecord, RunSpec

Job = tuple[RunSpec, ...]
"""Runs that train together: one run, or a batch for the batched engine (:mod:`.batching`)."""
Plan = Callable[[list[RunSpec], int], list[Job]]
"""Turns runs to make into jobs for as many workers (the second argument); the default makes one job per run."""

RunFn = Callable[..., RunResult]
"""``run_fn(task, *, model, optimizer, schedule, lr, batch_size, epochs, seed, evaluate_test, device,
optimizer_options, patience)`` -> a :class:`descentlab.train.RunResult` (the engine is
:func:`descentlab.train.train`)."""

MAX_JOBS = 1024
"""The most worker processes a race runs at once."""
RETRIES = 1
"""A job whose worker process died is tried again this many times before its runs are recorded as failed."""


@dataclass(frozen=True)
class TaskRef:
    """A task by name (a built-in name or ``module:attr``) and options, as Ray workers resolve it."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RaceContext:
    """What every run of a race shares: the engine, the task, the model, the budget, where runs train,
    and the stamp every record carries (versions, machine). Forked workers inherit it; Ray pickles it
    with the task as a :class:`TaskRef`."""

    run_fn: RunFn
    task: Task | TaskRef
    model: str
    epochs: int
    device: str
    stamp: Mapping[str, Any] = field(default_factory=dict)
    patience: int | None = None
    """Early stopping of tuning runs (confirmation runs train their whole budget)."""
    run_batch: Callable[[Job, RaceContext], list[tuple[RunSpec, RunRecord]]] | None = None
    """Trains a job of several runs as one batch (:func:`descentlab.racing.batching.run_batch`); None: alone."""

    def patience_for(self, spec: RunSpec) -> int | None:
        return None if spec.phase == FINAL else self.patience


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


def run_one(spec: RunSpec, context: RaceContext) -> tuple[RunSpec, RunRecord]:
    """Train one run. A run that raises is recorded (status ``error``)."""
    started = time.perf_counter()
    try:
        if not isinstance(context.task, Task):
            raise TypeError(f"the task reached this worker as {context.task!r}, not a Task")
        result = context.run_fn(context.task, model=context.model, optimizer=spec.optimizer, schedule=spec.schedule,
                                lr=spec.lr, batch_size=spec.batch_size, epochs=context.epochs, seed=spec.seed,
                                evaluate_test=spec.phase == FINAL, device=context.device,
                                optimizer_options=dict(spec.hypers), patience=context.patience_for(spec))
        if not isinstance(result, RunResult):
            raise TypeError(f"run_fn returned {type(result).__name__}, not a descentlab.train.RunResult")
        record = RunRecord.from_result(spec, result, **context.stamp)
    except Exception as error:  # a bad run is recorded, it never stops the race
        record = RunRecord.failed(spec, f"{type(error).__name__}: {error}", traceback.format_exc(limit=-3),
                                  time.perf_counter() - started, **context.stamp)
    return spec, record


def run_job(job: Job, context: RaceContext) -> list[tuple[RunSpec, RunRecord]]:
    """Train a job: one run with :func:`run_one`, a batch with ``context.run_batch``."""
    if len(job) > 1 and context.run_batch is not None:
        return context.run_batch(job, context)
    return [run_one(spec, context) for spec in job]


def one_job_per_run(specs: list[RunSpec], workers: int = 1) -> list[Job]:
    return [(spec,) for spec in specs]


def _preload(specs: list[RunSpec], context: RaceContext) -> None:
    """Do once in the parent what every worker would otherwise do on its first step, so that forked
    workers inherit it: torch.optim's first ``add_param_group`` imports ``torch._dynamo`` (seconds), and
    each optimizer's fused kernel is loaded and self-checked for the task's dtype (:mod:`descentlab.optim._fused`:
    0.2-0.5 s per process, paid by every worker — once per run on the per-run engine)."""
    try:
        import torch
        import torch._dynamo

        from ..optim import resolve
    except Exception:  # an optimisation only
        return
    x = getattr(context.task, "x_train", None)
    dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.get_default_dtype()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for optimizer, hypers in dict.fromkeys((spec.optimizer, spec.hypers) for spec in specs):
            try:
                param = torch.zeros(4, 3, dtype=dtype, requires_grad=True)
                opt = resolve(optimizer).create([param], lr=1e-3, **dict(hypers))
                for _ in range(2):
                    param.grad = torch.full_like(param, 1e-3)
                    opt.step()
            except Exception:  # an optimisation only: the worker finds out (and records) what goes wrong
                pass
    finally:
        torch.set_num_threads(threads)


def signal_name(exitcode: int | None) -> str:
    """How a worker process ended, in words (``SIGKILL``; ``exit status 3``)."""
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _work(job: Job, context: RaceContext, conn: Connection, parent_pid: int) -> None:
    """A worker process: train ``job``, send its records, exit."""
    import torch

    die_with_parent(parent_pid)  # whatever kills the race (SIGKILL included), its workers go with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    conn.send(run_job(job, context))
    conn.close()


@dataclass
class _Worker:
    job: Job
    attempt: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    started: float


def run_all(specs: Iterable[RunSpec], context: RaceContext, jobs: int,
            more: Callable[[RunSpec, RunRecord], list[RunSpec]] | None = None, plan: Plan = one_job_per_run,
            gather: int = 1) -> Iterator[tuple[RunSpec, RunRecord]]:
    """Yield ``(spec, record)`` for every spec as runs finish. ``more(spec, record)`` may return runs
    to add once a run finished (the next stage of an arm); ``plan`` groups runs into jobs (each job
    trains in one worker). Added runs wait until ``gather`` of them are waiting, no job is left in
    flight, or a worker would otherwise be idle (nothing queued), so that a batching ``plan`` sees them
    together; for an idle worker they are planned for the free workers only (one batch on one free core
    rather than two, one of which would wait for the busy core)."""
    queue: deque[tuple[Job, int]] = deque((job, 0) for job in plan(list(specs), jobs))
    if jobs <= 1:
        yield from _run_inline(queue, context, more, plan, gather)
        return
    _preload([spec for job in queue for spec in job[0]], context)
    fork = multiprocessing.get_context("fork")
    busy: dict[Connection, _Worker] = {}
    waiting: list[RunSpec] = []
    try:
        while queue or busy:
            while queue and len(busy) < jobs:
                job, attempt = queue.popleft()
                receive, send = fork.Pipe(duplex=False)
                process = fork.Process(target=_work, args=(job, context, send, os.getpid()))
                process.start()
                send.close()
                busy[receive] = _Worker(job, attempt, process, receive, time.perf_counter())
            ready = wait(list(busy))
            for conn in ready:
                worker = busy.pop(conn)
                finished = _collect(worker, context)
                if finished is None:  # the process died: try the job again, once
                    queue.append((worker.job, worker.attempt + 1))
                    continue
                for spec, record in finished:
                    yield spec, record
                    waiting += more(spec, record) if more else []
            free = jobs - len(busy)
            if waiting and (len(waiting) >= gather or not busy or (free > 0 and not queue)):
                workers = jobs if len(waiting) >= gather or not busy else free
                queue.extend((job, 0) for job in plan(waiting, workers))
                waiting = []
    finally:  # finished, interrupted (Ctrl-C, an error) or the consumer stopped: no worker outlives the race
        for worker in busy.values():
            worker.process.terminate()
        for worker in busy.values():
            worker.process.join()
            worker.conn.close()


def _collect(worker: _Worker, context: RaceContext) -> list[tuple[RunSpec, RunRecord]] | None:
    """The records a worker sent; None when it died before sending them and may be tried again; failed
    records naming how it died once it has used its retries."""
    try:
        finished = worker.conn.recv()
    except (EOFError, OSError):
        finished = None
    worker.conn.close()
    worker.process.join()
    if finished is not None:
        return finished
    how = signal_name(worker.process.exitcode)
    if worker.attempt < RETRIES:
        return None
    seconds = time.perf_counter() - worker.started
    tries = worker.attempt + 1
    error = f"WorkerDied: the worker process training this run ended with {how} ({tries} tries)"
    return [(spec, RunRecord.failed(spec, error, error, seconds, **context.stamp)) for spec in worker.job]


def _run_inline(queue: deque[tuple[Job, int]], context: RaceContext,
                more: Callable[[RunSpec, RunRecord], list[RunSpec]] | None, plan: Plan,
                gather: int) -> Iterator[tuple[RunSpec, RunRecord]]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    waiting: list[RunSpec] = []
    try:
        while queue:
            job, _ = queue.popleft()
            for spec, record in run_job(job, context):
                yield spec, record
                waiting += more(spec, record) if more else []
            if waiting and (len(waiting) >= gather or not queue):
                queue.extend((job, 0) for job in plan(waiting, 1))
                waiting = []
    finally:
        torch.set_num_threads(threads)
