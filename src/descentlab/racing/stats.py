"""The race's statistics, in one place: confidence intervals over seeds and paired comparisons.

Seeds are paired: for a given seed every arm starts from the same initial weights and sees the same
data order (the model and the shuffle stream are seeded from the seed alone), so arm A and arm B are
compared by the per-seed differences ``d_s = x_A,s − x_B,s``, not by two independent means.

Intervals are Student-t intervals:

    mean ± t_{1−α/2, n−1} · s / √n,      s² = Σ (x_s − mean)² / (n − 1)

for an arm's mean over its n seeds (:func:`mean_interval`) and for the mean paired difference
(:func:`paired_difference`). With the 2-5 seeds a race has, a percentile bootstrap is too narrow
(with 3 seeds it has 10 distinct resamples, and its interval never leaves the range of the data);
the t interval is exact for normal noise and stays honest (wide) for few seeds. ``rliable``'s
stratified bootstrap pays off across many tasks × runs, which :mod:`descentlab.study` aggregates;
it uses these per-workload intervals. With one seed, or no spread at all, no interval can be given:
the interval is unbounded (``low = -inf``, ``high = inf``) when n < 2, and a point when every
difference is identical (a zero-width interval is the data's, not a claim of certainty beyond it).

Two arms *cannot be told apart* when the paired interval of their difference contains 0
(:func:`indistinguishable`): a tie is an answer. ``probability_of_improvement`` is rliable's
P(X > Y) over seed pairs, reported beside the interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval over ``n`` values (seeds)."""

    mean: float | None
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        """``mean [low, high]`` scaled (e.g. ``scale=100`` for accuracies in points); ``-`` with no values."""
        if self.mean is None:
            return "-"
        mean = f"{self.mean * scale:.{digits}f}{unit}"
        if not self.bounded:
            return f"{mean} (one seed: no interval)" if self.n == 1 else mean
        return f"{mean} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
    """``t_{1−α/2, n−1}``: the Student-t quantile of a two-sided interval over n values (n ≥ 2)."""
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))


def mean_interval(values: Sequence[float | None], confidence: float = CONFIDENCE,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """The t interval of the mean of the finite ``values`` (see the module docstring), clipped to ``bounds``
    (the values' own range: an accuracy's interval does not go past 100 %)."""
    data = _finite(values)
    n = len(data)
    if n == 0:
        return Interval(None, -math.inf, math.inf, 0, confidence)
    mean = statistics.fmean(data)
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, confidence)
    half = t_critical(n, confidence) * statistics.stdev(data) / math.sqrt(n)
    return Interval(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), n, confidence)


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> list[tuple[float, float]]:
    """The (a_s, b_s) pairs of the seeds s where both have a finite value, in seed order."""
    pairs = []
    for seed in sorted(set(a) & set(b)):
        x, y = a[seed], b[seed]
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            pairs.append((float(x), float(y)))
    return pairs


def paired_difference(a: Mapping[int, float | None], b: Mapping[int, float | None],
                      confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """The t interval of the mean of ``a_s − b_s`` over the seeds both have (keys are seeds), clipped to
    ``bounds``."""
    return mean_interval([x - y for x, y in paired(a, b)], confidence, bounds)


def indistinguishable(a: Mapping[int, float | None], b: Mapping[int, float | None],
                      confidence: float = CONFIDENCE) -> bool:
    """Whether the paired interval of ``a − b`` contains 0 (always so with fewer than 2 paired seeds)."""
    return paired_difference(a, b, confidence).contains(0.0)


def probability_of_improvement(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> float | None:
    """rliable's P(a > b): over every pair of a's and b's finite values, the share where a's is larger
    (ties count a half); None when either has no value."""
    xs, ys = _finite(list(a.values())), _finite(list(b.values()))
    if not xs or not ys:
        return None
    wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xs for y in ys)
    return wins / (len(xs) * len(ys))
