"""The race protocol: the search space, which runs to make, and the race's config.

An *arm* is an (optimizer, schedule) pair; with the default ``schedules=("constant",)`` there is one
arm per optimizer. A *setting* (:class:`~.record.Setting`) is one point of an arm's search space: an
lr of the grid (the schedule's peak lr), a batch size (GD: always the whole training set) and a value
of every ``hp`` hyper-parameter the optimizer has.

1. Tuning, by successive halving over seeds (:mod:`.stages`): every setting trains on the first seed
   with early stopping (a run stops once its best validation point is ``patience`` evaluations old);
   a selected lr at the edge of its grid extends the grid a step at a time (at most
   :data:`MAX_EXTENSIONS`) until it is interior or bounded by divergence; then the best third of the
   settings (:data:`REDUCTION`) train on the second seed too.
2. Selection (:mod:`.selection`, the only place it is computed): the setting whose best validation
   points are best on average over the tuning seeds; ties are broken by the setting's lr neighbours
   and then the middle of the tied plateau, never by a saturated validation loss.
3. Confirmation: the selected setting trains on every seed for its whole budget; each run evaluates
   the test split once at its own best validation point (the headline) and once at the end of the
   budget. Test metrics exist only on these runs and are never read by steps 1-2.

Every arm gets the same budget in epochs (passes over the training set). GD is SGD fed the whole
training set at each step, so it takes one step per epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import options
from .record import FINAL, RESULTS_FORMAT, TUNE, Hypers, RunSpec, Setting, frozen, hypers_of

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
MAX_SEEDS = options.MAX_SEEDS

QUICK_LRS = (1e-3, 1e-2, 1e-1)
QUICK_EPOCHS = 3
QUICK_SEEDS = 2

TUNING_SEEDS = 2
"""Settings are tuned on up to this many seeds (the best third of them on the second, see :mod:`.stages`)."""
REDUCTION = 3
"""Successive halving's η: the best ⌈n/η⌉ of an arm's n settings go on to the next tuning seed."""
MAX_EXTENSIONS = 2
"""How many steps a grid grows beyond each of its edges (per arm and line of the search space)."""

Arm = tuple[str, str]
"""(optimizer, schedule)."""


@dataclass(frozen=True)
class RaceConfig:
    """Everything that defines a race's results (not how fast it runs: ``jobs`` is not here).

    ``binding`` ties a results folder to its data and model (:func:`descentlab.racing.binding.of`),
    filled in once the task is loaded."""

    task: str = "mnist1d"
    task_options: dict[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    lrs: tuple[float, ...] = DEFAULT_LRS
    extra_lrs: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(EXTRA_LRS))
    hp: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    epochs: int = DEFAULT_EPOCHS
    batch_sizes: tuple[int | None, ...] = (DEFAULT_BATCH_SIZE,)
    full_batch: tuple[str, ...] = field(default_factory=lambda: full_batch_names(DEFAULT_OPTIMIZERS))
    schedules: tuple[str, ...] = ("constant",)
    device: str = "cpu"
    patience: int | None = 15
    tuning_seeds: int = TUNING_SEEDS
    hp_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per optimizer, the names of ``hp`` it has (the others do not apply to it)."""
    hp_skipped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per optimizer, the ``hp`` combinations it refuses to be built with (``nesterov`` without momentum):
    left out of its search, and said so once."""
    binding: dict[str, Any] | None = None
    results_format: int = RESULTS_FORMAT

    def arms(self) -> list[Arm]:
        return [(opt, schedule) for opt in self.optimizers for schedule in self.schedules]

    def grid(self, optimizer: str) -> tuple[float, ...]:
        """The lrs tried for ``optimizer``: the grid plus its extras, sorted, without repeats."""
        return tuple(sorted(set(self.lrs) | set(self.extra_lrs.get(optimizer, ()))))

    def batch_sizes_for(self, optimizer: str) -> tuple[int | None, ...]:
        """GD (the registry's full-batch names) always takes the whole training set."""
        return (None,) if optimizer in self.full_batch else self.batch_sizes

    def hypers_for(self, optimizer: str) -> list[Hypers]:
        """Every combination of the ``hp`` values that apply to ``optimizer`` (``[()]`` when none do)."""
        skipped = {hypers_of(combo) for combo in self.hp_skipped.get(optimizer, ())}
        return [combo for combo in all_combinations(self.hp, self.hp_names.get(optimizer, ())) if combo not in skipped]

    def settings(self, optimizer: str) -> list[Setting]:
        """The grid an arm of ``optimizer`` searches (before any edge extension)."""
        return [Setting(lr, size, hypers) for size in self.batch_sizes_for(optimizer)
                for hypers in self.hypers_for(optimizer) for lr in self.grid(optimizer)]

    def tuning_seed_list(self) -> tuple[int, ...]:
        return self.seeds[:max(1, min(self.tuning_seeds, len(self.seeds)))]

    def spec(self, phase: str, arm: Arm, setting: Setting, seed: int) -> RunSpec:
        return RunSpec(phase, arm[0], arm[1], float(setting.lr), seed, setting.batch_size, setting.hypers)

    def final_runs(self, selected: Mapping[Arm, Setting | None]) -> list[RunSpec]:
        return [self.spec(FINAL, arm, setting, seed) for arm in self.arms()
                if (setting := selected.get(arm)) is not None for seed in self.seeds]

    def foreign(self, spec: RunSpec) -> str | None:
        """Why a run cannot belong to this race (None when it can): an optimizer, schedule, seed, batch size or
        hyper-parameter value the race does not have, or an lr neither on its grid nor beyond its edges."""
        optimizer, schedule = spec.arm
        seeds = self.tuning_seed_list() if spec.phase == TUNE else self.seeds
        grid = self.grid(optimizer) if optimizer in self.optimizers else ()
        checks = [
            (spec.phase in (TUNE, FINAL), f"phase {spec.phase!r}"),
            (optimizer in self.optimizers, f"optimizer {optimizer!r}"),
            (schedule in self.schedules, f"schedule {schedule!r}"),
            (spec.seed in seeds, f"seed {spec.seed} in phase {spec.phase!r}"),
            (spec.batch_size in self.batch_sizes_for(optimizer), f"batch size {spec.batch_size!r}"),
            (spec.hypers in self.hypers_for(optimizer), f"hyper-parameters {dict(spec.hypers)!r}"),
            (spec.lr in grid or spec.lr in extension_lrs(grid), f"lr {spec.lr!r}"),
        ]
        return next((f"{what} is not in this race" for ok, what in checks if not ok), None)

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
        for name in ("optimizers", "lrs", "seeds", "full_batch", "schedules", "batch_sizes"):
            data[name] = tuple(data[name])
        data["extra_lrs"] = {k: tuple(v) for k, v in data["extra_lrs"].items()}
        data["hp"] = {k: tuple(frozen(v)) for k, v in data["hp"].items()}
        data["hp_names"] = {k: tuple(v) for k, v in data["hp_names"].items()}
        data["hp_skipped"] = {k: [dict(c) for c in v] for k, v in data["hp_skipped"].items()}
        return cls(**data)


def step_beyond(inner: float, edge: float) -> float:
    """The lr one grid step beyond ``edge`` (the step from ``inner``), to 3 significant digits; on the
    half-decade lattice (1, 3.16, 10, ...) when the step is a multiple of half a decade, so that 3.16 -> 10,
    not 9.99."""
    halves = 2 * (math.log10(edge) - math.log10(inner))
    if abs(halves - round(halves)) < 0.02 and round(halves):
        return float(f"{10 ** ((round(2 * math.log10(edge)) + round(halves)) / 2):.3g}")
    return float(f"{edge * edge / inner:.3g}")


def extension_lrs(grid: Sequence[float]) -> tuple[float, ...]:
    """Every lr an edge extension can add to ``grid``: up to :data:`MAX_EXTENSIONS` steps beyond each edge
    (none for a grid of one lr)."""
    if len(grid) < 2:
        return ()
    out = []
    for inner, edge in ((grid[-2], grid[-1]), (grid[1], grid[0])):
        for _ in range(MAX_EXTENSIONS):
            inner, edge = edge, step_beyond(inner, edge)
            out.append(edge)
    return tuple(out)


def make_config(task: str = "mnist1d", model: str = "mlp", optimizers: Sequence[str] | str | None = None,
                lrs: Sequence[float] | str | Mapping[str, Sequence[float]] | None = None,
                seeds: int | Sequence[int] | str | None = None,
                epochs: int | None = None, batch_size: Any = DEFAULT_BATCH_SIZE, quick: bool = False,
                task_options: Mapping[str, Any] | None = None, schedules: Sequence[str] | str | None = None,
                device: str = "cpu", hp: Mapping[str, Any] | Sequence[str] | None = None,
                patience: int | str | None = None) -> RaceConfig:
    """Validate the race options (strings as the CLI gives them are accepted) into a :class:`RaceConfig`.

    ``quick`` swaps the defaults for a small demo grid and budget; options given explicitly win. ``lrs``
    may map every optimizer to its own grid (:func:`lr_grids`). ``batch_size`` may be several
    (``"32,64,128"``): an axis of the search. ``hp`` maps hyper-parameter names to the values to search
    (or is a list of ``NAME=V1,V2`` strings, see :mod:`.options`); a name no raced optimizer has is refused.
    Raises ValueError naming the option and the value received.
    """
    from ..optim import resolve

    names = options.names(optimizers) if optimizers is not None else DEFAULT_OPTIMIZERS
    for name in names:
        resolve(name)  # unknown names raise ValueError listing the known ones
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers: each name once please, got {list(names)}")
    explicit_lrs = lrs is not None
    per_optimizer = lr_grids(names, lrs) if isinstance(lrs, Mapping) else None  # race --lrs auto
    if per_optimizer is not None:
        grid: tuple[float, ...] = ()
    else:
        grid = options.floats("lrs", lrs) if lrs is not None else (QUICK_LRS if quick else DEFAULT_LRS)
    seed_list = options.seeds(seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS))
    budget = options.positive_int("epochs", epochs if epochs is not None else
                                  (QUICK_EPOCHS if quick else DEFAULT_EPOCHS))
    sizes = options.batch_sizes(batch_size)
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a task name, got {task!r}")
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a model name, got {model!r}")
    extras = {} if explicit_lrs or quick else {k: v for k, v in EXTRA_LRS.items() if k in names}
    if per_optimizer is not None:  # no shared grid: each optimizer's whole grid is its "extra" lrs
        extras = per_optimizer
    searched = options.hp(hp)
    applies = hp_applies(names, searched)
    return RaceConfig(task=task, task_options=dict(task_options or {}), model=model, optimizers=tuple(names),
                      lrs=grid, extra_lrs=extras, hp=searched, seeds=seed_list, epochs=budget, batch_sizes=sizes,
                      full_batch=full_batch_names(names), schedules=options.schedules(schedules), device=device,
                      patience=options.patience(patience, budget), hp_names=applies,
                      hp_skipped=unbuildable(names, searched, applies, grid, extras))


