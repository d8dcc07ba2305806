"""The study's workloads: a task, a model of it and the budget (epochs) its race gets.

The default suite covers the built-in tasks and models where they differ in kind: an MLP and a CNN on
MNIST-1D (same data, different architecture), an MLP on scikit-learn's digits (other data), and least
squares with a linear model (convex, regression). Each budget is where the study's budget rule
(:mod:`.settle`) starts: the budget where the tuned best settled in the full study's measurements
(docs/study.md: digits went 30 → 60 → 120 and least squares 30 → 60 under the rule); the study extends it
when the tuned best is still improving there.

``--workloads`` takes a comma-separated list of suite names (``mnist1d-mlp``, with ``@EPOCHS`` another budget)
or ``TASK[/MODEL][@EPOCHS]``
where TASK is a built-in task or ``module:attr`` (a Task or a callable returning one).

Each workload once: a workload is its (task, model) — the model a name leaves out is the task's default —
whatever its name or starting budget. ``digits@120,digits-mlp`` names one workload twice (digits' default
model is the MLP) and is refused, as ``lstsq,lstsq`` is: raced twice, it would count as two of the m
workloads of the overall verdict (and two budgets of one workload would race the same budgets twice once
the budget rule doubles the smaller). :func:`check_distinct` says so in one line naming both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..tasks.registry import TASKS


@dataclass(frozen=True)
class Workload:
    """One race of the study: ``task`` (name or ``module:attr``), ``model`` (None: the task's own) and
    ``epochs`` per run."""

    name: str
    task: str
    model: str | None
    epochs: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def folder(self) -> str:
        """The subfolder of the study that holds this workload's races."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)


SUITE = (
    Workload("mnist1d-mlp", "mnist1d", "mlp", 60),
    Workload("mnist1d-cnn", "mnist1d", "cnn", 60),
    Workload("digits-mlp", "digits", "mlp", 120),
    Workload("lstsq-linear", "lstsq", "linear", 60),
)
QUICK_EPOCHS = {"mnist1d-mlp": 2, "mnist1d-cnn": 2, "digits-mlp": 3, "lstsq-linear": 5}
"""``--quick``: the same workloads on a demo budget (about a minute; it states no verdict)."""
OWN_EPOCHS = 20
OWN_QUICK_EPOCHS = 3
"""The budget of a workload given as TASK[/MODEL] without @EPOCHS (quick: the second)."""
MAX_EPOCHS = 100_000


def default_suite(quick: bool = False) -> tuple[Workload, ...]:
    return tuple(Workload(w.name, w.task, w.model, QUICK_EPOCHS[w.name]) if quick else w for w in SUITE)


def parse_workloads(value: str | Sequence[str] | None, quick: bool = False) -> tuple[Workload, ...]:
    """The workloads ``value`` names (see the module docstring); ValueError naming a bad item."""
    if value is None:
        return default_suite(quick)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise ValueError(f"workloads: need at least one workload, got {value!r}")
    out = [_parse(name, quick) for name in names]
    if len({w.folder for w in out}) != len(out):
        raise ValueError(f"workloads: each workload once please, got {names}")
    check_distinct(out, names)
    return tuple(out)


def builtin_default_model(task: str) -> str | None:
    """The default model of a built-in task; None for ``module:attr`` (known once the task is imported)."""
    return TASKS[task].default_model if task in TASKS else None


def check_distinct(workloads: Sequence[Workload], names: Sequence[str] | None = None,
                   default_model: Callable[[str], str | None] = builtin_default_model) -> None:
    """ValueError naming ``--workloads`` and both names when two workloads are one (task, model) (module
    docstring); ``default_model(task)``: the model a workload without one gets (None: not known, compared as
    written). ``names``: how the user wrote each workload (default: its name)."""
    seen: dict[tuple[str, str | None], str] = {}
    for workload, written in zip(workloads, names or [w.name for w in workloads], strict=True):
        model = workload.model or default_model(workload.task)
        key = (workload.task, model)
        if key in seen:
            shown = repr(model) if model else "its default"
            raise ValueError(f"workloads: {seen[key]!r} and {written!r} are the same workload (task "
                             f"{workload.task!r}, model {shown}): each workload once please")
        seen[key] = written


def _parse(spec: str, quick: bool) -> Workload:
    body, at, budget = spec.partition("@")
    epochs = _epochs(spec, budget) if at else None
    suite = {w.name: w for w in default_suite(quick)}
    if body.strip() in suite:
        found = suite[body.strip()]
        return Workload(found.name, found.task, found.model, epochs or found.epochs)
    task, slash, model = body.partition("/")
    task, model = task.strip(), model.strip()
    if not task or (slash and not model):
        raise ValueError(f"workloads: {spec!r} is not a suite name ({', '.join(w.name for w in SUITE)}) nor "
                         "TASK[/MODEL][@EPOCHS]")
    if ":" not in task and task not in TASKS:
        raise ValueError(f"workloads: unknown task {task!r} in {spec!r}; a suite name "
                         f"({', '.join(w.name for w in SUITE)}), a built-in task ({', '.join(TASKS)}) or module:attr")
    if ":" not in task and model and model not in TASKS[task].models:
        raise ValueError(f"workloads: {model!r} is not a model of {task!r} in {spec!r}; known: "
                         f"{', '.join(TASKS[task].models)}")
    name = task + (f"-{model}" if model else "")
    return Workload(name, task, model or None, epochs or (OWN_QUICK_EPOCHS if quick else OWN_EPOCHS))


def _epochs(spec: str, budget: str) -> int:
    try:
        epochs = int(budget.strip())
    except ValueError:
        epochs = 0
    if not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"workloads: the budget in {spec!r} must be a whole number of epochs in [1, {MAX_EPOCHS}]")
    return epochs
