"""The command (or Python call) that redoes a race, as a pure function of its config."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from ..racing.protocol import RaceConfig
from ..tasks.registry import TASKS


def own_task_object(config: RaceConfig) -> bool:
    """Whether the race ran on a Task object (neither a built-in name nor an import path the CLI takes)."""
    return config.task not in TASKS and ":" not in config.task


def reproduce_command(config: RaceConfig) -> str:
    """The ``descentlab race`` command that redoes this race: it parses back to the same config (lrs in
    full precision, seeds as a count or a list). Add ``--out`` with the race's directory to resume it."""
    words = ["descentlab", "race", "--task", config.task, "--model", config.model,
             "--optimizers", ",".join(config.optimizers), "--lrs", ",".join(repr(lr) for lr in config.lrs),
             "--seeds", _seeds_option(config.seeds), "--epochs", str(config.epochs),
             "--batch-size", ",".join(_batch_text(size) for size in config.batch_sizes),
             "--schedules", ",".join(config.schedules), "--device", config.device,
             "--patience", "none" if config.patience is None else str(config.patience)]
    for name, values in config.hp.items():
        words += ["--hp", f"{name}={','.join(_hp_text(v) for v in values)}"]
    if not config.lrs:  # a grid per optimizer, centred on a range test each (lrfind.json beside the results)
        words[words.index("--lrs") + 1] = "auto"
    elif config.extra_lrs:  # the default grid: leave --lrs out so the per-optimizer extras come back too
        del words[words.index("--lrs"):words.index("--lrs") + 2]
    return shlex.join(words)


def reproduce_call(config: RaceConfig) -> str:
    """The ``descentlab.race(...)`` call that redoes this race from Python: for a Task object (``task``
    stands for it) or task options the CLI has no flag for."""
    batch = ",".join(_batch_text(size) for size in config.batch_sizes)
    kwargs: dict[str, Any] = {"model": config.model, "optimizers": list(config.optimizers),
                              "lrs": "auto" if not config.lrs else None if config.extra_lrs else list(config.lrs),
                              "seeds": list(config.seeds),
                              "epochs": config.epochs, "batch_size": batch, "schedules": list(config.schedules),
                              "device": config.device, "patience": "none" if config.patience is None
                              else config.patience,
                              "hp": {name: list(values) for name, values in config.hp.items()} or None}
    if config.task_options:
        kwargs["task_options"] = dict(config.task_options)
    own = own_task_object(config)
    call = f"descentlab.race({'task' if own else repr(config.task)}, " \
        + ", ".join(f"{key}={value!r}" for key, value in kwargs.items() if value is not None) + ")"
    if own:
        call = f"# task: your own descentlab.tasks.Task, the one named {config.task!r}\n{call}"
    return call


def reproduction(config: RaceConfig) -> str:
    """The CLI command when it can redo the race, else the Python call."""
    return reproduce_call(config) if own_task_object(config) or config.task_options else reproduce_command(config)


def _batch_text(size: int | None) -> str:
    return "full" if size is None else str(size)


def _hp_text(value: Any) -> str:
    """A ``--hp`` value as the CLI reads it back: pairs joined by ``:``, numbers in full precision."""
    if isinstance(value, (tuple, list)):
        return ":".join(_hp_text(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _seeds_option(seeds: Sequence[int]) -> str:
    """``--seeds`` as the CLI reads it back: a count N means 0..N-1, a list needs a comma ("5,")."""
    if tuple(seeds) == tuple(range(len(seeds))):
        return str(len(seeds))
    return ",".join(str(s) for s in seeds) + ("," if len(seeds) == 1 else "")