def all_combinations(searched: Mapping[str, Sequence[Any]], names: Sequence[str]) -> list[Hypers]:
    """Every combination of the values of ``names`` among ``searched`` (``[()]`` for no names)."""
    combos: list[Hypers] = [()]
    for name in names:
        combos = [(*combo, (name, frozen(value))) for combo in combos for value in searched[name]]
    return [tuple(sorted(combo)) for combo in combos]


def unbuildable(names: Sequence[str], searched: Mapping[str, Sequence[Any]], applies: Mapping[str, Sequence[str]],
                grid: Sequence[float], extras: Mapping[str, Sequence[float]]) -> dict[str, list[dict[str, Any]]]:
    """Per optimizer, the ``hp`` combinations it cannot be built with (tried on a dummy parameter at its
    grid's smallest lr). ValueError naming the optimizer when it cannot be built at all — a class with a
    required argument, a factory that refuses ``lr`` — or with none of the combinations (``--hp
    weight_decay=-1``): before any run starts."""
    import torch

    from ..optim import resolve

    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        lr = min((*grid, *extras.get(name, ())), default=1e-3)
        combos = all_combinations(searched, applies.get(name, ()))
        errors: dict[Hypers, str] = {}
        for combo in combos:
            try:
                resolve(name).create([torch.zeros(2, requires_grad=True)], lr=lr, **dict(combo))
            except Exception as error:  # any refusal of the optimizer's own checks
                errors[combo] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
        if len(errors) == len(combos):
            combo, error = next(iter(errors.items()))
            given = f" with {', '.join(f'{k}={v}' for k, v in combo)}" if combo else f" as {name}(params, lr={lr:g})"
            option = f"hp {', '.join(k for k, _ in combo)}" if combo else "optimizers"
            raise ValueError(f"{option}: optimizer {name!r} cannot be built{given} ({error})")
        if errors:
            out[name] = [dict(combo) for combo in errors]
    return out


