"""The race protocol: which runs to make, and which learning rate each optimizer keeps.

An *arm* is an (optimizer, schedule) pair; with the default ``schedules=("constant",)`` there is one
arm per optimizer. The lr of the grid is the schedule's peak lr.

1. Tuning: every (arm, lr) of the grid is trained once, on the first seed, without touching the
   test split. Each run records its best validation point (early stopping): the evaluation with the
   highest validation accuracy (regression: lowest validation loss), see :mod:`descentlab.train.best`.
2. Selection (:func:`select_lr`, the only place it is computed): per arm, the lr whose best point is
   best (ties: the smaller lr). Diverged runs, failed runs and non-finite values cannot win; an arm
   whose every lr diverged has no selected lr and is reported as such.
3. Confirmation: the selected lr is trained on every seed (the first one included, so that all
   confirmation runs are made the same way); each evaluates the test split once at its own best
   validation point's weights (the headline ``test_acc`` / ``test_loss``) and once at the end of
   the budget (``end_test_acc`` / ``end_test_loss``). Test metrics exist only on these runs and are
   never read by step 2.

Every arm gets the same budget in epochs (passes over the training set). GD is SGD fed the whole
training set at each step, so it takes one step per epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..tasks.registry import MAX_SEED
from ..train.best import score
from ..train.schedule import SCHEDULES
from .record import FINAL, RESULTS_FORMAT, TUNE, RunRecord, RunSpec

DEFAULT_OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam")
DEFAULT_LRS = tuple(float(f"{10 ** (k / 2):.3g}") for k in range(-8, 1))
"""1e-4 .. 1 in half-decade steps: 1e-4, 3.16e-4, 1e-3, ..., 0.316, 1."""
EXTRA_LRS: Mapping[str, tuple[float, ...]] = {"adam": (1e-3, 5e-4, 1e-4)}
"""The article's Adam learning rates, added to the default grid (not to a grid the user gives)."""


def full_batch_names(names: Iterable[str]) -> tuple[str, ...]:
    """The optimizers the race feeds the whole training set (batch_size=None): those the registry marks
    ``full_batch`` — GD is SGD on full batches."""
    from ..optim import resolve

    return tuple(sorted(name for name in names if resolve(name).full_batch))

GD_VS_SGD = ("gd", "sgd")
"""The article's comparison the report draws when both are in the race: full batch vs minibatches."""

DEFAULT_EPOCHS = 60
DEFAULT_SEEDS = 3
DEFAULT_BATCH_SIZE = 64

MAX_SEEDS = 10_000
"""The most seeds a race takes (each optimizer trains once per seed): a larger count is a typo."""

QUICK_LRS = (1e-3, 1e-2, 1e-1)
QUICK_EPOCHS = 3
QUICK_SEEDS = 2

Arm = tuple[str, str]
"""(optimizer, schedule)."""


@dataclass(frozen=True)
class RaceConfig:
    """Everything that defines a race's results (not how fast it runs: ``jobs`` is not here)."""

    task: str = "mnist1d"
    task_options: dict[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    lrs: tuple[float, ...] = DEFAULT_LRS
    extra_lrs: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(EXTRA_LRS))
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    epochs: int = DEFAULT_EPOCHS
    batch_size: int | None = DEFAULT_BATCH_SIZE
    full_batch: tuple[str, ...] = field(default_factory=lambda: full_batch_names(DEFAULT_OPTIMIZERS))
    schedules: tuple[str, ...] = ("constant",)
    device: str = "cpu"
    results_format: int = RESULTS_FORMAT

    def arms(self) -> list[Arm]:
        return [(opt, schedule) for opt in self.optimizers for schedule in self.schedules]

    def grid(self, optimizer: str) -> tuple[float, ...]:
        """The lrs tried for ``optimizer``: the grid plus its extras, sorted, without repeats."""
        return tuple(sorted(set(self.lrs) | set(self.extra_lrs.get(optimizer, ()))))

    def batch_size_for(self, optimizer: str) -> int | None:
        return None if optimizer in self.full_batch else self.batch_size

    def tuning_runs(self) -> list[RunSpec]:
        """Every tuning run, in the order they are scheduled."""
        return [RunSpec(TUNE, opt, schedule, lr, self.seeds[0]) for opt, schedule in self.arms()
                for lr in self.grid(opt)]

    def final_runs(self, selected: Mapping[Arm, float | None]) -> list[RunSpec]:
        return [RunSpec(FINAL, opt, schedule, float(lr), seed) for (opt, schedule) in self.arms()
                if (lr := selected.get((opt, schedule))) is not None for seed in self.seeds]

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (lists, not tuples; options that are not JSON as strings), so it
        compares equal to itself read back from ``race.json``."""
        value = asdict(self)
        value["extra_lrs"] = {k: v for k, v in sorted(self.extra_lrs.items()) if k in self.optimizers}
        return json.loads(json.dumps(value, default=str))

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RaceConfig:
        """The config ``to_json`` wrote (``race.json``)."""
        data = dict(value)
        for name in ("optimizers", "lrs", "seeds", "full_batch", "schedules"):
            data[name] = tuple(data[name])
        data["extra_lrs"] = {k: tuple(v) for k, v in data["extra_lrs"].items()}
        return cls(**data)


def make_config(task: str = "mnist1d", model: str = "mlp", optimizers: Sequence[str] | str | None = None,
                lrs: Sequence[float] | str | Mapping[str, Sequence[float]] | None = None,
                seeds: int | Sequence[int] | str | None = None,
                epochs: int | None = None, batch_size: int | str | None = DEFAULT_BATCH_SIZE, quick: bool = False,
                task_options: Mapping[str, Any] | None = None, schedules: Sequence[str] | str | None = None,
                device: str = "cpu") -> RaceConfig:
    """Validate the race options (strings as the CLI gives them are accepted) into a :class:`RaceConfig`.

    ``quick`` swaps the defaults for a small demo grid and budget; options given explicitly win. ``lrs``
    may map every optimizer to its own grid (:func:`lr_grids`).
    Raises ValueError naming the option and the value received.
    """
    from ..optim import resolve

    names = _names(optimizers) if optimizers is not None else DEFAULT_OPTIMIZERS
    for name in names:
        resolve(name)  # unknown names raise ValueError listing the known ones
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers: each name once please, got {list(names)}")
    explicit_lrs = lrs is not None
    per_optimizer = lr_grids(names, lrs) if isinstance(lrs, Mapping) else None  # race --lrs auto
    if per_optimizer is not None:
        grid: tuple[float, ...] = ()
    else:
        grid = _floats("lrs", lrs) if lrs is not None else (QUICK_LRS if quick else DEFAULT_LRS)
    seed_list = _seeds(seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS))
    budget = _positive_int("epochs", epochs if epochs is not None else (QUICK_EPOCHS if quick else DEFAULT_EPOCHS))
    batch = _batch_size(batch_size)
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a task name, got {task!r}")
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a model name, got {model!r}")
    extras = {} if explicit_lrs or quick else {k: v for k, v in EXTRA_LRS.items() if k in names}
    if per_optimizer is not None:  # no shared grid: each optimizer's whole grid is its "extra" lrs
        extras = per_optimizer
    schedule_names = _schedules(schedules)
    return RaceConfig(task=task, task_options=dict(task_options or {}), model=model, optimizers=tuple(names),
                      lrs=grid, extra_lrs=extras, seeds=seed_list, epochs=budget, batch_size=batch,
                      full_batch=full_batch_names(names), schedules=schedule_names, device=device)


def lr_grids(names: Sequence[str], grids: Mapping[str, Sequence[float] | str]) -> dict[str, tuple[float, ...]]:
    """One grid per optimizer (``race --lrs auto`` gives these, see :mod:`descentlab.lrfind.auto`): the race
    then has no shared grid and ``RaceConfig.extra_lrs`` holds each optimizer's whole grid."""
    missing = [name for name in names if name not in grids]
    if missing:
        raise ValueError(f"lrs: a grid per optimizer needs one for every optimizer, none for {', '.join(missing)}")
    return {name: _floats(f"lrs for {name}", grids[name]) for name in names}


