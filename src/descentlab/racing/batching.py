"""The batched engine of a race: which runs train together, and training a batch of them.

Runs that share the task, the model and the batch size (every run of a race but GD's, which are
full-batch, and GD's among themselves) are cut into batches and each batch trains as one stacked
model (:func:`descentlab.train.batched.train_batched`), one batch per worker process. A batch
holds several optimizers (each optimizer's runs are contiguous rows stepped by its own rule), so the
race's k ≈ 50 tuning runs become a few large batches instead of 50 small runs. Each run of a batch
is still its own record: its own initialisation, data order, divergence, best point and test split.

What cannot be stacked trains one run at a time, with the reason printed once per race
(:func:`check`): an optimizer that is not a descentlab rule, a rule whose stacked update differs
from its one-at-a-time core (:func:`descentlab.optim.stacked.stacking_problem`), a model that
``torch.func.vmap`` cannot batch or that keeps buffers, a task read item by item. A custom ``run_fn``
(the caller's own engine) trains every run alone, silently.

Sizes: a batch is at most :data:`MAX_CONFIGS` runs and at most :data:`MEMORY_BUDGET` bytes of
parameters, gradients, optimizer state and best-point copies (about 8 copies of the model per
run); each group of runs is cut into at least as many batches as there are workers (each at least
:data:`MIN_BATCH` runs), so both cores of a 2-core machine are busy. Confirmation runs are gathered
(:data:`GATHER`, unless a worker would idle) so that the seeds of optimizers whose tuning ended in
different batches train together: the larger the batch, the more of each step's fixed cost its runs
share (ms per run-step in ``benchmarks/batched_race.py``: 0.34 at k = 23, 0.80 at k = 8, about 1-1.5
for a run alone).
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..optim import resolve, rule_of
from ..optim.stacked import stacking_problem as rule_problem
from ..tasks import Task
from ..train.batched import train_batched
from ..train.member import Config
from ..train.stacked_model import stacking_problem as model_problem
from .record import FINAL, RunRecord, RunSpec
from .runner import Job, RaceContext, run_one

ENGINES = ("batched", "per-run")
MAX_CONFIGS = 64
MIN_BATCH = 4
GATHER = 8
"""Confirmation runs wait for this many (or for no batch left in flight, or a free worker with nothing
queued) before they are planned: the runs of optimizers whose tuning ended in different batches then
share batches."""
MEMORY_BUDGET = 1 << 30
COPIES_PER_RUN = 8
"""Parameters, gradient, up to three buffers, the best point's copy and update temporaries."""


@dataclass(frozen=True)
class Batching:
    """Which optimizers of a race stack, and how big a batch may be."""

    stackable: frozenset[str]
    max_configs: int
    jobs: int
    reasons: tuple[str, ...] = field(default=())
    gather: int = GATHER

    def plan(self, specs: list[RunSpec], workers: int | None = None) -> list[Job]:
        """``specs`` as jobs: batches of stackable runs sharing a batch size (largest first), then one
        job per other run; each group cut for ``workers`` worker processes (default: the race's)."""
        alone: list[Job] = [(s,) for s in specs if s.optimizer not in self.stackable]
        groups: dict[int | None, list[RunSpec]] = {}
        for spec in specs:
            if spec.optimizer in self.stackable:
                groups.setdefault(spec.batch_size, []).append(spec)
        batches: list[Job] = []
        for group in groups.values():
            batches += _cut(group, self.max_configs, self.jobs if workers is None else max(1, workers))
        return sorted(batches, key=len, reverse=True) + alone


def _cut(group: list[RunSpec], max_configs: int, jobs: int) -> list[Job]:
    """``group`` in contiguous batches of nearly equal size: at least ⌈n / max_configs⌉ of them, and
    up to one per worker while each keeps :data:`MIN_BATCH` runs."""
    n = len(group)
    count = max(math.ceil(n / max_configs), min(jobs, math.ceil(n / MIN_BATCH)), 1)
    size, extra = divmod(n, count)
    out, start = [], 0
    for index in range(count):
        stop = start + size + (1 if index < extra else 0)
        out.append(tuple(group[start:stop]))
        start = stop
    return [job for job in out if job]


def check(task: Task, model: str, optimizers: Sequence[str], jobs: int, custom_run: bool) -> Batching:
    """What of this race can train batched; the reasons for what cannot (printed once by the race)."""
    def nothing(reason: str | None) -> Batching:
        reasons = (f"{reason}: every run trains one at a time",) if reason else ()
        return Batching(frozenset(), 1, jobs, reasons)

    if custom_run:  # the caller chose its own engine: nothing to say
        return nothing(None)
    if not task.in_memory:
        return nothing(f"task {task.name!r} is read item by item (a Dataset)")
    modules = [task.make_model(model, seed) for seed in (0, 1)]
    problem = model_problem(modules, task.x_train[:8], task.y_train[:8], task.loss_fn)
    if problem is not None:
        return nothing(f"model {model!r}: {problem}")
    stackable, reasons = set(), []
    for name in optimizers:
        rule = rule_of(name)
        problem = (f"optimizer {name!r} is not a descentlab rule" if rule is None
                   else rule_problem(rule, resolve(name).defaults))
        if problem is None:
            stackable.add(name)
        else:
            reasons.append(f"{problem}: its runs train one at a time")
    n_params = sum(p.numel() * p.element_size() for p in modules[0].parameters())
    max_configs = max(1, min(MAX_CONFIGS, MEMORY_BUDGET // max(1, COPIES_PER_RUN * n_params)))
    return Batching(frozenset(stackable), max_configs, jobs, tuple(reasons))


def run_batch(job: Job, context: RaceContext) -> list[tuple[RunSpec, RunRecord]]:
    """Train the runs of ``job`` (one batch size) as one batch; their records (``engine="batched"``). Should
    the batch itself fail, its runs train one at a time instead (and say why on stderr)."""
    configs = [Config(s.optimizer, s.schedule, s.lr, s.seed, s.phase == FINAL, s.hypers, context.patience_for(s))
               for s in job]
    started = time.perf_counter()
    try:
        if not isinstance(context.task, Task):
            raise TypeError(f"the task reached this worker as {context.task!r}, not a Task")
        results = train_batched(context.task, configs, model=context.model, batch_size=job[0].batch_size,
                                epochs=context.epochs, device=context.device)
    except Exception as error:  # a bug or a resource limit of the stacked path: the runs still get made
        print(f"descentlab: a batch of {len(job)} runs failed after {time.perf_counter() - started:.1f} s "
              f"({type(error).__name__}: {error}); training them one at a time\n"
              f"{traceback.format_exc(limit=-2)}", file=sys.stderr)
        return [run_one(spec, context) for spec in job]
    return [(spec, RunRecord.from_result(spec, result, engine="batched", **context.stamp))
            for spec, result in zip(job, results, strict=True)]
