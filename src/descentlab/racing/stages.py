"""Which runs an arm needs next, as a pure function of the race's config and the records so far — so a
race resumed from ``results.jsonl`` makes exactly the runs that are missing, whatever killed it.

An arm with a single setting (one lr, no other axis) has nothing to choose: it goes straight to
confirmation. Otherwise it moves through four stages (each waits for the one before to finish):

1. **Grid**: every setting of :meth:`RaceConfig.settings` on the first tuning seed, with early
   stopping.
2. **Edges**: while the best setting's lr is the largest (smallest) of its line and fewer than
   :data:`~.protocol.MAX_EXTENSIONS` steps were added beyond that edge, one more lr a grid step
   further (the ratio of the line's two outermost lrs: √10 on the default grid) on the first seed. It
   stops once the new lr diverges or does not win: the selected lr is then interior, or bounded by
   divergence.
3. **Halving** (successive halving over seeds, Li et al. 2018's η = :data:`~.protocol.REDUCTION`): the
   best ⌈n/η⌉ (at least two) of the n settings that scored on the seeds so far train on the next
   tuning seed, ranked on their mean over all of them.
4. **Confirmation**: the winner of the last rung (:mod:`.selection`) trains on every seed of the race,
   its whole budget, and evaluates the test split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .protocol import MAX_EXTENSIONS, REDUCTION, Arm, RaceConfig, step_beyond
from .record import FINAL, TUNE, RunRecord, RunSpec, Setting
from .selection import Scored, is_classification, line_of, rank, tied_with, tuning_scores


@dataclass(frozen=True)
class Selection:
    """An arm's choice: the winning setting (None when nothing scored) and how it was reached."""

    chosen: Setting | None
    ranking: list[Scored] = field(default_factory=list)
    """The last rung's ranking, best first."""
    tied: int = 0
    """How many settings tied with the winner on the first tuning seed's validation score (1: a clear winner)."""
    saturated: bool = False
    """Several settings tied at the metric's ceiling (100 % validation accuracy): the validation set
    cannot tell them apart; the winner is the middle of that plateau."""
    seeds: tuple[int, ...] = ()
    """The tuning seeds the winner was chosen on."""
    extended: tuple[float, ...] = ()
    """The lrs added beyond the grid's edges."""


@dataclass(frozen=True)
class ArmPlan:
    """The runs ``arm`` needs next (none left: it is done) and, once tuning is complete, its selection."""

    arm: Arm
    next_runs: list[RunSpec]
    selection: Selection | None

    @property
    def done(self) -> bool:
        return not self.next_runs


def plan_arm(config: RaceConfig, arm: Arm, records: Sequence[RunRecord]) -> ArmPlan:
    """See the module docstring."""
    classification = is_classification(records)
    done = {r.spec for r in records}
    seeds = config.tuning_seed_list()
    first = seeds[0]

    def missing(phase: str, settings: Sequence[Setting], seed: int) -> list[RunSpec]:
        return [s for s in (config.spec(phase, arm, st, seed) for st in settings) if s not in done]

    settings = config.settings(arm[0])
    if len(settings) == 1 and len(config.grid(arm[0])) < 2:  # nothing to choose (and no edge to extend)
        chosen = settings[0]
        return ArmPlan(arm, [s for seed in config.seeds for s in missing(FINAL, [chosen], seed)],
                       Selection(chosen, seeds=()))
    todo = missing(TUNE, settings, first)
    if todo:
        return ArmPlan(arm, todo, None)
    scores = tuning_scores(records, arm, classification)
    explored = [s for s in scores if first in scores[s]]
    step = _extension(config, arm[0], scores, explored, first, classification)
    if step is not None:
        return ArmPlan(arm, [config.spec(TUNE, arm, step, first)], None)
    grid = set(config.grid(arm[0]))
    extended = tuple(sorted({s.lr for s in explored} - grid))
    candidates = explored
    for k in range(1, len(seeds)):
        ranked = [s for s in rank(scores, seeds[:k], candidates, classification) if s.eligible]
        keep = max(min(2, len(ranked)), math.ceil(len(ranked) / REDUCTION))
        candidates = [s.setting for s in ranked[:keep]]
        todo = missing(TUNE, candidates, seeds[k])
        if todo:
            return ArmPlan(arm, todo, None)
    ranking = rank(scores, seeds, candidates, classification)
    if not ranking or not ranking[0].eligible:
        return ArmPlan(arm, [], Selection(None, ranking, seeds=seeds, extended=extended))
    best = ranking[0]
    first_ranking = rank(scores, (first,), explored, classification)
    winner = next(s for s in first_ranking if s.setting == best.setting)
    tied = len(tied_with(first_ranking, winner))
    saturated = classification and tied > 1 and (best.mean or 0) >= 1
    selection = Selection(best.setting, ranking, tied, saturated, seeds, extended)
    return ArmPlan(arm, [s for seed in config.seeds for s in missing(FINAL, [best.setting], seed)], selection)


def _extension(config: RaceConfig, optimizer: str, scores: dict[Setting, dict[int, float | None]],
               explored: list[Setting], first: int, classification: bool) -> Setting | None:
    """The next lr beyond the edge the first seed's best setting sits on, if the grid should grow."""
    grid = config.grid(optimizer)
    if len(grid) < 2:
        return None  # one lr is not a search: nothing to extend
    ranked = rank(scores, (first,), explored, classification)
    if not ranked or not ranked[0].eligible:
        return None
    best = ranked[0].setting
    line = sorted(s.lr for s in explored if line_of(s) == line_of(best))
    if best.lr == line[-1] and sum(lr > grid[-1] for lr in line) < MAX_EXTENSIONS:
        lr = step_beyond(line[-2], line[-1])
    elif best.lr == line[0] and sum(lr < grid[0] for lr in line) < MAX_EXTENSIONS:
        lr = step_beyond(line[1], line[0])
    else:
        return None
    step = Setting(lr, best.batch_size, best.hypers)
    return None if step in scores else step


def select(config: RaceConfig, records: Sequence[RunRecord]) -> dict[Arm, Selection | None]:
    """Every arm's selection (None while its tuning is still under way)."""
    return {arm: plan_arm(config, arm, records).selection for arm in config.arms()}


def expected_runs(config: RaceConfig) -> int:
    """A count of the runs a race will make, for its progress bar: the grid, a second tuning seed for a
    third of it, and the confirmations (edges and divergence change it as the race goes)."""
    total = 0
    for optimizer, _ in config.arms():
        n = len(config.settings(optimizer))
        if n == 1 and len(config.grid(optimizer)) < 2:
            total += len(config.seeds)
            continue
        rung, survivors = 0, n
        for _ in config.tuning_seed_list()[1:]:
            survivors = max(min(2, survivors), math.ceil(survivors / REDUCTION))
            rung += survivors
        total += n + rung + len(config.seeds)
    return total
