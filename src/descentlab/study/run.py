"""``run_study()``: per workload, the race of every optimizer at a budget where its tuned best has settled
(the budget rule of :mod:`.settle`: the plateau rule, an extension of the tuned best to twice the budget,
doubling), then Adam at each of the article's lrs, untuned, at that budget; the headline lr also at
``BUDGET_MULTIPLES``' larger multiples (x4); each race the usual resumable race in its own subfolder;
then ``claim.json`` (:mod:`.verdict`) and the study's report.

Layout of ``out``::

    study.json                        the study's options (written once)
    progress.json                     the races finished so far (written atomically after each)
    claim.json                        the claim's verdicts, one entry per (workload, Adam lr, budget)
    report.html                       the study's report
    <workload>/race/                  the race of every optimizer at the workload's suite budget E0
    <workload>/extend-e<2E>/          the tuned best's setting alone at twice a budget E where it had not settled
    <workload>/race-e<E>/             the race at 2·E0, 4·E0, ... while the tuned best had not settled
    <workload>/adam-lr<lr>-e<E>/      Adam at one of the article's lrs, untuned: a race with that one lr, E epochs

A killed study is resumed by rerunning it with the same ``out``: finished races (``progress.json``) are
first checked against what their task builds now (:func:`check_finished`: a change of data, model or
optimizer code is refused before any run), then only read back; the race that was cut off resumes itself
(its finished runs are kept, none is repeated), and the rest run. Which budgets were needed is decided
again from the finished races' records, so a resumed study takes the same path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..racing import FINAL, ArmSummary, RaceConfig, ResultsStore, summarize
from ..racing.store import CONFIG
from .config import (
    CLAIM,
    CLAIM_OPTIMIZER,
    REPORT,
    check_out,
    make_study_config,
    read_progress,
    write_config,
    write_progress,
)
from .data import BudgetTry, RaceData, StudyResult, WorkloadData
from .settle import continued, gained, next_budget, settled
from .suite import Workload, builtin_default_model, check_distinct, parse_workloads

MAIN = "race"


def claim_folder(lr: float, epochs: int) -> str:
    return f"{CLAIM_OPTIMIZER}-lr{lr:g}-e{epochs}"


def race_folder(workload: Workload, epochs: int) -> str:
    """``<workload>/race`` at the suite budget, ``<workload>/race-e<E>`` at a doubled one."""
    return f"{workload.folder}/{MAIN}" + ("" if epochs == workload.epochs else f"-e{epochs}")


def tuned_best(race: RaceData) -> ArmSummary | None:
    """The race's tuned best arm: the race's own best (:meth:`descentlab.racing.RaceSummary.best`: an arm that
    finished every confirmation seed before one that did not, then the best mean best-validation metric —
    validation only — then time to target, best epoch, name). None when no arm finished a run."""
    return race.summary.best()


def _best_val(arm: ArmSummary, classification: bool) -> float | None:
    return (arm.best_val_acc if classification else arm.best_val_loss).mean


def budget_try(race: RaceData, extension: RaceData | None = None) -> BudgetTry:
    """Whether the tuned best of ``race`` settled (:func:`descentlab.study.settle.settled`) and, with
    ``extension`` (its setting alone at twice the budget), whether its runs' second half gained on their
    first (:func:`~.settle.continued`, :func:`~.settle.gained`; None when it finished no run). No tuned best
    (every run diverged or failed): not settled, nothing to extend."""
    best = tuned_best(race)
    if best is None:
        return BudgetTry(race.config.epochs, None, None, False)
    classification = race.summary.classification
    runs = [r.history for r in race.records if r.phase == FINAL and r.arm == best.arm and r.ok]
    step = BudgetTry(race.config.epochs, best.optimizer, best.selected_lr,
                     settled(runs, race.config.epochs, classification), _best_val(best, classification))
    if extension is None:
        return step
    first, whole = continued([r.history for r in extension.records if r.phase == FINAL and r.ok],
                             race.config.epochs, classification)
    return replace(step, extension_epochs=extension.config.epochs, extension_first_best_val=first,
                   extension_best_val=whole, extension_gained=None if whole is None else
                   gained(first, whole, classification))


def extension_options(best: ArmSummary) -> dict[str, Any]:
    """The race options that train ``best``'s selected setting alone (its lr, batch size, other settings)."""
    setting = best.selected
    assert setting is not None
    return {"optimizers": [best.optimizer], "schedules": [best.schedule], "lrs": [setting.lr],
            "batch_size": setting.batch_size, "hp": {name: [value] for name, value in setting.hypers}}


def default_out() -> Path:
    return Path("runs") / time.strftime("study-%Y%m%d-%H%M%S")


