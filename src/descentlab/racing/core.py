"""``run_race()``: tune and race optimizers (and schedules) on a task over seeds, keeping every run in
a resumable store. The protocol is in :mod:`descentlab.racing.protocol`; ``descentlab.race()`` is
this plus the HTML report."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..tasks import Task
from ..tasks.resolve import default_model_of, resolve_task
from ..train.device import check_device
from . import batching, binding, environment, ray_backend
from .protocol import Arm, RaceConfig, make_config
from .record import RunRecord, RunSpec, Setting
from .runner import RaceContext, RunFn, TaskRef, check_jobs, run_all
from .stages import expected_runs, plan_arm
from .store import CONFIG, RESULTS, ResultsStore, check_store
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
    def selected(self) -> dict[Arm, Setting | None]:
        """Each arm's selected setting (lr, batch size, other hyper-parameters); None: nothing to select."""
        return {s.arm: s.selected for s in self.summary.arms}


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
             batch_size: int | str | Sequence[int | None] | None = 64, schedules: Sequence[str] | str | None = None,
             device: str = "cpu", jobs: int | None = None, quick: bool = False,
             out: str | os.PathLike[str] | None = None, task_options: Mapping[str, Any] | None = None,
             progress: bool | None = None, run_fn: RunFn | None = None, backend: str = "local",
             address: str | None = None, engine: str | None = None,
             hp: Mapping[str, Any] | Sequence[str] | None = None, patience: int | str | None = None) -> RaceResult:
    """Race ``optimizers`` × ``schedules`` on ``task`` (a built-in task name, an import path
    ``module:attr`` to a Task or a callable returning one, or a :class:`descentlab.tasks.Task`).

    Each arm (optimizer, schedule) searches its settings — the lrs, the batch sizes (``batch_size`` may be
    several: ``"32,64,128"``) and the values of ``hp`` (``{"weight_decay": [0, 0.01]}`` or
    ``["weight_decay=0,0.01"]``; each applies to the optimizers that have it) — as
    :mod:`descentlab.racing.protocol` describes: tuned on two seeds by successive halving with early
    stopping after ``patience`` evaluations without improvement (default: a quarter of the budget;
    ``"none"`` trains every run its whole budget), the winner confirmed on every seed, each evaluating
    the test split at its own best validation point and at the end. Results go to
    ``out/results.jsonl`` (append-only, resumable: rerunning with the same ``out`` skips finished
    runs). ``quick=True`` is a small demo race; options given explicitly win. ``device``: cpu, cuda,
    cuda:N or mps (runs on a GPU train one at a time). ``run_fn`` replaces the training engine (tests
    use a fake one) and must return a :class:`descentlab.train.RunResult`. ``backend``: ``local``
    (worker processes on this machine) or ``ray`` (each run a Ray task on the cluster at ``address``,
    see :mod:`descentlab.racing.ray_backend`; the task then goes by name). ``engine``: ``batched`` (the
    local default: runs sharing a batch size train together as one stacked model, see
    :mod:`descentlab.racing.batching`) or ``per-run``. Raises ValueError for bad options, an ``out``
    that holds another race or a race on other data, before anything in ``out`` changes.
    """
    started = time.perf_counter()
    setup = _prepare(task, model=model, optimizers=optimizers, lrs=lrs, seeds=seeds, epochs=epochs,
                     batch_size=batch_size, schedules=schedules, device=device, jobs=jobs, quick=quick, out=out,
                     task_options=task_options, run_fn=run_fn, backend=backend, address=address, engine=engine, hp=hp,
                     patience=patience)
    with ResultsStore.open(setup.out, setup.config.to_json()) as store:
        ran = _run_all(setup, store, progress)
        records = list(store.records)
    summary = summarize(setup.config, records)
    saved = summary.early_stopping
    if saved.stopped:
        print(f"descentlab race: early stopping saved {saved.saved_epochs:.0f} of {saved.budget_epochs:.0f} "
              f"run-epochs of tuning ({saved.share:.0%}; {saved.stopped} runs stopped early)", file=sys.stderr)
    return RaceResult(setup.out, setup.config, records, summary, ran, time.perf_counter() - started)


@dataclass(frozen=True)
class _Setup:
    """A race ready to run: its checked config (bound to its data), where it writes, and how runs train."""

    config: RaceConfig
    out: Path
    runs: Runs
    context: RaceContext


