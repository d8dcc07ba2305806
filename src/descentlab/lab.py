"""``descentlab.race``: the one-call race of the Python API — an optional lr range test per optimizer, the
race, then its report. It sits above :mod:`descentlab.racing`, :mod:`descentlab.lrfind` and
:mod:`descentlab.report` (it calls all three) and below :mod:`descentlab.study` (whose workloads are such
races); the package root re-exports it. Importing this module imports no torch: the work is imported on
the first call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .racing import RaceResult


def race(task: Any = "mnist1d", *, report: bool = True, **options: Any) -> RaceResult:
    """Race optimizers on ``task`` and write ``out/report.html``: :func:`descentlab.racing.run_race`
    with ``options`` (optimizers, lrs, seeds, epochs, schedules, device, out, ... — see it; ``lrs="auto"``
    centres a shorter grid per optimizer on a range test, :mod:`descentlab.lrfind.auto`), then
    :func:`descentlab.report.write_report` unless ``report=False``. Imports torch on first call only."""
    from .lrfind.auto import for_race, is_auto
    from .racing import check_options, run_race

    auto = None
    if is_auto(options.get("lrs")):  # one range test per optimizer, then a grid centred on its suggestion
        check_options(task, lrs_later=True, **options)  # every other option and --out, before the range tests
        auto = for_race(task, options)
        options = {**options, "lrs": auto.grids}
    result = run_race(task, **options)
    if auto is not None:
        auto.save(result.out)
    if report:
        from .report import write_report

        result.report_path = write_report(result.out, result.config, result.records, result.summary)
    return result
