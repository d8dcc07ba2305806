"""torch.optim.lr_scheduler drives descentlab exactly as it drives torch.optim.

Every class x {StepLR, CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau} x 100 steps on a noisy
least-squares objective (float32, two param groups): the params, the losses and every group's lr
(and OneCycleLR's momentum / betas) are bitwise equal to torch.optim's after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

import descentlab.optim as dl
from optim_cases import CLASSES, clone_params, make_params

STEPS = 100
HYPERS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.05, "momentum": 0.9},
    "Adagrad": {"lr": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.5},
    "Adam": {"lr": 0.05},
    "AdamW": {"lr": 0.05},
}

SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=15, gamma=0.5),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=1e-4),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(
        opt, max_lr=[0.1, 0.05], total_steps=STEPS,
        cycle_momentum="momentum" in opt.defaults or "betas" in opt.defaults),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.05),
}


def make(cls_module: Any, cls: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": HYPERS[cls]["lr"] / 2}]
    return getattr(cls_module, cls)(groups, **HYPERS[cls])


def schedule_trace(opt: torch.optim.Optimizer) -> list[Any]:
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups]


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("cls", CLASSES)
def test_scheduler_drives_both_identically(cls: str, scheduler: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a_mat = torch.randn(20, 7, generator=gen)
    target = torch.randn(20, generator=gen)
    ours_p = make_params(torch.float32, shapes=((4,), (3,)))
    theirs_p = clone_params(ours_p)
    ours, theirs = make(dl, cls, ours_p), make(torch.optim, cls, theirs_p)
    ours_s, theirs_s = SCHEDULERS[scheduler](ours), SCHEDULERS[scheduler](theirs)
    lrs = set()
    for _ in range(STEPS):
        noise = [torch.randn(p.shape, generator=gen) for p in ours_p]
        losses = []
        for opt, params in ((ours, ours_p), (theirs, theirs_p)):
            opt.zero_grad()
            loss = ((a_mat @ torch.cat(params) - target) ** 2).mean()
            loss.backward()
            for p, n in zip(params, noise, strict=True):
                p.grad.add_(n)
            opt.step()
            losses.append(loss.detach())
        assert torch.equal(losses[0], losses[1])
        if scheduler == "ReduceLROnPlateau":
            ours_s.step(losses[0].item())
            theirs_s.step(losses[1].item())
        else:
            ours_s.step()
            theirs_s.step()
        assert schedule_trace(ours) == schedule_trace(theirs)
        for a, b in zip(ours_p, theirs_p, strict=True):
            assert torch.equal(a, b)
        lrs.add(ours.param_groups[0]["lr"])
    assert len(lrs) > 2, f"{scheduler} never changed the lr: {lrs}"
    assert ours_s.state_dict() == theirs_s.state_dict()
