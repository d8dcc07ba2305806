"""Behaviour predicted by theory, checked on problems built in the test.

Least squares, f(w) = ‖Aw − b‖² / (2n): the Hessian is H = AᵀA / n with eigenvalues
μ = λ_min ≤ … ≤ λ_max = L. Full-batch GD, w ← w − γ∇f(w), moves the error e = w − w* by
e ← (I − γH)e, so ‖e_{t+k}‖ ≤ ρᵏ‖e_t‖ with ρ = max(|1 − γμ|, |1 − γL|) (H is symmetric), with
equality in the limit along the slowest direction. Hence GD converges iff γ < 2/L; for γ > 2/L
the top eigen-direction grows by |1 − γL| > 1 per step.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import descentlab.optim as dl

N, D = 100, 8


def least_squares() -> tuple[torch.Tensor, torch.Tensor, float, float, torch.Tensor]:
    """A, b, μ, L (exact eigenvalues of AᵀA/n), and the minimiser w*."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, D)) * np.linspace(0.5, 2.0, D)  # columns of different scales: κ ≈ 20
    b = rng.normal(size=N)
    eig = np.linalg.eigvalsh(a.T @ a / N)
    w_star = np.linalg.lstsq(a, b, rcond=None)[0]
    return torch.from_numpy(a), torch.from_numpy(b), float(eig[0]), float(eig[-1]), torch.from_numpy(w_star)


def run_gd(factor: float, steps: int) -> tuple[list[float], float, float]:
    """GD with γ = factor / L via descentlab's "gd" (SGD fed the full batch every step).
    Returns ‖w_t − w*‖ for t = 0..steps, and μ, L."""
    a, b, mu, big_l, w_star = least_squares()
    w = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    opt = dl.create("gd", [w], lr=factor / big_l)
    errors = [float((w.detach() - w_star).norm())]
    for _ in range(steps):
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).sum() / (2 * N)
        loss.backward()
        opt.step()
        errors.append(float((w.detach() - w_star).norm()))
    return errors, mu, big_l


def observed_rate(errors: list[float], start: int, stop: int) -> float:
    return (errors[stop] / errors[start]) ** (1 / (stop - start))


def test_problem_is_what_we_think() -> None:
    a, _, mu, big_l, _ = least_squares()
    h = (a.T @ a / N).numpy()
    assert np.isclose(np.abs(np.linalg.eigvals(h)).max(), big_l, rtol=1e-12)
    assert big_l / mu > 5  # ill-conditioned enough for the two regimes to differ


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.9], ids=lambda f: f"lr={f}/L")
def test_gd_converges_below_two_over_l(factor: float) -> None:
    errors, mu, big_l = run_gd(factor, steps=1000)
    rho = max(abs(1 - factor * mu / big_l), abs(1 - factor))
    assert rho < 1
    rate = observed_rate(errors, 20, 120)
    assert rate <= rho + 1e-9, "contraction faster than the spectral bound allows"
    assert rate > rho - 0.05, f"rate {rate} far from the predicted {rho}"
    assert all(e1 <= rho * e0 * (1 + 1e-9) + 1e-13 for e0, e1 in itertools.pairwise(errors))  # each step contracts
    assert errors[-1] < 1e-9 * errors[0]


@pytest.mark.parametrize("factor", [2.1, 2.5], ids=lambda f: f"lr={f}/L")
def test_gd_diverges_above_two_over_l(factor: float) -> None:
    errors, _, _ = run_gd(factor, steps=300)
    growth = factor - 1  # |1 − γL| along the top eigen-direction
    assert growth > 1
    rate = observed_rate(errors, 200, 300)
    assert growth - 0.01 < rate <= growth + 1e-9
    assert errors[-1] > 1e10 * errors[0]


# -- Rosenbrock -------------------------------------------------------------------------------------
def rosenbrock_grad(w: torch.Tensor) -> torch.Tensor:
    """∇f for f(x, y) = (1 − x)² + 100 (y − x²)², minimum f(1, 1) = 0."""
    x, y = w[0], w[1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def rosenbrock_run(name: str, steps: int, **hypers: float) -> float:
    """Distance ‖w − (1, 1)‖∞ after ``steps`` steps from the classic start (−1.2, 1) in float64."""
    w = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    opt = dl.create(name, [w], **hypers)
    for _ in range(steps):
        w.grad = rosenbrock_grad(w.detach())
        opt.step()
    return float((w.detach() - 1).abs().max())


def test_momentum_reaches_rosenbrock_minimum() -> None:
    """SGD with heavy-ball momentum ("momentum": ρ = 0.9), lr = 2e-3, 2000 steps from (−1.2, 1),
    float64: within 1e-6 of (1, 1) (measured ~4e-8). Plain GD with the same lr and steps is still
    more than 0.05 away: the valley floor is flat, momentum accumulates speed along it."""
    assert rosenbrock_run("momentum", 2000, lr=2e-3) < 1e-6
    assert rosenbrock_run("gd", 2000, lr=2e-3) > 0.05


def test_adam_reaches_rosenbrock_minimum() -> None:
    """Adam, lr = 0.05, betas (0.9, 0.999), eps 1e-8, 2500 steps from (−1.2, 1), float64: within 1e-4
    of (1, 1) (measured ~1e-6)."""
    assert rosenbrock_run("adam", 2500, lr=0.05) < 1e-4
