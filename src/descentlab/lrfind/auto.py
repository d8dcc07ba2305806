"""``race --lrs auto``: one range test per optimizer, then a shorter grid centred on its suggestion.

The grid is the suggestion snapped to the race's half-decade lattice (10^(k/2): 1e-4, 3.16e-4, 1e-3,
...) and ``GRID_HALF_WIDTH`` lattice points either side: 5 lrs spanning two decades instead of the
default 9. Snapping makes the grid the same when a killed race is rerun (the range test is
deterministic for a seed, and a float that moved in its last digit does not move a lattice point) and
keeps its lrs comparable with the default grid's. An optimizer whose range test saw no finite loss
keeps the default grid.

Each range test trains at most one race run's budget (its epochs × steps per epoch, capped at the
test's 100 steps), with the batch size that optimizer gets in the race (full batch for GD). The tests
are saved in the race directory as ``lrfind.json`` and ``lrfind-<optimizer>.png`` once the race has
started there, and read back from ``lrfind.json`` when the same race is resumed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from .ramp import RangeTest, lr_find

AUTO = "auto"
GRID_HALF_WIDTH = 2
SAVED = "lrfind.json"


def is_auto(lrs: Any) -> bool:
    """Whether a race's ``lrs`` asks for the range test (``"auto"``)."""
    return isinstance(lrs, str) and lrs.strip().lower() == AUTO


def lattice(k: int) -> float:
    """The k-th point of the half-decade lattice 10^(k/2), to 3 significant digits as the race's grid."""
    return float(f"{10 ** (k / 2):.3g}")


def centred_grid(suggestion: float, half_width: int = GRID_HALF_WIDTH) -> tuple[float, ...]:
    """The lattice points within ``half_width`` half-decades of ``suggestion`` (snapped to the lattice)."""
    centre = round(2 * math.log10(suggestion))
    return tuple(lattice(centre + k) for k in range(-half_width, half_width + 1))


@dataclass
class AutoGrids:
    """Per optimizer: the grid the race gets, and the range test it came from (None: read back)."""

    grids: dict[str, tuple[float, ...]]
    suggestions: dict[str, float | None]
    tests: dict[str, RangeTest]

    def save(self, out: str | os.PathLike[str]) -> None:
        """``lrfind.json`` and one picture per optimizer tested now, into the race directory ``out``."""
        from .plot import save

        directory = Path(out)
        for name, test in self.tests.items():
            save(test, directory / f"lrfind-{_file_name(name)}.png")
        atomic_write_json(directory / SAVED, {"suggestions": self.suggestions,
                                              "grids": {k: list(v) for k, v in self.grids.items()},
                                              "tests": {k: t.to_json() for k, t in self.tests.items()}})


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _saved_suggestions(out: str | os.PathLike[str] | None) -> dict[str, float | None]:
    if out is None:
        return {}
    try:
        value = json.loads((Path(out) / SAVED).read_text(encoding="utf-8"))
        return {str(k): (float(v) if v is not None else None) for k, v in value["suggestions"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def auto_grids(task: Any, *, optimizers: Sequence[str], batch_size_for: Mapping[str, int | None],
               run_steps: Mapping[str, int], model: str, seed: int, device: str,
               out: str | os.PathLike[str] | None, default: Sequence[float]) -> AutoGrids:
    """Range-test every optimizer of ``optimizers`` not already in ``out/lrfind.json`` and centre its grid
    on the suggestion. ``batch_size_for`` and ``run_steps`` give each optimizer's race batch size and the
    steps of one race run (the test's cap)."""
    saved = _saved_suggestions(out)
    grids: dict[str, tuple[float, ...]] = {}
    suggestions: dict[str, float | None] = {}
    tests: dict[str, RangeTest] = {}
    for name in optimizers:
        if name in saved:
            suggestion = saved[name]
        else:
            test = lr_find(task, model=model, optimizer=name, batch_size=batch_size_for[name],
                           max_steps=run_steps[name], seed=seed, device=device)
            tests[name] = test
            suggestion = test.suggestion
        suggestions[name] = suggestion
        grids[name] = centred_grid(suggestion) if suggestion is not None else tuple(default)
    return AutoGrids(grids, suggestions, tests)


def for_race(task: Any, options: Mapping[str, Any]) -> AutoGrids:
    """The grids of a race called with ``lrs="auto"`` and the other ``options`` of
    :func:`descentlab.racing.run_race` (validated first, as the race would, before any range test)."""
    from ..outpaths import check_directory
    from ..racing import check_test_split
    from ..racing.protocol import DEFAULT_LRS, make_config
    from ..tasks import Task, resolve_task
    from ..tasks.resolve import default_model_of
    from ..train.device import check_device
    from ..train.track import Budget

    device = str(check_device(options.get("device", "cpu")))
    task_options = dict(options.get("task_options") or {})
    model = options.get("model")
    task_obj = task if isinstance(task, Task) else None
    if model is None and task_obj is None and isinstance(task, str):
        model = default_model_of(task)
    config = make_config(task=task if isinstance(task, str) else getattr(task, "name", "task"),
                         model=model or "auto", optimizers=options.get("optimizers"), lrs=None,
                         seeds=options.get("seeds"), epochs=options.get("epochs"),
                         batch_size=options.get("batch_size", 64), quick=bool(options.get("quick", False)),
                         task_options=task_options, schedules=options.get("schedules"), device=device)
    out = options.get("out")
    if out is not None:
        check_directory("--out", out)
    if task_obj is None:
        task_obj = resolve_task(task, **task_options)
    check_test_split(task_obj, config.task)  # what the race would refuse, before the range tests
    model = model or task_obj.default_model
    steps = {name: Budget.of(task_obj.n_train, config.batch_sizes_for(name)[0], config.epochs).total
             for name in config.optimizers}
    return auto_grids(task_obj, optimizers=config.optimizers,
                      batch_size_for={name: config.batch_sizes_for(name)[0] for name in config.optimizers},
                      run_steps=steps, model=model, seed=config.seeds[0], device=device, out=out,
                      default=DEFAULT_LRS)
