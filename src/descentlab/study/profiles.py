"""Performance profiles over workloads (Dolan & Moré 2002; AlgoPerf's scoring, Dahl et al. 2023).

For entry s (an optimizer) and workload w, t_{s,w} is its time to the workload's target (steps or
seconds, see :mod:`.analysis`), infinite when it did not get there. r_{s,w} = t_{s,w} / min_s t_{s,w}
is its ratio to the fastest entry on w. The profile ρ_s(τ) = |{w : r_{s,w} ≤ τ}| / |W| is the share of
workloads on which s was within a factor τ of the fastest; ρ_s(1) is the share it won.

Score: AlgoPerf's normalised area under the profile, B_s = 1/(τ_max − 1) · ∫_1^{τ_max} ρ_s(τ) dτ with
τ_max = 4, computed exactly: ρ_s is a step function, so B_s = (1/|W|) Σ_w max(0, τ_max − max(1, r_{s,w}))
/ (τ_max − 1). B = 1: fastest everywhere; B = 0: never within 4x of the fastest. We use it because it
is one number that counts both how often an optimizer wins and how far behind it is when it does not,
ignores what happens beyond 4x (where "it got there eventually" says little), and is the score the
benchmark practitioners know uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TAU_MAX = 4.0


def ratios(times: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``times[entry][workload]`` -> ``r[entry][workload]`` (inf when not reached or nobody reached)."""
    workloads = sorted({w for per in times.values() for w in per})
    best = {w: min((per.get(w, math.inf) for per in times.values()), default=math.inf) for w in workloads}
    out: dict[str, dict[str, float]] = {}
    for name, per in times.items():
        out[name] = {}
        for w in workloads:
            t = per.get(w, math.inf)
            if not math.isfinite(t) or not math.isfinite(best[w]):
                out[name][w] = math.inf
            elif best[w] <= 0:
                out[name][w] = 1.0 if t <= 0 else math.inf
            else:
                out[name][w] = t / best[w]
    return out


def profile(ratio: Mapping[str, float], taus: Sequence[float]) -> list[float]:
    """ρ(τ) for each τ of ``taus``."""
    n = len(ratio)
    return [sum(r <= tau for r in ratio.values()) / n if n else 0.0 for tau in taus]


def score(ratio: Mapping[str, float], tau_max: float = TAU_MAX) -> float:
    """AlgoPerf's normalised area under ρ on [1, tau_max] (see the module docstring)."""
    if not ratio:
        return 0.0
    area = sum(max(0.0, tau_max - max(1.0, r)) for r in ratio.values() if math.isfinite(r))
    return area / ((tau_max - 1) * len(ratio))