def run_study(workloads: str | Sequence[str] | Sequence[Workload] | None = None, *,
              optimizers: Sequence[str] | str | None = None, seeds: int | Sequence[int] | str | None = None,
              quick: bool = False, device: str = "cpu", jobs: int | None = None,
              out: str | os.PathLike[str] | None = None, progress: bool | None = None,
              report: bool = True) -> StudyResult:
    """Run (or resume) the study; see the module docstring. ``workloads``: None (the default suite), a
    comma-separated string or list of suite names / ``TASK[/MODEL][@EPOCHS]``, or :class:`Workload`s.
    Raises ValueError for bad options or an ``out`` holding something else, before any training."""
    from ..lab import race
    from ..racing.runner import check_jobs
    from ..train.device import check_device

    started = time.perf_counter()
    if workloads is not None and not isinstance(workloads, str) and all(isinstance(w, Workload) for w in workloads):
        chosen = tuple(workloads)
    else:
        chosen = parse_workloads(workloads, quick)  # type: ignore[arg-type]
    check_device(device)
    if jobs is not None:
        check_jobs(jobs)
    config = make_study_config(chosen, optimizers, seeds, quick, device)
    out_path = check_out(out if out is not None else default_out(), config)
    defaults = {w.task: _check_task(w) for w in chosen}  # a module:attr that does not import: refused now
    check_distinct(chosen, default_model=lambda task: defaults.get(task) or builtin_default_model(task))
    finished = read_progress(out_path)
    check_finished(out_path, finished, chosen)
    write_config(out_path, config)
    results, trained = [], 0
    for workload in chosen:
        options: dict[str, Any] = {"model": workload.model, "seeds": list(config.seeds), "device": device,
                                   "jobs": jobs, "progress": progress}
        if quick:
            options["quick"] = True
        epochs: int | None = workload.epochs
        tried: list[BudgetTry] = []
        races: list[RaceData] = []
        extensions: list[RaceData] = []
        while epochs is not None:
            data, ran = _race(out_path, race_folder(workload, epochs), finished, workload, race,
                              optimizers=list(config.optimizers), report=True, epochs=epochs, **options)
            trained += ran
            races.append(data)
            step = budget_try(data)
            best = tuned_best(data)
            if not step.plateau and not quick and best is not None and best.selected is not None:
                # the tuned best's setting alone at twice the budget: did the longer budget buy anything?
                longer, ran = _race(out_path, f"{workload.folder}/extend-e{2 * epochs}", finished, workload, race,
                                    report=False, epochs=2 * epochs, **extension_options(best), **options)
                trained += ran
                extensions.append(longer)
                step = budget_try(data, longer)
            tried.append(step)
            # only a gain shown by the extension sends the race to twice the budget (--quick, a demo, never
            # extends; no tuned best, or an extension that finished no run: nothing a longer race can be judged on)
            epochs = next_budget(epochs, workload.epochs) if step.extension_gained else None
        main = races[-1]
        claim: dict[tuple[float, int], RaceData] = {}
        for multiple in config.multiples:
            for lr in (lr for lr in config.claim_lrs if multiple in config.multiples_for(lr)):
                budget = main.config.epochs * multiple
                data, ran = _race(out_path, f"{workload.folder}/{claim_folder(lr, budget)}", finished, workload,
                                  race, optimizers=[CLAIM_OPTIMIZER], lrs=[lr], report=False, epochs=budget,
                                  **options)
                claim[(lr, multiple)] = data
                trained += ran
        results.append(WorkloadData(workload, main, claim, tried, races[:-1], extensions))
    result = StudyResult(out_path, config, results, trained, time.perf_counter() - started)
    from .analysis import view
    from .verdict import build, write

    result.claim = build([view(d) for d in results], [d.budgets_json() for d in results], quick)
    write(out_path / CLAIM, result.claim)
    if report:
        from .page import write_page

        result.report_path = write_page(result, result.claim, out_path / REPORT)
    return result


def _check_task(workload: Workload) -> str | None:
    """A ``module:attr`` workload's task imported and its model checked; its default model (None for a
    built-in task: the registry knows it without importing)."""
    if ":" not in workload.task:
        return None
    from ..tasks import resolve_task

    task = resolve_task(workload.task)
    if workload.model is not None and workload.model not in task.models:
        raise ValueError(f"workloads: {workload.model!r} is not a model of {workload.task!r}; known: "
                         f"{', '.join(task.models)}")
    return task.default_model


def check_finished(out: Path, finished: Sequence[str], workloads: Sequence[Workload]) -> None:
    """Every race the study finished before (``progress.json``) checked against what its task builds now,
    before any run: a finished race is read back, not resumed, so without this a study resumed after the
    user's task changed its data would pair the old races' runs with new races' runs on other data. The
    race's own check (:func:`descentlab.racing.check_bound`): ValueError naming the race's folder and the
    change (the CLI: one line, exit 2). Each task is loaded once."""
    from ..racing import check_bound
    from ..tasks import Task, resolve_task

    tasks: dict[str, Task] = {}
    for workload in workloads:
        for folder in finished:
            directory = out / folder
            if not folder.startswith(f"{workload.folder}/") or not (directory / CONFIG).exists():
                continue
            if workload.task not in tasks:
                tasks[workload.task] = resolve_task(workload.task)
            check_bound(directory, tasks[workload.task])


def _race(out: Path, folder: str, finished: list[str], workload: Workload, race: Any, **options: Any,
          ) -> tuple[RaceData, int]:
    """The race in ``out/folder``: read back when finished before, else run (or resumed) now."""
    directory = out / folder
    if folder in finished and (directory / CONFIG).exists():
        return _read(folder, directory), 0
    if options.get("progress") is not False:
        print(f"study: {folder}", file=sys.stderr)
    result = race(workload.task, out=directory, **options)
    finished.append(folder)
    write_progress(out, finished)
    return RaceData(folder, result.config, list(result.records), result.summary), result.ran


def _read(folder: str, directory: Path) -> RaceData:
    import json

    config = RaceConfig.from_json(json.loads((directory / CONFIG).read_text(encoding="utf-8")))
    with ResultsStore.open(directory, config.to_json()) as store:
        records = list(store.records)
    return RaceData(folder, config, records, summarize(config, records))
