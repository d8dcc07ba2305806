"""descentlab.optim.X against torch.optim.X (the default CPU for-loop path), fed the same gradients.

Table: the engine modes promised bitwise (``eager``, ``flat``) x every :data:`optim_cases.CASES`
entry (all flags of all five classes, two param groups, lr halved by hand mid-run, tensor lr,
add_param_group, missing gradients) x 4 dtypes x 50 steps,
params compared after every step. Real dtypes (float32, float64, bfloat16) must be bitwise equal
(``torch.equal``). complex64 is compared within a tolerance: torch applies the L2 weight decay (and
SGD's whole update) in complex arithmetic before viewing the tensors as real pairs, while
descentlab views them as real first, which rounds differently by about one ulp (measured: every SGD
case and the Adagrad/RMSprop/Adam cases with weight_decay > 0 differ, by at most 2e-6 relative after
50 steps; the other complex cases are bitwise equal today).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descentlab.optim as dl
from descentlab.optim import engine
from optim_cases import (
    ALL_DTYPES,
    CASES,
    ENGINE_MODES,
    STEPS,
    Case,
    clone_params,
    dtype_id,
    iter_state_pairs,
    make_params,
    run_pair,
)

COMPLEX_RTOL, COMPLEX_ATOL = 1e-5, 1e-6  # observed: |diff| <= 2e-6 (|x| + 1e-6) over the table


def assert_same(dtype: torch.dtype, label: str, ours: Any, theirs: Any) -> None:
    if not isinstance(theirs, torch.Tensor):
        assert ours == theirs, label
        return
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, label
    if dtype.is_complex:
        torch.testing.assert_close(ours, theirs, rtol=COMPLEX_RTOL, atol=COMPLEX_ATOL, msg=label)
    else:
        assert torch.equal(ours, theirs), f"{label}: max diff {(ours.double() - theirs.double()).abs().max()}"


@pytest.fixture(autouse=True)
def pieces_of_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flat path takes tensors of any size here, cut in pieces of 3 elements: every parameter of the
    table is sliced, across its rows and its real/imaginary pairs."""
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "FLAT_PIECE_BYTES", 24)


@pytest.mark.parametrize("mode", ENGINE_MODES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_torch(case: Case, dtype: torch.dtype, mode: str) -> None:
    def check(t: int, ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(dtype, f"step {t} param {i}", a.detach(), b.detach())

    ours, theirs = run_pair(case, dtype, check, mode=mode)
    routes = dl.last_routes(ours)
    if mode == "fused" and any(r.path == "eager" for r in routes):  # a tensor lr: the core, said (docs/engine.md)
        assert all("not fused: hyper-parameter lr is a tensor" in r.reason for r in routes if r.path == "eager")
    else:
        assert {route.path for route in routes} == {mode}
    for label, a, b in iter_state_pairs(ours, theirs):
        assert_same(dtype, label, a, b)
    # the run moved the params: equal because both computed, not because nothing happened
    assert not torch.equal(ours.param_groups[0]["params"][1], make_params(dtype)[1])


def test_table_covers_every_flag() -> None:
    """Every constructor argument that affects the math is set away from its default somewhere."""
    for cls in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW"):
        rule = getattr(dl, cls).rule
        varied = set()
        for case in CASES:
            if case.cls == cls:
                varied |= {k for k, v in {**case.hypers, **case.group2}.items() if v != rule.defaults.get(k)}
        expected = set(rule.math_names) - set(rule.fixed) | {"maximize"}
        assert expected <= varied, f"{cls}: flags never varied: {sorted(expected - varied)}"
    assert STEPS >= 50


CLOSURE_CLASSES = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")


@pytest.mark.parametrize("cls", CLOSURE_CLASSES)
def test_step_closure_returns_loss(cls: str) -> None:
    """``step(closure)`` evaluates the closure with grad enabled, returns its loss, and steps on the
    gradients it computed — the same loss and params as torch.optim at every step."""
    target = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)
    ours_p = make_params(torch.float64, shapes=((3, 4),))
    theirs_p = clone_params(ours_p)
    ours = getattr(dl, cls)(ours_p, lr=0.05)
    theirs = getattr(torch.optim, cls)(theirs_p, lr=0.05, foreach=False)

    def closure_for(opt: torch.optim.Optimizer, p: torch.Tensor):
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = ((p - target) ** 2).sum()
            loss.backward()
            return loss
        return closure

    losses = []
    for _ in range(20):
        with torch.no_grad():  # the optimizer must enable grad for the closure itself
            a = ours.step(closure_for(ours, ours_p[0]))
        b = theirs.step(closure_for(theirs, theirs_p[0]))
        assert isinstance(a, torch.Tensor) and torch.equal(a, b)
        assert torch.equal(ours_p[0], theirs_p[0])
        losses.append(a.item())
    assert losses[-1] < losses[0]
    assert ours.step() is None


@pytest.mark.parametrize("enabled", [True, False])
def test_step_leaves_grad_mode_as_it_found_it_even_when_it_raises(enabled: bool) -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = dl.SGD([p], lr=0.1)
    with torch.set_grad_enabled(enabled):
        opt.step()
        assert torch.is_grad_enabled() is enabled
        p.grad = torch.ones(3).to_sparse()
        with pytest.raises(RuntimeError, match="sparse"):
            opt.step()
        assert torch.is_grad_enabled() is enabled
    assert torch.equal(p.detach(), torch.full((3,), 0.9))


def test_zero_grad_matches_torch() -> None:
    for set_to_none in (True, False):
        p = make_params(torch.float32, shapes=((3,),))[0]
        p.grad = torch.ones(3)
        dl.SGD([p], lr=0.1).zero_grad(set_to_none=set_to_none)
        if set_to_none:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, torch.zeros(3))


