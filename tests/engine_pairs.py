"""One rule's optimizer on the default engine stepped beside one on the core (``eager``), bit for bit:
the check the red-team tests of the fused path's screens make (tests/test_redteam_session*.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import descentlab.optim as dl

VALUES = (1.0, 1.0, 10.0, 10.0)
"""An outside value, before each step: changed from 1 to 10 before the third."""


def step_while_a_value_changes(rule: Any, set_value: Callable[[float], None], values: Sequence[float] = VALUES) -> None:
    """Step an auto and an eager optimizer of ``rule`` side by side, ``set_value(v)`` before each step;
    assert bitwise-equal parameters after every step (set back to the first value at the end)."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(64, generator=gen)
    ours, core = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer, reference = rule.optimizer([ours], lr=0.1), rule.optimizer([core], lr=0.1)
    dl.set_engine(reference, "eager")
    try:
        for i, value in enumerate(values):
            set_value(value)
            grad = torch.randn(64, generator=gen)
            ours.grad, core.grad = grad.clone(), grad.clone()
            optimizer.step()
            reference.step()
            assert torch.equal(ours, core), (i, value, (ours - start)[0].item(), (core - start)[0].item(),
                                             dl.last_routes(optimizer)[0])
    finally:
        set_value(values[0])


def step_across(rule: Any, name: str, values: tuple[Any, ...], label: str = "", size: int = 8,
                **options: Any) -> Any:
    """Hyper-parameter ``name`` set to each of ``values`` in turn (the kernel traced at the first): auto and
    eager bitwise equal at every one. Returns the auto optimizer (its routes say why it stepped as it did)."""
    p, q = torch.nn.Parameter(torch.ones(size)), torch.nn.Parameter(torch.ones(size))
    ours, core = rule.optimizer([p], **options), rule.optimizer([q], **options)
    dl.set_engine(core, "eager")
    for value in values:
        for opt in (ours, core):
            opt.param_groups[0][name] = value
        p.grad, q.grad = torch.ones(size), torch.ones(size)
        ours.step()
        core.step()
        assert torch.equal(p, q), (label, value, p[0].item(), q[0].item(), dl.last_routes(ours)[0])
    return ours


def step_across_beta(rule: Any, label: str = "") -> None:
    """A rule with a ``beta`` hyper-parameter at 0.4 (the kernel traced there), then 0.6: auto and eager
    bitwise equal at both (session 9's type looks gave auto 0.74, eager 0.884)."""
    step_across(rule, "beta", (0.4, 0.6), label)
