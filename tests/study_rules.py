"""User optimizer rules (``module:attr``) for the study's red-team tests: one that diverges at every lr, one
that trains as plain SGD for a few steps and then diverges (as a run that blows up later in a longer budget)."""

from __future__ import annotations

from typing import Any

import torch


def _poison(optimizer: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.fill_(float("nan"))


class _Boom(torch.optim.SGD):
    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        _poison(self)
        return out


class _Late(torch.optim.SGD):
    """Plain SGD for ``LATE_STEPS`` steps, then NaN parameters."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, lr=lr)
        self.count = 0

    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        self.count += 1
        if self.count > LATE_STEPS:
            _poison(self)
        return out


LATE_STEPS = 8
"""lstsq has 200 training examples: 4 steps of batch 64 per epoch, so a 2-epoch run finishes and a 4-epoch one
diverges."""


def boom(params: Any, lr: float = 0.01) -> torch.optim.Optimizer:
    """Diverges at every lr (NaN parameters after the first step)."""
    return _Boom(params, lr=lr)


def late(params: Any, lr: float = 0.01) -> torch.optim.Optimizer:
    """Finishes a 2-epoch lstsq run, diverges in a 4-epoch one."""
    return _Late(params, lr=lr)


def _gaussian_nll(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood with a fixed σ = 0.5 (2·MSE + log 0.5): a regression loss that is
    negative once the fit is good, as any NLL of a continuous density can be."""
    return 2.0 * torch.nn.functional.mse_loss(prediction, target) + float(torch.log(torch.tensor(0.5)))


SCALES = torch.logspace(-1, 1, 8)


def nll_regression():
    """A linear regression task (y = x·w + noise) scored by a Gaussian NLL, whose validation loss goes
    below zero as it trains."""
    from descentlab.tasks import from_tensors

    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 1, generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 8, generator=g) * SCALES  # ill-conditioned: the small directions fit slowly
        return x, x @ w + 0.01 * torch.randn(n, 1, generator=g)

    (xt, yt), (xv, yv), (xs, ys) = split(400), split(200), split(200)
    return from_tensors(xt, yt, xv, yv, xs, ys, kind="regression", loss=_gaussian_nll, name="nll-regression",
                        model=lambda: torch.nn.Linear(8, 1))