def hp_applies(names: Sequence[str], searched: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Per optimizer, the searched names it has (a factory taking ``**kwargs`` has them all); a name that no
    optimizer has is refused."""
    from ..optim import resolve

    known = {name: resolve(name).hyper_names() for name in names}
    has = {name: set(searched) if names_of is None else names_of for name, names_of in known.items()}
    for hyper in searched:
        if not any(hyper in taken for taken in has.values()):
            raise ValueError(f"hp {hyper}: none of the raced optimizers ({', '.join(names)}) has a hyper-parameter "
                             f"{hyper!r}")
    return {name: tuple(h for h in searched if h in has[name]) for name in names if any(h in has[name]
                                                                                         for h in searched)}


def lr_grids(names: Sequence[str], grids: Mapping[str, Sequence[float] | str]) -> dict[str, tuple[float, ...]]:
    """One grid per optimizer (``race --lrs auto`` gives these, see :mod:`descentlab.lrfind.auto`): the race
    then has no shared grid and ``RaceConfig.extra_lrs`` holds each optimizer's whole grid."""
    missing = [name for name in names if name not in grids]
    if missing:
        raise ValueError(f"lrs: a grid per optimizer needs one for every optimizer, none for {', '.join(missing)}")
    return {name: options.floats(f"lrs for {name}", grids[name]) for name in names}
