"""``run_race()``: tune and race optimizers (and schedules) on a task over seeds, keeping every run in
a resumable store. The protocol is in :mod:`descentlab.racing.protocol`; ``descentlab.race()`` is
this plus the HTML report."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks import Task
from ..tasks.resolve import default_model_of, resolve_task
from ..train.device import check_device
from . import batching, environment, ray_backend
from .protocol import Arm, RaceConfig, make_config, select
from .record import FINAL, TUNE, RunRecord, RunSpec
from .runner import RunFn, check_jobs, run_all
from .store import RESULTS, ResultsStore, check_store
from .summary import RaceSummary, summarize


@dataclass
class RaceResult:
    """What a race returns: its config, the run records, the per-arm summary and where things are."""

    out: Path
    config: RaceConfig
    records: list[RunRecord]
    summary: RaceSummary
    ran: int
    """Runs trained by this call (the others were already in ``results.jsonl``)."""
    wall_s: float
    report_path: Path | None = None

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS

    @property
    def selected(self) -> dict[Arm, float | None]:
        return {s.arm: s.selected_lr for s in self.summary.arms}


def default_out() -> Path:
    return Path("runs") / time.strftime("race-%Y%m%d-%H%M%S")


def default_run(task: Task, **kwargs: Any) -> Any:
    """The engine: :func:`descentlab.train.train`, silent."""
    from ..train import train

    return train(task, quiet=True, **kwargs)


def run_race(task: Task | str = "mnist1d", *, model: str | None = None,
             optimizers: Sequence[str] | str | None = None,
             lrs: Sequence[float] | str | Mapping[str, Sequence[float]] | None = None,
             seeds: int | Sequence[int] | str | None = None, epochs: int | None = None,
             batch_size: int | str | None = 64, schedules: Sequence[str] | str | None = None, device: str = "cpu",
             jobs: int | None = None, quick: bool = False, out: str | os.PathLike[str] | None = None,
             task_options: Mapping[str, Any] | None = None, progress: bool | None = None,
             run_fn: RunFn | None = None, backend: str = "local", address: str | None = None,
             engine: str | None = None) -> RaceResult:
    """Race ``optimizers`` × ``schedules`` on ``task`` (a built-in task name, an import path
    ``module:attr`` to a Task or a callable returning one, or a :class:`descentlab.tasks.Task`).

    Every (optimizer, schedule, lr) of the grid is trained on the first seed; per (optimizer,
    schedule) the lr whose best validation point is best is kept and trained on every seed, each
    evaluating the test split at its own best validation point and at the end. Results go to
    ``out/results.jsonl`` (append-only, resumable: rerunning with the same ``out`` skips finished
    runs). ``quick=True`` is a small demo race. ``device``: cpu, cuda, cuda:N or mps (runs on a GPU
    train one at a time: forked workers cannot share a CUDA context). ``run_fn`` replaces the
    training engine (tests use a fake one) and must return a :class:`descentlab.train.RunResult`.
    ``backend``: ``local`` (worker processes on this machine) or ``ray`` (each run a Ray task on the
    cluster at ``address``, see :mod:`descentlab.racing.ray_backend`; the task then goes by name).
    ``engine``: ``batched`` (the local default: runs sharing a batch size train together as one
    stacked model, see :mod:`descentlab.racing.batching`; what cannot be stacked trains one at a
    time, the reason printed once) or ``per-run`` (every run alone; Ray runs are always per-run).
    Raises ValueError for bad options or an ``out`` that holds another race, before anything in
    ``out`` changes.
    """
    started = time.perf_counter()
    _check_backend(backend, address, task)
    _check_engine(engine, backend)
    torch_device = check_device(device)
    task_name = task if isinstance(task, str) else _task_object_name(task)
    task_obj = task if isinstance(task, Task) else None
    chosen_model = model
    if chosen_model is None:
        chosen_model = task_obj.default_model if task_obj is not None else default_model_of(task_name)
    if chosen_model is None:  # an import path (or an unknown name): the task itself says
        task_obj = resolve_task(task_name, **dict(task_options or {}))
        chosen_model = task_obj.default_model
    config = make_config(task=task_name, model=chosen_model, optimizers=optimizers, lrs=lrs, seeds=seeds,
                         epochs=epochs, batch_size=batch_size, quick=quick, task_options=task_options,
                         schedules=schedules, device=str(torch_device))
    if backend == "ray" and torch_device.index is not None:
        raise ValueError(f"device {device!r}: with --backend ray use --device cuda (Ray gives each run its own GPU)")
    n_jobs = check_jobs(jobs) if backend == "ray" else _check_jobs_for(jobs, torch_device.type)
    out_path = Path(out) if out is not None else default_out()
    config_json = config.to_json()
    check_store(out_path, config_json)  # refuse another race's directory before spending time on data
    if task_obj is None:
        task_obj = resolve_task(task_name, **config.task_options)
    if config.model not in task_obj.models:
        raise ValueError(f"model {config.model!r} is not a model of task {config.task!r}; known: "
                         f"{', '.join(task_obj.models)}")
    task_obj.fingerprint()  # once here, inherited by forked workers (a Dataset is read once, not per run)
    plan = None
    if backend == "local" and engine != "per-run":
        plan = batching.check(task_obj, config.model, config.optimizers, config.batch_size_for, n_jobs,
                              custom_run=run_fn is not None)
        for reason in plan.reasons:
            print(f"descentlab race: {reason}", file=sys.stderr)
    stamp = {"task": config.task, "model": config.model, "device": config.device,
             "versions": environment.versions(), "machine": environment.machine(n_jobs, config.device)}
    with ResultsStore.open(out_path, config_json) as store:
        runs = Runs(n_jobs, backend, address, (config.task, config.task_options), plan)
        ran = _run_all(config, store, task_obj, run_fn or default_run, runs, progress, stamp)
        records = list(store.records)
    return RaceResult(out_path, config, records, summarize(config, records), ran, time.perf_counter() - started)


def _task_object_name(task: Any) -> str:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a task name, an import path 'module:attr' or a descentlab.tasks.Task, "
                        f"got {type(task).__name__}")
    return task.name


BACKENDS = ("local", "ray")


def _check_backend(backend: Any, address: Any, task: Any) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "local":
        if address is not None:
            raise ValueError(f"address {address!r} is for --backend ray (the local backend runs on this machine)")
        return
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ValueError(f"address must be a Ray address like 'auto', 'local' or host:port, got {address!r}")
    ray_backend.check_task_name(task)
    ray_backend.check_installed()  # not installed: say how, before anything starts


@dataclass(frozen=True)
class Runs:
    """Where a race's runs train: ``jobs`` processes here, or Ray tasks (see :mod:`.ray_backend`)."""

    jobs: int
    backend: str = "local"
    address: str | None = None
    task_by_name: tuple[str, dict[str, Any]] | None = None
    """Ray: the task as workers resolve it, (name or module:attr, task options)."""
    batching: batching.Batching | None = None
    """Local: which runs train together (None: each alone)."""

    def run_all(self, specs: list[RunSpec], context: dict[str, Any],
                more: Callable[[RunSpec, RunRecord], list[RunSpec]]) -> Generator[tuple[RunSpec, RunRecord]]:
        if self.backend == "ray":
            return ray_backend.run_all(specs, {**context, "task": self.task_by_name}, self.address, self.jobs, more)
        if self.batching is not None:
            return run_all(specs, {**context, "run_batch": batching.run_batch}, self.jobs, more,
                           plan=self.batching.plan, gather=self.batching.gather)
        return run_all(specs, context, self.jobs, more)


