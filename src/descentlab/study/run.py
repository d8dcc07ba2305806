"""``run_study()``: one race per workload (and one per untuned Adam lr of the article's claim), each the
usual resumable race in its own subfolder, then the study's report.

Layout of ``out``::

    study.json                        the study's options (written once)
    progress.json                     the races finished so far (written atomically after each)
    report.html                       the study's report
    <workload>/race/                  the race of every optimizer (race.json, results.jsonl, report.html)
    <workload>/adam-lr<lr>/           Adam at one of the article's lrs, untuned: a race with that one lr

A killed study is resumed by rerunning it with the same ``out``: finished races (``progress.json``) are
only read back, the race that was cut off resumes itself (its finished runs are kept, none is repeated),
and the rest run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..racing import RaceConfig, RaceSummary, ResultsStore, RunRecord, summarize
from ..racing.store import CONFIG
from .config import (
    CLAIM_OPTIMIZER,
    REPORT,
    StudyConfig,
    check_out,
    make_study_config,
    read_progress,
    write_config,
    write_progress,
)
from .suite import Workload, parse_workloads

MAIN = "race"


@dataclass
class RaceData:
    """A finished race as the study reads it."""

    folder: str
    config: RaceConfig
    records: list[RunRecord]
    summary: RaceSummary


@dataclass
class WorkloadData:
    workload: Workload
    race: RaceData
    claim: dict[float, RaceData]
    """Adam at each of the article's lrs, untuned."""


@dataclass
class StudyResult:
    out: Path
    config: StudyConfig
    workloads: list[WorkloadData]
    trained: int
    """Runs trained by this call."""
    wall_s: float
    report_path: Path | None = None


def claim_folder(lr: float) -> str:
    return f"{CLAIM_OPTIMIZER}-lr{lr:g}"


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
    for workload in chosen:  # a module:attr that does not import: refused now, not after other races ran
        _check_task(workload)
    write_config(out_path, config)
    finished = read_progress(out_path)
    results, trained = [], 0
    for workload in chosen:
        main_folder = f"{workload.folder}/{MAIN}"
        options: dict[str, Any] = {"model": workload.model, "seeds": list(config.seeds), "epochs": workload.epochs,
                                   "device": device, "jobs": jobs, "progress": progress}
        if quick:
            options["quick"] = True
        main, ran = _race(out_path, main_folder, finished, workload, race, optimizers=list(config.optimizers),
                          report=True, **options)
        trained += ran
        claim = {}
        for lr in config.claim_lrs:
            data, ran = _race(out_path, f"{workload.folder}/{claim_folder(lr)}", finished, workload, race,
                              optimizers=[CLAIM_OPTIMIZER], lrs=[lr], report=False, **options)
            claim[lr] = data
            trained += ran
        results.append(WorkloadData(workload, main, claim))
    result = StudyResult(out_path, config, results, trained, time.perf_counter() - started)
    if report:
        from ..atomic import atomic_write_text
        from ..report.study_page import build_study_html

        result.report_path = out_path / REPORT
        atomic_write_text(result.report_path, build_study_html(result))
    return result


def _check_task(workload: Workload) -> None:
    if ":" in workload.task:
        from ..tasks import resolve_task

        task = resolve_task(workload.task)
        if workload.model is not None and workload.model not in task.models:
            raise ValueError(f"workloads: {workload.model!r} is not a model of {workload.task!r}; known: "
                             f"{', '.join(task.models)}")


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
