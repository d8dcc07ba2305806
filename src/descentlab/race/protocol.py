"""The race protocol: which runs to make, and which learning rate each optimizer keeps.

1. Tuning: every (optimizer, lr) of the grid is trained once, on the first seed, without touching
   the test split.
2. Selection: per optimizer, the lr with the lowest final validation loss wins (ties: the higher
   validation accuracy, then the smaller lr). Diverged runs and non-finite losses cannot win; an
   optimizer whose every lr diverged has no selected lr and is reported as such.
3. Final: the selected lr is trained on every seed (the first one included, so that all final runs
   are made the same way) with the test split evaluated at the end. Test metrics exist only on
   these ``selected`` runs and are never read by step 2.

Every optimizer gets the same budget in epochs (passes over the training set). GD is SGD fed the
whole training set at each step, so it takes one step per epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..tasks.registry import MAX_SEED

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

DEFAULT_EPOCHS = 30
DEFAULT_SEEDS = 3
DEFAULT_BATCH_SIZE = 64

MAX_SEEDS = 10_000
"""The most seeds a race takes (each optimizer trains once per seed): a larger count is a typo."""

QUICK_LRS = (1e-3, 1e-2, 1e-1)
QUICK_EPOCHS = 3
QUICK_SEEDS = 2

TUNE = "tune"
FINAL = "final"


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

    def grid(self, optimizer: str) -> tuple[float, ...]:
        """The lrs tried for ``optimizer``: the grid plus its extras, sorted, without repeats."""
        return tuple(sorted(set(self.lrs) | set(self.extra_lrs.get(optimizer, ()))))

    def batch_size_for(self, optimizer: str) -> int | None:
        return None if optimizer in self.full_batch else self.batch_size

    def tuning_runs(self) -> list[tuple[str, str, float, int]]:
        """(phase, optimizer, lr, seed) of every tuning run, in the order they are scheduled."""
        return [(TUNE, opt, lr, self.seeds[0]) for opt in self.optimizers for lr in self.grid(opt)]

    def final_runs(self, selected: Mapping[str, float | None]) -> list[tuple[str, str, float, int]]:
        return [(FINAL, opt, float(selected[opt]), seed) for opt in self.optimizers
                if selected.get(opt) is not None for seed in self.seeds]

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (lists, not tuples; options that are not JSON as strings), so it
        compares equal to itself read back from ``race.json``."""
        value = asdict(self)
        value["extra_lrs"] = {k: v for k, v in sorted(self.extra_lrs.items()) if k in self.optimizers}
        return json.loads(json.dumps(value, default=str))


def make_config(task: str = "mnist1d", model: str = "mlp", optimizers: Sequence[str] | str | None = None,
                lrs: Sequence[float] | str | None = None, seeds: int | Sequence[int] | str | None = None,
                epochs: int | None = None, batch_size: int | str | None = DEFAULT_BATCH_SIZE, quick: bool = False,
                task_options: Mapping[str, Any] | None = None) -> RaceConfig:
    """Validate the race options (strings as the CLI gives them are accepted) into a :class:`RaceConfig`.

    ``quick`` swaps the defaults for a small demo grid and budget; options given explicitly win.
    Raises ValueError naming the option and the value received.
    """
    from ..optim import resolve

    names = _names(optimizers) if optimizers is not None else DEFAULT_OPTIMIZERS
    for name in names:
        resolve(name)  # unknown names raise ValueError listing the known ones
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers: each name once please, got {list(names)}")
    explicit_lrs = lrs is not None
    grid = _floats("lrs", lrs) if explicit_lrs else (QUICK_LRS if quick else DEFAULT_LRS)
    seed_list = _seeds(seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS))
    budget = _positive_int("epochs", epochs if epochs is not None else (QUICK_EPOCHS if quick else DEFAULT_EPOCHS))
    batch = _batch_size(batch_size)
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a task name, got {task!r}")
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a model name, got {model!r}")
    extras = {} if explicit_lrs or quick else {k: v for k, v in EXTRA_LRS.items() if k in names}
    return RaceConfig(task=task, task_options=dict(task_options or {}), model=model, optimizers=tuple(names),
                      lrs=grid, extra_lrs=extras, seeds=seed_list, epochs=budget, batch_size=batch,
                      full_batch=full_batch_names(names))


def select_lr(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """The winning lr among one optimizer's tuning rows (see the module docstring), or None.

    Reads only ``status``, ``lr``, ``val_loss`` and ``val_acc``: test metrics play no part.
    """
    best: tuple[float, float, float] | None = None
    for row in rows:
        loss = row.get("val_loss")
        if row.get("status") != "ok" or loss is None or not math.isfinite(loss):
            continue
        acc = row.get("val_acc")
        acc = acc if acc is not None and math.isfinite(acc) else -math.inf
        candidate = (float(loss), -float(acc), float(row["lr"]))
        if best is None or candidate < best:
            best = candidate
    return None if best is None else best[2]


def select(config: RaceConfig, rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """The selected lr of every optimizer of ``config`` from the tuning rows among ``rows``."""
    tuning = [row for row in rows if row.get("phase") == TUNE]
    return {opt: select_lr(row for row in tuning if row["optimizer"] == opt) for opt in config.optimizers}


# -- parsing helpers ------------------------------------------------------------------------------
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
