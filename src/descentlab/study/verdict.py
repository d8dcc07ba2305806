"""The article's claim, judged: "Adam is very good to start with, with beta1 = 0.9, beta2 = 0.999,
learning_rate in [1e-3, 1e-4, 5e-4]" (the README: "Adam with lr 1e-3 is a good default").

One :class:`ClaimEntry` per (workload, article lr, budget): untuned Adam at that lr and budget against
the workload's *tuned best* (the race's best arm at the settled budget, by the race's own ranking,
:func:`descentlab.racing.summary.rank_key`: an arm that finished every confirmation seed before one that did
not, then the best mean best-validation metric; validation only, the test split takes part in no choice),
**paired by seed** (same seeds, so the same initial weights and data order;
:func:`descentlab.racing.stats.paired_difference`):

- classification: d_s = best_s − adam_s, test accuracy at each run's best validation point, in points;
  ``gap`` = mean d_s and its 95 % t interval [low, high] over the paired seeds;
- regression: d_s = ln(adam_s / best_s), test loss; ``gap`` = exp(mean d_s) (the geometric-mean ratio)
  and [exp(low), exp(high)].

Tolerance τ: ``ACC_POINTS`` = 1 point of accuracy, or ``LOSS_RATIO`` = 1.1 (10 % more loss).

- ``within``: high ≤ τ — even the interval's pessimistic end of Adam's shortfall is within tolerance;
- ``behind``: low > τ — the whole interval lies beyond it — *and* Adam was not still improving: on no
  seed at the end of its budget (:func:`descentlab.study.settle.still_improving`), and no larger budget
  of the same (workload, lr) reached a better mean best-validation metric by more than the plateau
  margin (:func:`improved_later`: the longer run with the same seed *is* this run continued, so a
  better result there means this one had not settled);
- ``undecided``: otherwise (the interval straddles τ; fewer than 2 paired seeds, so no interval; Adam
  still improving; no finished run). A still-improving entry is never ``behind`` on its interval (only
  on seeds it lost, below).

**A seed on which untuned Adam diverged or failed counts against it; it is never dropped.** It has no
test score, so it cannot enter the paired interval (``paired_seeds`` counts the seeds both finished), and:

- an entry with such a seed (``adam_unfinished`` > 0) is never ``within``: a default that blew up on one
  seed in three is not "within tolerance" on that workload, however well it did on the others;
- a seed the tuned best finished and Adam did not (a *lost* seed) is one on which Adam is behind by more
  than any tolerance, whatever the budget (the same seed trains the same way until it diverges). So the
  entry is ``behind`` when Adam lost more than half of the seeds the tuned best finished — the median
  seed is lost — still improving or not; otherwise the interval over the paired seeds decides ``behind``
  as above (the lost seeds could only widen Adam's shortfall).

``--quick`` (a demo budget) judges nothing: every entry ``undecided``, no overall verdict.

Overall, for the headline lr (``HEADLINE_LR`` = 1e-3), over the m workloads, with W within, B behind:
``holds`` when W = m; ``mostly holds`` when W > m/2; ``does not hold`` when B ≥ m/2; else ``undecided``.
Judged twice: at **equal budget** (multiple 1) and at **equal compute** — per workload the largest
budget multiple whose epochs stay within what the tuned best spent on tuning alone (its grid's tuning
runs, one seed, a full budget each: AlgoPerf's external-tuning ruleset counts those trials, its
self-tuning ruleset gives an untuned method their compute instead). ``verdict`` is the equal-compute
one (the fair test), beside the equal-budget one. Time to target at equal compute: the tuned best's
tuning runs plus its own time to target, against untuned Adam's time to target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..racing.stats import CONFIDENCE, paired_difference
from .analysis import Entry, WorkloadView
from .settle import MAX_DOUBLINGS, SETTLE_ACC, SETTLE_LOSS, gained

ACC_POINTS = 0.01
LOSS_RATIO = 1.10
HEADLINE_LR = 1e-3
WITHIN, BEHIND, UNDECIDED = "within", "behind", "undecided"
VERDICTS = (WITHIN, BEHIND, UNDECIDED)
OVERALL = ("holds", "mostly holds", "does not hold", "undecided")
CLAIM_FORMAT = 1
ARTICLE = ("Adam is very good to start with, with beta1 = 0.9, beta2 = 0.999, learning_rate in "
           "[1e-3, 1e-4, 5e-4]")


@dataclass(frozen=True)
class ClaimEntry:
    """Untuned Adam at one (workload, lr, budget) against the workload's tuned best (module docstring)."""

    workload: str
    lr: float
    budget_epochs: int
    multiple: int
    classification: bool
    best_optimizer: str | None
    best_lr: float | None
    adam_test: float | None
    best_test: float | None
    gap: float | None
    """Points behind the tuned best (classification) or the loss ratio to it (regression)."""
    gap_low: float | None
    gap_high: float | None
    paired_seeds: int
    """Seeds both finished (the interval's seeds)."""
    within_tolerance: bool
    still_improving: bool
    verdict: str
    compute_ratio: float | None
    """This entry's epochs over the tuned best's tuning epochs (≤ 1: at most equal compute)."""
    steps_to_target: float
    seconds_to_target: float
    best_steps_with_tuning: float
    best_seconds_with_tuning: float
    adam_unfinished: int = 0
    """Seeds on which untuned Adam diverged or failed (module docstring: never ``within``)."""

    def to_json(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def improved_later(adam: Entry, later: Sequence[Entry], classification: bool) -> bool:
    """Whether an entry with a larger budget (same workload and lr) beat ``adam``'s mean best-validation
    metric by more than the plateau margin (:data:`~.settle.SETTLE_ACC`, :data:`~.settle.SETTLE_LOSS`)."""
    return any(other.budget_epochs > adam.budget_epochs and gained(adam.best_val.mean, other.best_val.mean,
                                                                   classification) for other in later)


def judge(view: WorkloadView, adam: Entry, demo: bool = False) -> ClaimEntry:
    """The entry for untuned ``adam`` on ``view`` (see the module docstring); the other untuned entries
    of ``view`` with the same lr are the larger budgets :func:`improved_later` looks at."""
    best = view.best_tuned()
    gap = low = high = None
    n = 0
    within = lost_most = False
    if best is not None:
        if view.classification:
            interval = paired_difference(best.per_seed, adam.per_seed)
            scale = 100.0
            gap, low, high = (None if interval.mean is None else interval.mean * scale), interval.low * scale, \
                interval.high * scale
            limit = ACC_POINTS * 100
        else:
            interval = paired_difference(_logs(adam.per_seed), _logs(best.per_seed))
            gap, low, high = (None if interval.mean is None else math.exp(interval.mean)), math.exp(interval.low), \
                math.exp(interval.high)
            limit = LOSS_RATIO
        n = interval.n
        lost = sum(seed in best.per_seed for seed in adam.unfinished_seeds)
        lost_most = 2 * lost > len(best.per_seed)
        within = interval.mean is not None and high <= limit and not adam.unfinished
        behind = interval.mean is not None and low > limit
    else:
        behind = False
    same_lr = [e for e in view.untuned() if e.lr == adam.lr and e.optimizer == adam.optimizer]
    improving = adam.improving > 0 or improved_later(adam, same_lr, view.classification)
    if demo:
        verdict = UNDECIDED
    elif within:
        verdict = WITHIN
    elif lost_most or (behind and not improving):
        verdict = BEHIND
    else:
        verdict = UNDECIDED
    tuning = best.tuning_epochs if best is not None else 0.0
    return ClaimEntry(
        workload=view.name, lr=float(adam.lr or 0.0), budget_epochs=adam.budget_epochs, multiple=adam.multiple,
        classification=view.classification, best_optimizer=best.optimizer if best else None,
        best_lr=best.lr if best else None, adam_test=adam.test.mean, best_test=best.test.mean if best else None,
        gap=gap, gap_low=low, gap_high=high, paired_seeds=n, within_tolerance=within and not demo,
        still_improving=improving, verdict=verdict,
        compute_ratio=adam.budget_epochs / tuning if tuning > 0 else None,
        steps_to_target=adam.steps_to_target, seconds_to_target=adam.seconds_to_target,
        best_steps_with_tuning=best.with_tuning(False) if best else math.inf,
        best_seconds_with_tuning=best.with_tuning(True) if best else math.inf, adam_unfinished=adam.unfinished)


def _logs(values: dict[int, float]) -> dict[int, float | None]:
    return {seed: (math.log(v) if v > 0 else None) for seed, v in values.items()}


def overall(entries: Sequence[ClaimEntry]) -> str:
    """``holds`` / ``mostly holds`` / ``does not hold`` / ``undecided`` from one entry per workload."""
    m = len(entries)
    within = sum(e.verdict == WITHIN for e in entries)
    behind = sum(e.verdict == BEHIND for e in entries)
    if m and within == m:
        return "holds"
    if within > m / 2:
        return "mostly holds"
    if m and behind >= m / 2:
        return "does not hold"
    return "undecided"


def equal_budget(entries: Sequence[ClaimEntry], lr: float = HEADLINE_LR) -> list[ClaimEntry]:
    """Per workload, the entry at ``lr`` with the workload's own budget (multiple 1)."""
    return [e for e in entries if e.lr == lr and e.multiple == 1]


def equal_compute(entries: Sequence[ClaimEntry], lr: float = HEADLINE_LR) -> list[ClaimEntry]:
    """Per workload, the entry at ``lr`` with the largest budget whose compute ratio is at most 1; a workload
    with none (no tuned best, so no tuning compute to compare with) keeps its x1 entry, so every workload
    is counted."""
    by_workload: dict[str, list[ClaimEntry]] = {}
    for e in entries:
        if e.lr == lr:
            by_workload.setdefault(e.workload, []).append(e)
    out = []
    for group in by_workload.values():
        fitting = [e for e in group if e.compute_ratio is not None and e.compute_ratio <= 1]
        pool = fitting or [e for e in group if e.multiple == 1]
        if pool:
            out.append(max(pool, key=lambda e: e.multiple))
    return out


def _counts(entries: Sequence[ClaimEntry]) -> dict[str, Any]:
    return {"workloads": len(entries), **{v: sum(e.verdict == v for e in entries) for v in VERDICTS},
            "verdict": overall(entries), "budgets": {e.workload: e.budget_epochs for e in entries}}


def tolerance_json() -> dict[str, Any]:
    return {"classification": {"unit": "points of test accuracy", "max_gap": ACC_POINTS * 100},
            "regression": {"unit": "ratio of test loss (geometric mean over seeds)", "max_gap": LOSS_RATIO},
            "confidence": CONFIDENCE,
            "rule": "paired by seed; within: the upper end of the t interval of the gap <= max_gap and Adam "
                    "finished every seed; behind: Adam diverged or failed on more than half of the seeds the tuned "
                    "best finished, or the interval's lower end > max_gap and Adam not still improving; otherwise "
                    "undecided",
            "still_improving": {"last_quarter": "best validation of the last quarter of the budget beats the "
                                                "best before it by more than the margin",
                                "accuracy_margin": SETTLE_ACC, "loss_margin_relative": SETTLE_LOSS}}


@dataclass(frozen=True)
class Claim:
    """Everything ``claim.json`` holds."""

    demo: bool
    entries: tuple[ClaimEntry, ...]
    budgets: tuple[dict[str, Any], ...]

    @property
    def verdict(self) -> str | None:
        return None if self.demo else overall(equal_compute(self.entries))

    def headline(self) -> str:
        """The study's finding in one or two sentences, drawn from the entries (the README's sentence)."""
        if self.demo:
            return ("A demo (--quick: 2-5 epochs, 2 seeds): it states no verdict on the claim; run the full study "
                    "(`descentlab study`) for one.")
        eb, ec = equal_budget(self.entries), equal_compute(self.entries)
        budgets = ", ".join(f"{b['workload']} {b['epochs']}" for b in self.budgets)
        open_ = [str(b["workload"]) for b in self.budgets if not b.get("settled", True)]
        why = "no tuned best, or one still improving at the last budget tried"
        if not open_:
            where = f"At budgets where the tuned best optimizer had settled ({budgets} epochs)"
        elif len(open_) == len(self.budgets):
            where = f"At the study's budgets ({budgets} epochs; on none had the tuned best settled: {why})"
        else:
            where = (f"At the study's budgets ({budgets} epochs; the tuned best had settled on all but "
                     f"{', '.join(open_)}: {why})")
        text = (f"{where}, untuned Adam at lr "
                f"{HEADLINE_LR:g} came within {ACC_POINTS * 100:g} point of accuracy ({LOSS_RATIO:g}x the loss), "
                f"judged on 95 % intervals over seeds, on {_count(eb, WITHIN)} of {len(eb)} workloads "
                f"(behind on {_count(eb, BEHIND)}, undecided on {_count(eb, UNDECIDED)}): at equal budget the claim "
                f"{_is(overall(eb))}.")
        if ec:
            used = ", ".join(f"x{m} on {sum(e.multiple == m for e in ec)}" for m in sorted({e.multiple for e in ec},
                                                                                           reverse=True))
            text += (f" Given the largest budget below what the tuned optimizers spent on tuning alone ({used}), it "
                     f"was within on {_count(ec, WITHIN)} of {len(ec)} (behind on {_count(ec, BEHIND)}, undecided on "
                     f"{_count(ec, UNDECIDED)}): at equal compute the claim {_is(overall(ec))}.")
        return text

    def to_json(self) -> dict[str, Any]:
        """``claim.json``; each entry says whether it is its (workload, lr)'s equal-compute entry (the verdict's
        basis, one per workload: what the guide counts)."""
        eb, ec = equal_budget(self.entries), equal_compute(self.entries)
        basis = {id(e) for lr in {e.lr for e in self.entries} for e in equal_compute(self.entries, lr)}
        by: dict[str, Any] = {}
        for e in self.entries:
            key = f"lr {e.lr:g} x{e.multiple}"
            by.setdefault(key, {"lr": e.lr, "multiple": e.multiple, **{v: 0 for v in VERDICTS}})[e.verdict] += 1
        return {"format": CLAIM_FORMAT, "claim": ARTICLE, "headline_lr": HEADLINE_LR, "demo": self.demo,
                "verdict": self.verdict, "verdict_basis": None if self.demo else "equal_compute",
                "overall": None if self.demo else {"equal_budget": _counts(eb), "equal_compute": _counts(ec)},
                "headline": self.headline(), "tolerance": tolerance_json(),
                "budget_rule": {"max_doublings": MAX_DOUBLINGS,
                                "rule": "the tuned best (the race's best arm: every confirmation seed finished, then "
                                        "the best mean best-validation metric) has settled at a budget when "
                                        "none of its runs was still improving there (plateau), or when its setting "
                                        "alone trained for twice the budget on the same seeds (extension) gained no "
                                        "more than the margin over those runs' own first half (mean over seeds of "
                                        "each run's best validation); when the extension gained, the race runs "
                                        "again at twice the budget"},
                "budgets": list(self.budgets), "by_lr_and_budget": list(by.values()),
                "entries": [{**e.to_json(), "equal_compute": id(e) in basis} for e in self.entries]}


def _is(verdict: str) -> str:
    """``holds`` → "holds", ``undecided`` → "is undecided" (a sentence's verb)."""
    return "is undecided" if verdict == "undecided" else verdict


def _count(entries: Sequence[ClaimEntry], verdict: str) -> int:
    return sum(e.verdict == verdict for e in entries)


def build(views: Sequence[WorkloadView], budgets: Sequence[dict[str, Any]], demo: bool) -> Claim:
    """The claim over the workloads' views; ``budgets``: per workload the budgets tried (see run.py)."""
    entries = tuple(judge(v, e, demo) for v in views for e in v.untuned())
    return Claim(demo, entries, tuple(budgets))


def write(path: Path, claim: Claim) -> Path:
    """``claim.json`` (atomically)."""
    atomic_write_json(path, claim.to_json())
    return path
