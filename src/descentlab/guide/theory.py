"""Closed-form facts the guide draws, and the article's misquoted Adam (for its on/off figure). NumPy only.

Gradient descent on a quadratic ½·Σ λᵢ·uᵢ² (uᵢ the coordinates along the Hessian's eigenvectors) moves
each uᵢ by the factor (1 − α·λᵢ) per step: it converges iff |1 − α·λᵢ| < 1 for every i, i.e. α < 2/L with
L = max λᵢ, the stability limit the guide's first figure crosses.

Momentum in torch's form, v ← ρ·v + g, w ← w − α·v, is the heavy ball w_{k+1} = w_k − α·g_k + ρ·(w_k − w_{k−1})
(substitute α·v_k = w_{k−1} − w_k). Along an eigenvector with eigenvalue λ the error obeys
u_{k+1} = (1 + ρ − α·λ)·u_k − ρ·u_{k−1}, whose characteristic polynomial is z² − (1 + ρ − α·λ)·z + ρ; the
error shrinks like r(λ)ᵏ with r(λ) the largest |root|. Over the whole quadratic the rate is max over its
eigenvalues (Polyak 1964; Goh, "Why Momentum Really Works", Distill 2017). Below 1 it converges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Array = np.ndarray


def gd_factors(lr: float, eigenvalues: Sequence[float]) -> list[float]:
    """|1 − α·λ| per eigenvalue: GD's per-step contraction along each eigenvector (> 1: divergence)."""
    return [abs(1.0 - lr * lam) for lam in eigenvalues]


def gd_limit(eigenvalues: Sequence[float]) -> float:
    """2/L, L the largest eigenvalue: GD on the quadratic converges iff lr < 2/L."""
    return 2.0 / max(eigenvalues)


def momentum_root_radius(lr: float, rho: float, lam: float) -> float:
    """max |z| over the roots of z² − (1 + ρ − α·λ)·z + ρ (closed form of the quadratic's roots).

    Real roots (discriminant b² − 4ρ ≥ 0, b = 1 + ρ − αλ): (|b| + √(b² − 4ρ))/2; complex ones: both of modulus √ρ.
    """
    b = 1.0 + rho - lr * lam
    disc = b * b - 4.0 * rho
    if disc >= 0:
        return (abs(b) + np.sqrt(disc)) / 2.0
    return float(np.sqrt(rho))


def momentum_rate(lr: float, rho: float, eigenvalues: Sequence[float]) -> float:
    """The heavy ball's convergence rate on the quadratic: max over its eigenvalues of the root radius."""
    return max(momentum_root_radius(lr, rho, lam) for lam in eigenvalues)


def momentum_rate_by_roots(lr: float, rho: float, eigenvalues: Sequence[float]) -> float:
    """The same rate from ``numpy.roots`` of the characteristic polynomial (an independent computation)."""
    return max(float(np.max(np.abs(np.roots([1.0, -(1.0 + rho - lr * lam), rho])))) for lam in eigenvalues)


def rate_map(lrs: Sequence[float], rhos: Sequence[float], eigenvalues: Sequence[float]) -> Array:
    """rate[i, j] = :func:`momentum_rate` at (lr = lrs[j], ρ = rhos[i]): rows ρ, columns lr."""
    return np.array([[momentum_rate(lr, rho, eigenvalues) for lr in lrs] for rho in rhos], dtype=np.float64)


def adam_without_bias_correction(w: Array, g: Array, state: dict, *, lr: float, beta1: float = 0.9,
                                 beta2: float = 0.999, eps: float = 1e-8) -> tuple[Array, dict]:
    """The article's Adam — *wrong*, shown beside the right one: no bias correction.

    m ← β1·m + (1 − β1)·g; s ← β2·s + (1 − β2)·g²; w ← w − α·m/(√s + ε). At t = 1 the step is
    α·(1 − β1)/√(1 − β2)·sign(g) ≈ 3.16·α for torch's betas: (1 − β1) = 0.1 shrinks m ten times, but s
    starts √(1 − β2) ≈ 0.032 times too small, so the ratio is too large until s has warmed up (~1/(1 − β2) steps).
    """
    zeros = np.zeros_like(w)
    m = beta1 * state.get("exp_avg", zeros) + (1 - beta1) * g
    s = beta2 * state.get("exp_avg_sq", zeros) + (1 - beta2) * g * g
    return w - lr * m / (np.sqrt(s) + eps), {"t": state.get("t", 0) + 1, "exp_avg": m, "exp_avg_sq": s}
