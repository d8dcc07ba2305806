"""Shared pieces of the drop-in tables: twin models, twin optimizers (descentlab in an engine mode,
torch.optim's default CPU path), the same batches, and the comparison each engine mode promises."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

import descentlab.optim as dl

MODES = ("eager", "flat", "compiled", "fused")
"""Every engine mode: ``eager``, ``flat`` and ``fused`` promise torch's bits, ``compiled`` torch's numbers within
rounding."""


class Net(torch.nn.Module):
    """A small MLP with a named head (for sub-module saves) and enough tensors for the flat path."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                        torch.nn.Tanh())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def twin_models(seed: int = 0, dtype: torch.dtype = torch.float32, make: Callable[[], torch.nn.Module] = Net
                ) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    ours = make().to(dtype)
    theirs = make().to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def batches(count: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=gen, dtype=torch.float64).to(dtype), torch.randint(0, 3, (8,), generator=gen))
            for _ in range(count)]


def twin_optimizers(cls: str, ours_params: Iterable[Any], theirs_params: Iterable[Any], mode: str,
                    **kwargs: Any) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    ours = getattr(dl, cls)(ours_params, **kwargs)
    dl.set_engine(ours, mode)
    return ours, getattr(torch.optim, cls)(theirs_params, **kwargs)


def loss_of(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x).float(), y)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    opt.zero_grad()
    loss_of(model, batch).backward()
    opt.step()


def assert_same(mode: str, ours: Any, theirs: Any, label: str = "", rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Bitwise for ``eager``/``flat``; within ``rtol``/``atol`` for ``compiled``. Recurses into dicts
    and lists (state dicts); numbers compare equal."""
    if isinstance(theirs, dict):
        assert sorted(ours, key=str) == sorted(theirs, key=str), f"{label}: keys differ"
        for key in theirs:
            assert_same(mode, ours[key], theirs[key], f"{label}[{key!r}]", rtol, atol)
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), f"{label}: lengths differ"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mode, a, b, f"{label}[{i}]", rtol, atol)
    elif isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype and ours.shape == theirs.shape, label
        if mode == "compiled" and theirs.is_floating_point():
            torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, msg=label)
        else:
            assert torch.equal(ours, theirs), f"{label}: max diff {(ours.double() - theirs.double()).abs().max()}"
    else:
        assert ours == theirs, f"{label}: {ours!r} != {theirs!r}"


def assert_same_params(mode: str, ours: torch.nn.Module, theirs: torch.nn.Module, **tol: float) -> None:
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert_same(mode, a.detach(), b.detach(), name, **tol)