def _check_engine(engine: Any, backend: str) -> None:
    if engine is not None and engine not in batching.ENGINES:
        raise ValueError(f"engine must be one of {', '.join(batching.ENGINES)}, got {engine!r}")
    if engine == "batched" and backend != "local":
        raise ValueError(f"engine 'batched' runs on the local backend; --backend {backend} trains each run alone "
                         "(leave --engine out)")


def _check_jobs_for(jobs: Any, device_type: str) -> int:
    if device_type == "cpu":
        return check_jobs(jobs)
    if jobs is not None and check_jobs(jobs) != 1:
        raise ValueError(f"jobs: runs on a {device_type} device train one at a time (forked workers cannot share "
                         f"its context), got {jobs!r}; leave --jobs out")
    return 1


def _run_all(config: RaceConfig, store: ResultsStore, task: Task, run_fn: RunFn, runs: Runs,
             progress: bool | None, stamp: dict[str, Any]) -> int:
    """Train every run not yet in ``store``; returns how many were trained. An arm's confirmation runs
    start as soon as its last tuning run has finished."""
    from tqdm.auto import tqdm

    tuning = config.tuning_runs()
    tuning_left = {arm: {s for s in tuning if s.arm == arm and s not in store} for arm in config.arms()}

    def finals_of(arm: Arm) -> list[RunSpec]:
        lr = select(config, store.records)[arm]
        return [s for s in config.final_runs({arm: lr}) if s not in store]

    def has_finals(arm: Arm) -> bool:
        return any(r.phase == FINAL and r.arm == arm for r in store.records)

    first = [s for s in tuning if s not in store]
    expected = len(tuning) + len(config.arms()) * len(config.seeds)
    for arm in config.arms():
        if not tuning_left[arm]:
            extra = finals_of(arm)
            first += extra
            if not extra and not has_finals(arm):  # on resume: an arm known to have no selected lr
                expected -= len(config.seeds)

    def more(spec: RunSpec, record: RunRecord) -> list[RunSpec]:
        if spec.phase != TUNE:
            return []
        tuning_left[spec.arm].discard(spec)
        if tuning_left[spec.arm]:
            return []
        extra = finals_of(spec.arm)
        if not extra and not has_finals(spec.arm):
            bar.total -= len(config.seeds)  # every lr of this arm diverged: no confirmation runs
            bar.refresh()
        return extra

    context = {"run_fn": run_fn, "task": task, "model": config.model, "epochs": config.epochs,
               "batch_size_for": config.batch_size_for, "final_phase": FINAL, "device": config.device,
               "stamp": stamp}
    done_before = len(store.records)
    # progress=None: a bar only on a terminal (tqdm's disable=None)
    bar = tqdm(total=expected, initial=min(done_before, expected), unit="run", desc="race", dynamic_ncols=True,
               disable=None if progress is None else not progress, file=sys.stderr)
    ran = 0
    finished = runs.run_all(first, context, more)
    try:
        for spec, record in finished:
            store.append(record)
            ran += 1
            bar.update(1)
            bar.set_postfix_str(f"{spec.optimizer}/{spec.schedule} lr={spec.lr:g} seed={spec.seed}: {record.status}",
                                refresh=False)
    finally:
        finished.close()  # now, not when the generator is collected: its workers (or Ray) stop before we return
        bar.close()
    return ran