def test_param_without_grad_is_untouched_and_has_no_state() -> None:
    a, b = make_params(torch.float32, shapes=((3,), (2,)))
    before = b.detach().clone()
    opt = dl.Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, before) and b not in opt.state
    assert not torch.equal(a, make_params(torch.float32, shapes=((3,), (2,)))[0])


# -- random hyper-parameters within the valid ranges ------------------------------------------------
unit = st.floats(0.0, 0.999, allow_nan=False)
lr = st.floats(1e-4, 0.5, allow_nan=False)
small = st.floats(0.0, 0.3, allow_nan=False)
eps = st.floats(1e-10, 1e-3, allow_nan=False)

HYPER_STRATEGIES = {
    "SGD": st.fixed_dictionaries({"lr": lr, "momentum": unit, "dampening": unit, "weight_decay": small,
                                  "maximize": st.booleans()}),
    "Adagrad": st.fixed_dictionaries({"lr": lr, "lr_decay": small, "weight_decay": small,
                                      "initial_accumulator_value": small, "eps": eps, "maximize": st.booleans()}),
    "RMSprop": st.fixed_dictionaries({"lr": lr, "alpha": unit, "eps": eps, "weight_decay": small, "momentum": unit,
                                      "centered": st.booleans(), "maximize": st.booleans()}),
    "Adam": st.fixed_dictionaries({"lr": lr, "betas": st.tuples(unit, unit), "eps": eps, "weight_decay": small,
                                   "amsgrad": st.booleans(), "maximize": st.booleans()}),
}
HYPER_STRATEGIES["AdamW"] = HYPER_STRATEGIES["Adam"]


@pytest.mark.parametrize("cls", sorted(HYPER_STRATEGIES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_hypers_match_torch(cls: str, data: st.DataObject) -> None:
    """Any valid hyper-parameters: 8 steps bitwise equal to torch.optim in float32 and float64."""
    hypers = data.draw(HYPER_STRATEGIES[cls], label="hypers")
    if cls == "SGD" and hypers["dampening"] == 0 and hypers["momentum"] > 0:
        hypers["nesterov"] = data.draw(st.booleans(), label="nesterov")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    mode = data.draw(st.sampled_from(ENGINE_MODES), label="mode")
    ours_p = make_params(dtype, seed=3, shapes=((), (2, 3), (37,)))
    theirs_p = clone_params(ours_p)
    ours = getattr(dl, cls)(ours_p, **hypers)
    dl.set_engine(ours, mode)
    theirs = getattr(torch.optim, cls)(theirs_p, foreach=False, **hypers)
    gen = torch.Generator().manual_seed(4)
    for _ in range(8):
        for a, b in zip(ours_p, theirs_p, strict=True):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        for a, b in zip(ours_p, theirs_p, strict=True):  # bitwise; NaN where torch has NaN
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=str(hypers))
