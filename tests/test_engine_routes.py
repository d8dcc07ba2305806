"""The dispatcher (optim/engine.py) and the flat pieces (optim/_pieces.py): which path a group takes and
why, and pieces cut every way (sliced, concatenated, non-contiguous, mixed step counts) giving torch's bits."""

from __future__ import annotations

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import engine


def _twins(shapes: list[tuple[int, ...]], seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ours = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    return ours, [p.detach().clone().requires_grad_() for p in ours]


def _step_both(ours: list[torch.Tensor], theirs: list[torch.Tensor], a: torch.optim.Optimizer,
               b: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
            if (i + t) % 5 == 4:  # some gradients missing: step counts drift apart
                p.grad = q.grad = None
                continue
            g = torch.randn(p.shape, generator=gen).to(p.dtype)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()


@pytest.mark.parametrize("concatenate", [False, True], ids=["slices", "slices+concatenations"])
@pytest.mark.parametrize("piece_bytes", [16, 100, 4096])
def test_pieces_cut_every_way_give_torch_bits(piece_bytes: int, concatenate: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny pieces slice every tensor (the flat path's own cut); with every member accepted (the
    compiled path's cut), runs of small ones are concatenated across their boundaries and a transposed
    (non-contiguous) parameter is gathered and scattered whole."""
    monkeypatch.setattr(engine, "FLAT_PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)
    if concatenate:
        monkeypatch.setattr(engine, "_big_and_sliceable", lambda member: True)
    shapes = [(), (3,), (7, 5), (40,), (1,), (9, 9), (2, 3, 4)]
    ours, theirs = _twins(shapes)
    ours.append(torch.randn(6, 4).t().requires_grad_())
    theirs.append(ours[-1].detach().clone().requires_grad_())
    assert not ours[-1].is_contiguous()
    a, b = dl.Adam(ours, lr=1e-2, amsgrad=True), torch.optim.Adam(theirs, lr=1e-2, amsgrad=True)
    dl.set_engine(a, "flat")
    _step_both(ours, theirs, a, b, steps=12)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    assert dl.last_routes(a)[0].path == "flat"
    counts = {float(a.state[p]["step"]) for p in ours}
    assert len(counts) > 1, "the table should mix step counts"


def test_lazy_buffers_and_half_precision_go_to_the_core_inside_a_flat_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)
    ours, theirs = _twins([(4,), (5,)])
    half = torch.randn(3).bfloat16().requires_grad_()
    ours.append(half)
    theirs.append(half.detach().clone().requires_grad_())
    a, b = dl.SGD(ours, lr=0.1, momentum=0.9), torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    dl.set_engine(a, "flat")
    _step_both(ours, theirs, a, b, steps=1)
    assert "3 parameter(s) on the core" in dl.last_routes(a)[0].reason  # momentum buffers not made yet
    _step_both(ours, theirs, a, b, steps=6, seed=2)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("options", "reason"), [
    ({"foreach": False}, "per-tensor"), ({"fused": False}, "per-tensor"), ({"differentiable": True}, "per-tensor")])
def test_torch_switches_that_ask_for_the_per_tensor_path_get_the_core(options: dict, reason: str) -> None:
    p = torch.zeros(3, requires_grad=True)
    if options.get("differentiable"):  # as torch: a differentiable step writes into a non-leaf parameter
        p = p.clone()
    opt = dl.Adam([p], lr=0.1, **options)
    dl.set_engine(opt, "compiled")
    p.grad = torch.ones(3)
    opt.step()
    route = dl.last_routes(opt)[0]
    assert route.path == "eager" and reason in route.reason


def test_a_rule_that_is_not_elementwise_gets_the_core() -> None:
    with pytest.warns(UserWarning, match="not elementwise"):
        @dl.define_rule(name="NormalisedStep", hypers={"lr": 0.1}, elementwise=False)
        def normalised(param, grad, state, *, step, lr):
            return param - lr * grad / grad.norm(), {}

    p = torch.ones(4, requires_grad=True)
    opt = normalised.optimizer([p])
    dl.set_engine(opt, "flat")
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    opt.step()
    assert dl.last_routes(opt)[0].path == "eager"
    assert torch.allclose(p.detach(), torch.tensor([0.94, 0.92, 1.0, 1.0]))


def test_auto_takes_flat_for_a_group_holding_a_big_tensor_and_steps_only_big_ones_there() -> None:
    small = [torch.zeros(10, requires_grad=True) for _ in range(40)]
    mixed = [torch.zeros(engine.FLAT_MIN_BYTES // 4, requires_grad=True), torch.zeros(10, requires_grad=True)]
    routes = []
    for params in (small, mixed):
        opt = dl.SGD(params, lr=0.1)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        routes.append(dl.last_routes(opt)[0])
    assert [r.path for r in routes] == ["eager", "flat"]
    assert routes[1].reason.endswith("1 parameter(s) on the core")


def test_the_engine_mode_comes_from_the_environment_and_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    p = torch.zeros(2, requires_grad=True)
    monkeypatch.setenv(engine.ENV_VAR, "flat")
    assert dl.engine_mode(dl.SGD([p], lr=0.1)) == "flat"
    monkeypatch.setenv(engine.ENV_VAR, "turbo")
    with pytest.raises(ValueError, match=r"DESCENTLAB_ENGINE must be one of .*'turbo'"):
        dl.SGD([p], lr=0.1)
    monkeypatch.delenv(engine.ENV_VAR)
    with pytest.raises(ValueError, match="engine mode must be one of"):
        dl.set_engine(dl.SGD([p], lr=0.1), "turbo")