def select_lr(records: Iterable[RunRecord], classification: bool) -> float | None:
    """The winning lr among one arm's tuning records (see the module docstring), or None.

    Reads only ``status``, ``lr`` and the best point's ``best_val_acc`` / ``best_val_loss``: test
    metrics play no part.
    """
    best: tuple[tuple[float, ...], float] | None = None
    for record in records:
        if record.status != "ok":
            continue
        key = score(record.best_val_loss, record.best_val_acc, classification)
        if key is None:
            continue
        candidate = (key, float(record.lr))
        if best is None or candidate < best:
            best = candidate
    return None if best is None else best[1]


def is_classification(records: Iterable[RunRecord]) -> bool:
    """A race is on a classification task when its runs report an accuracy."""
    return any(r.best_val_acc is not None or r.val_acc is not None for r in records)


def select(config: RaceConfig, records: Sequence[RunRecord]) -> dict[Arm, float | None]:
    """The selected lr of every arm of ``config`` from the tuning records among ``records``."""
    classification = is_classification(records)
    tuning = [r for r in records if r.phase == TUNE]
    return {arm: select_lr((r for r in tuning if r.arm == arm), classification) for arm in config.arms()}


# -- parsing helpers ------------------------------------------------------------------------------
def _schedules(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ("constant",)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError(f"schedules: need at least one schedule ({', '.join(SCHEDULES)}), got {value!r}")
    for name in names:
        if name not in SCHEDULES:
            raise ValueError(f"schedules: unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"schedules: each schedule once please, got {list(names)}")
    return names


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError(f"optimizers: need at least one optimizer name, got {value!r}")
    return names


def _floats(option: str, value: Sequence[float] | str) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"{option}: {item!r} is not a number (got {value!r})") from None
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"{option}: every learning rate must be a positive number, got {item!r}")
        out.append(number)
    if not out:
        raise ValueError(f"{option}: the learning-rate grid is empty (got {value!r})")
    return tuple(sorted(set(out)))


def _seeds(value: int | Sequence[int] | str) -> tuple[int, ...]:
    """An int N means seeds 0..N-1; a list (or "0,5,7") is taken as given."""
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"seeds: expected a count or a comma-separated list of ints, got {value!r}") from None
        else:
            value = [item for item in text.split(",") if item.strip()]
    if isinstance(value, bool):
        raise ValueError(f"seeds: expected a count or a list of ints, got {value!r}")
    if isinstance(value, int):
        if value < 1 or value > MAX_SEEDS:
            raise ValueError(f"seeds: a count must be in [1, {MAX_SEEDS}], got {value!r}")
        return tuple(range(value))
    seeds = []
    for item in value:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"seeds: {item!r} is not an integer") from None
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seeds: each seed must be in [0, 2**64 - 1], got {seed}")
        seeds.append(seed)
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds: at most {MAX_SEEDS} seeds, got {len(seeds)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: need one or more distinct seeds, got {value!r}")
    return tuple(seeds)


def _positive_int(option: str, value: Any) -> int:
    number: int | None = None
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}")
    return number


def _batch_size(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "full"):
        return None
    return _positive_int("batch_size", value)
