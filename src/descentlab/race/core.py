"""``race()``: tune and race optimizers on a task over seeds, keep every run in a resumable store,
and write the HTML report. The protocol is in :mod:`descentlab.race.protocol`."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import environment
from .protocol import FINAL, TUNE, RaceConfig, make_config, select, select_lr
from .runner import RunFn, RunSpec, check_jobs, run_all
from .store import RESULTS, ResultsStore, check_store
from .summary import RaceSummary, summarize


@dataclass
class RaceResult:
    """What :func:`race` returns: the run rows, the per-optimizer summary and where things are."""

    out: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    selected: dict[str, float | None]
    summary: RaceSummary
    report_path: Path | None
    ran: int
    """Runs trained by this call (the others were already in ``results.jsonl``)."""
    wall_s: float

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS


def default_out() -> Path:
    return Path("runs") / time.strftime("race-%Y%m%d-%H%M%S")


def default_run(task: Any, **kwargs: Any) -> Any:
    """The engine: :func:`descentlab.train.train`, silent."""
    from ..train import train

    return train(task, quiet=True, **kwargs)


def reproduce_command(config: RaceConfig, out: Path) -> str:
    """The exact ``descentlab race`` command that redoes (or resumes) this race: it parses back to the
    same config (lrs in full precision, seeds as a count or a list)."""
    words = ["descentlab", "race", "--task", config.task, "--model", config.model,
             "--optimizers", ",".join(config.optimizers), "--lrs", ",".join(repr(lr) for lr in config.lrs),
             "--seeds", _seeds_option(config.seeds), "--epochs", str(config.epochs),
             "--batch-size", "full" if config.batch_size is None else str(config.batch_size), "--out", str(out)]
    if config.extra_lrs:  # the default grid: leave --lrs out so the per-optimizer extras come back too
        del words[words.index("--lrs"):words.index("--lrs") + 2]
    return shlex.join(words)


def reproduce_call(config: RaceConfig, out: Path, own_task: bool) -> str:
    """The ``descentlab.race(...)`` call that redoes (or resumes) this race from Python: for a user's
    own task object (``task`` stands for it) or task options the CLI has no flag for."""
    batch = "full" if config.batch_size is None else config.batch_size
    kwargs: dict[str, Any] = {"model": config.model, "optimizers": list(config.optimizers),
                              "lrs": None if config.extra_lrs else list(config.lrs), "seeds": list(config.seeds),
                              "epochs": config.epochs, "batch_size": batch, "out": str(out)}
    if config.task_options:
        kwargs["task_options"] = dict(config.task_options)
    call = f"descentlab.race({'task' if own_task else repr(config.task)}, " \
        + ", ".join(f"{key}={value!r}" for key, value in kwargs.items() if value is not None) + ")"
    if own_task:
        call = f"# task: your own descentlab.tasks.Task, the one named {config.task!r}\n{call}"
    return call


def _seeds_option(seeds: Sequence[int]) -> str:
    """``--seeds`` as the CLI reads it back: a count N means 0..N-1, a list needs a comma ("5,")."""
    if tuple(seeds) == tuple(range(len(seeds))):
        return str(len(seeds))
    return ",".join(str(s) for s in seeds) + ("," if len(seeds) == 1 else "")


def race(task: Any = "mnist1d", *, model: str | None = None, optimizers: Sequence[str] | str | None = None,
         lrs: Sequence[float] | str | None = None, seeds: int | Sequence[int] | str | None = None,
         epochs: int | None = None, batch_size: int | str | None = 64, jobs: int | None = None, quick: bool = False,
         out: str | os.PathLike[str] | None = None, task_options: Mapping[str, Any] | None = None,
         report: bool = True, progress: bool | None = None, run_fn: RunFn | None = None,
         command: str | None = None) -> RaceResult:
    """Race ``optimizers`` on ``task`` (a built-in task name or your own :class:`descentlab.tasks.Task`).

    Every (optimizer, lr) of the grid is trained on the first seed; per optimizer the lr with the best
    validation loss (ties: validation accuracy) is kept and trained on every seed with the test split
    evaluated. Results go to ``out/results.jsonl`` (append-only, resumable: rerunning with the same
    ``out`` skips finished runs) and ``out/report.html``. ``quick=True`` is a small demo race.
    ``run_fn(task, model=, optimizer=, lr=, batch_size=, epochs=, seed=, evaluate_test=)`` replaces the
    training engine (tests use a fake one). Raises ValueError for bad options or an ``out`` that holds
    another race, before anything in ``out`` changes.
    """
    started = time.perf_counter()
    task_name, task_obj = _task_name(task)
    model_name = model if model is not None else _default_model(task_name, task_obj)
    config = make_config(task=task_name, model=model_name, optimizers=optimizers, lrs=lrs, seeds=seeds,
                         epochs=epochs, batch_size=batch_size, quick=quick, task_options=task_options)
    n_jobs = check_jobs(jobs)
    out_path = Path(out) if out is not None else default_out()
    config_json = config.to_json()
    check_store(out_path, config_json)  # refuse another race's directory before spending time on data
    if task_obj is None:
        from ..tasks import get_task

        task_obj = get_task(config.task, **config.task_options)
    if config.model not in getattr(task_obj, "models", {config.model: None}):
        raise ValueError(f"model {config.model!r} is not a model of task {config.task!r}; known: "
                         f"{', '.join(task_obj.models)}")
    versions = environment.versions()
    if command is None:
        own_task = not isinstance(task, str)
        command = reproduce_call(config, out_path, own_task) if own_task or config.task_options \
            else reproduce_command(config, out_path)
    with ResultsStore.open(out_path, config_json) as store:
        ran = _run_race(config, config_json, versions, store, task_obj, run_fn or default_run, n_jobs, progress)
        rows = list(store.rows)
    selected = select(config, rows)
    summary = summarize(config_json, rows)
    report_path = None
    if report:
        from ..report import write_report

        env = environment.describe(jobs=n_jobs)
        report_path = write_report(out_path, config_json, rows, summary, env, command,
                                   wall_s=time.perf_counter() - started, ran=ran)
    return RaceResult(out_path, config_json, rows, selected, summary, report_path, ran,
                      time.perf_counter() - started)


def _task_name(task: Any) -> tuple[str, Any]:
    if isinstance(task, str):
        return task, None
    if hasattr(task, "x_train") and hasattr(task, "loss_fn"):
        return str(getattr(task, "name", "custom")), task
    raise TypeError(f"task must be a task name or a descentlab.tasks.Task, got {type(task).__name__}")


def _default_model(task_name: str, task_obj: Any) -> str:
    """The task's own default model (a built-in task's from the registry, without building its data)."""
    if task_obj is not None:
        return str(task_obj.default_model)
    from ..tasks import TASKS

    spec = TASKS.get(task_name)
    return spec.default_model if spec is not None else "mlp"  # an unknown task fails later, by name


def _run_race(config: RaceConfig, config_json: dict[str, Any], versions: dict[str, str], store: ResultsStore,
              task: Any, run_fn: RunFn, jobs: int, progress: bool | None) -> int:
    """Train every run not yet in ``store``; returns how many were trained."""
    from tqdm.auto import tqdm

    tuning = config.tuning_runs()
    tuning_left = {opt: {s for s in tuning if s[1] == opt and s not in store} for opt in config.optimizers}

    def finals_of(opt: str) -> list[RunSpec]:
        lr = select_lr(r for r in store.rows if r["phase"] == TUNE and r["optimizer"] == opt)
        return [s for s in config.final_runs({opt: lr}) if s not in store]

    first = [s for s in tuning if s not in store]
    for opt in config.optimizers:
        if not tuning_left[opt]:
            first += finals_of(opt)
    expected = len(tuning) + len(config.optimizers) * len(config.seeds)

    def more(spec: RunSpec, record: dict[str, Any]) -> list[RunSpec]:
        phase, opt = spec[0], spec[1]
        if phase != TUNE:
            return []
        tuning_left[opt].discard(spec)
        if tuning_left[opt]:
            return []
        extra = finals_of(opt)
        if not extra and not any(r["phase"] == FINAL and r["optimizer"] == opt for r in store.rows):
            bar.total -= len(config.seeds)  # every lr of this optimizer diverged: no final runs
            bar.refresh()
        return extra

    context = {"run_fn": run_fn, "task": task, "model": config.model, "epochs": config.epochs,
               "batch_size_for": config.batch_size_for, "final_phase": FINAL}
    done_before = len(store.rows)
    for opt in config.optimizers:  # on resume: optimizers already known to have no selected lr
        if not tuning_left[opt] and not finals_of(opt) and not any(
                r["phase"] == FINAL and r["optimizer"] == opt for r in store.rows):
            expected -= len(config.seeds)
    # progress=None: a bar only on a terminal (tqdm's disable=None)
    bar = tqdm(total=expected, initial=min(done_before, expected), unit="run", desc="race", dynamic_ncols=True,
               disable=None if progress is None else not progress, file=sys.stderr)
    ran = 0
    try:
        for spec, record in run_all(first, context, jobs, more):
            phase, opt, lr, seed = spec
            row = {"phase": phase, "optimizer": opt, "lr": lr, "seed": seed, "selected": phase == FINAL,
                   "batch_size": config.batch_size_for(opt), **record, "task": config.task, "model": config.model,
                   "config": config_json, "versions": versions}
            store.append(row)
            ran += 1
            bar.update(1)
            bar.set_postfix_str(f"{opt} lr={lr:g} seed={seed}: {record['status']}", refresh=False)
    finally:
        bar.close()
    return ran