def _prepare(task: Task | str, *, model: str | None, optimizers: Any, lrs: Any, seeds: Any, epochs: Any,
             batch_size: Any, schedules: Any, device: str, jobs: Any, quick: bool, out: Any,
             task_options: Mapping[str, Any] | None, run_fn: RunFn | None, backend: str, address: str | None,
             engine: str | None, hp: Any, patience: Any) -> _Setup:
    """Every check a race makes before it trains anything (ValueError naming the option and the value)."""
    config, task_obj, n_jobs, out_path = _checked_options(
        task, model=model, optimizers=optimizers, lrs=lrs, seeds=seeds, epochs=epochs, batch_size=batch_size,
        schedules=schedules, device=device, jobs=jobs, quick=quick, out=out, task_options=task_options,
        backend=backend, address=address, engine=engine, hp=hp, patience=patience)
    task_name = config.task
    for name, combos in config.hp_skipped.items():
        shown = "; ".join(", ".join(f"{k}={v}" for k, v in sorted(combo.items())) for combo in combos)
        print(f"descentlab race: {name} cannot be built with {shown}: left out of its search", file=sys.stderr)
    if task_obj is None:
        task_obj = resolve_task(task_name, **config.task_options)
    if config.model not in task_obj.models:
        raise ValueError(f"model {config.model!r} is not a model of task {config.task!r}; known: "
                         f"{', '.join(task_obj.models)}")
    check_test_split(task_obj, config.task)
    config = replace(config, binding=binding.of(task_obj, config.model, config.optimizers))  # once, here
    check_store(out_path, config.to_json())  # a race on other data or another model is refused, untouched
    plan = None
    if backend == "local" and engine != "per-run":
        plan = batching.check(task_obj, config.model, config.optimizers, n_jobs, custom_run=run_fn is not None)
        for reason in plan.reasons:
            print(f"descentlab race: {reason}", file=sys.stderr)
    stamp = {"task": config.task, "model": config.model, "device": config.device,
             "versions": environment.versions(), "machine": environment.machine(n_jobs, config.device)}
    context = RaceContext(run_fn=run_fn or default_run, task=task_obj, model=config.model, epochs=config.epochs,
                          device=config.device, stamp=stamp, patience=config.patience,
                          run_batch=batching.run_batch if plan is not None else None)
    return _Setup(config, out_path, Runs(n_jobs, backend, address, TaskRef(config.task, config.task_options), plan),
                  context)


def check_test_split(task: Task, name: str) -> None:
    """ValueError when ``task`` has no test split: a race measures each optimizer's selected setting there."""
    if not task.has_test:
        raise ValueError(f"task {name!r} has no test split: a race measures each optimizer's selected setting on "
                         "the test split (validation picks it); give the task test data "
                         "(descentlab.tasks.from_tensors(..., x_test, y_test))")


def check_options(task: Task | str = "mnist1d", *, lrs_later: bool = False, **options: Any) -> None:
    """The checks :func:`run_race` makes of its options and ``out`` before it loads the task's data
    (ValueError naming the option and the value). ``lrs_later``: the lrs are not known yet (``race --lrs
    auto`` checks everything else before its range tests), so the grid is not compared with the race
    ``out`` may hold; :func:`run_race` compares it when it starts."""
    unknown = sorted(set(options) - set(_OPTION_DEFAULTS) - {"run_fn", "progress"})
    if unknown:
        raise TypeError(f"race() got an unexpected keyword argument {unknown[0]!r}")
    known = {k: v for k, v in options.items() if k in _OPTION_DEFAULTS}  # not run_fn, progress: no check
    if lrs_later:
        known["lrs"] = None
    _checked_options(task, **{**_OPTION_DEFAULTS, **known}, ignore=LR_FIELDS if lrs_later else ())


def check_bound(out: str | os.PathLike[str], task: Task | None = None) -> RaceConfig:
    """The race in ``out`` (its ``race.json``), checked against what its task builds now as a resume is
    (:func:`check_store` with the binding :func:`.binding.of` computes now): ValueError naming ``out`` and the
    change when the task's data, the model or a raced optimizer's code is not what its runs were measured on.
    For a caller that reads a finished race back instead of resuming it (a study), so that its runs are never
    mixed with new runs on other data. ``task``: the task already loaded (else resolved from ``race.json``)."""
    path = Path(out)
    config = RaceConfig.from_json(json.loads((path / CONFIG).read_text(encoding="utf-8")))
    if task is None:
        task = resolve_task(config.task, **config.task_options)
    check_store(path, replace(config, binding=binding.of(task, config.model, config.optimizers)).to_json())
    return config


