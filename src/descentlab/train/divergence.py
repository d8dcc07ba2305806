"""Divergence: when a run is declared lost instead of crashing or wasting its budget.

A training step's loss ``ℓ_t`` (the minibatch loss before the update of step t) diverges when it is
not finite, or when ``ℓ_t > factor · ℓ_1`` — a multiple (default :data:`DEFAULT_FACTOR` = 100) of
the first step's loss. A non-finite gradient makes the next weights, hence the next loss,
non-finite, so it is caught one step later (and at once at evaluation steps, where the gradient
norm is computed). ``factor=None`` keeps only the finiteness test; so does ``ℓ_1 = 0``.
"""

from __future__ import annotations

import math

DEFAULT_FACTOR = 100.0


def check_factor(factor: float | None) -> float | None:
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1 or math.isinf(factor):
        raise ValueError(f"divergence_factor must be a finite number > 1 or None, got {factor!r}")
    return float(factor)


def threshold(initial_loss: float, factor: float | None) -> float:
    """The loss above which a run has diverged, given its first step's loss."""
    if factor is None or not initial_loss > 0 or not math.isfinite(initial_loss):
        return math.inf
    return factor * initial_loss


def reason(loss: float, limit: float) -> str | None:
    """Why ``loss`` means divergence, or None when it does not."""
    if not math.isfinite(loss):
        return f"non-finite training loss ({loss})"
    if loss > limit:
        return f"training loss {loss:.4g} above the divergence threshold {limit:.4g}"
    return None
