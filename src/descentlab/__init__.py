"""descentlab: the classic gradient-descent family as drop-in torch.optim optimizers, and a lab
to race them on real tasks and watch them move on 2-D surfaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .racing import RaceResult

__version__ = "0.1.0"


def race(task: Any = "mnist1d", *, report: bool = True, **options: Any) -> RaceResult:
    """Race optimizers on ``task`` and write ``out/report.html``: :func:`descentlab.racing.run_race`
    with ``options`` (optimizers, lrs, seeds, epochs, schedules, device, out, ... — see it; ``lrs="auto"``
    centres a shorter grid per optimizer on a range test, :mod:`descentlab.lrfind.auto`), then
    :func:`descentlab.report.write_report` unless ``report=False``. Imports torch on first call only."""
    from .lrfind.auto import for_race, is_auto
    from .racing import run_race

    auto = None
    if is_auto(options.get("lrs")):  # one range test per optimizer, then a grid centred on its suggestion
        auto = for_race(task, options)
        options = {**options, "lrs": auto.grids}
    result = run_race(task, **options)
    if auto is not None:
        auto.save(result.out)
    if report:
        from .report import write_report

        result.report_path = write_report(result.out, result.config, result.records, result.summary)
    return result