_OPTION_DEFAULTS: dict[str, Any] = {
    "model": None, "optimizers": None, "lrs": None, "seeds": None, "epochs": None, "batch_size": 64,
    "schedules": None, "device": "cpu", "jobs": None, "quick": False, "out": None, "task_options": None,
    "backend": "local", "address": None, "engine": None, "hp": None, "patience": None}
""":func:`run_race`'s options that :func:`check_options` checks, with run_race's defaults."""
LR_FIELDS = ("lrs", "extra_lrs")
"""The fields of ``race.json`` that hold the lr grids (``extra_lrs``: per-optimizer grids of ``--lrs auto``)."""


def _checked_options(task: Task | str, *, model: str | None, optimizers: Any, lrs: Any, seeds: Any, epochs: Any,
                     batch_size: Any, schedules: Any, device: str, jobs: Any, quick: bool, out: Any,
                     task_options: Mapping[str, Any] | None, backend: str, address: str | None, engine: str | None,
                     hp: Any, patience: Any, ignore: tuple[str, ...] = ()) -> tuple[RaceConfig, Task | None, int, Path]:
    """The race's config, its task when resolving the model needed it, its jobs and its ``out``, with every
    option checked, and ``out`` checked against the race it may hold (but for the fields ``ignore``)."""
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
                         schedules=schedules, device=str(torch_device), hp=hp, patience=patience)
    if backend == "ray" and torch_device.index is not None:
        raise ValueError(f"device {device!r}: with --backend ray use --device cuda (Ray gives each run its own GPU)")
    n_jobs = check_jobs(jobs) if backend == "ray" else _check_jobs_for(jobs, torch_device.type)
    out_path = Path(out) if out is not None else default_out()
    check_store(out_path, config.to_json(), ignore)  # refuse another race's directory before spending time on data
    return config, task_obj, n_jobs, out_path


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
    task_by_name: TaskRef | None = None
    """Ray: the task as workers resolve it."""
    batching: batching.Batching | None = None
    """Local: which runs train together (None: each alone)."""

    def run_all(self, specs: list[RunSpec], context: RaceContext,
                more: Callable[[RunSpec, RunRecord], list[RunSpec]]) -> Generator[tuple[RunSpec, RunRecord]]:
        if self.backend == "ray":
            return ray_backend.run_all(specs, replace(context, task=self.task_by_name), self.address, self.jobs, more)
        if self.batching is not None:
            return run_all(specs, context, self.jobs, more, plan=self.batching.plan, gather=self.batching.gather)
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


def _run_all(setup: _Setup, store: ResultsStore, progress: bool | None) -> int:
    """Train every run the race still needs (:func:`.stages.plan_arm`, arm by arm: an arm's next stage starts
    as soon as its current one has finished); returns how many were trained."""
    from tqdm.auto import tqdm

    config = setup.config
    in_flight: dict[Arm, int] = {}
    first: list[RunSpec] = []
    for arm in config.arms():
        todo = plan_arm(config, arm, store.records).next_runs
        in_flight[arm] = len(todo)
        first += todo

    def more(spec: RunSpec, record: RunRecord) -> list[RunSpec]:
        in_flight[spec.arm] -= 1
        if in_flight[spec.arm]:
            return []
        todo = plan_arm(config, spec.arm, store.records).next_runs
        in_flight[spec.arm] = len(todo)
        if len(store.records) + sum(in_flight.values()) > bar.total:
            bar.total = len(store.records) + sum(in_flight.values())
            bar.refresh()
        return todo

    done_before = len(store.records)
    expected = max(expected_runs(config), done_before + len(first))
    # progress=None: a bar only on a terminal (tqdm's disable=None)
    bar = tqdm(total=expected, initial=done_before, unit="run", desc="race", dynamic_ncols=True,
               disable=None if progress is None else not progress, file=sys.stderr)
    ran = 0
    finished = setup.runs.run_all(first, setup.context, more)
    try:
        for spec, record in finished:
            store.append(record)
            ran += 1
            bar.update(1)
            bar.set_postfix_str(f"{spec.optimizer}/{spec.schedule} {spec.setting.describe()} seed={spec.seed}: "
                                f"{record.status}", refresh=False)
    finally:
        finished.close()  # now, not when the generator is collected: its workers (or Ray) stop before we return
        bar.close()
    return ran
