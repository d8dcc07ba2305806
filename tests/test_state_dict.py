"""state_dict compatibility with torch.optim.

* Round trips mid-run — torch -> descentlab -> torch and descentlab -> torch -> descentlab — continue
  bitwise identically to a run that never switched (every case of the conformance table, float32
  and bfloat16, 36 steps with switches after steps 12 and 24, lr changed by hand before the first).
* ``state_dict()`` has torch's layout: the same state keys, shapes and dtypes, the same param-group
  keys and values.
* A mismatched state (another optimizer's, wrong shapes, a missing buffer, another group count or
  group size) fails in ``load_state_dict`` with a message that says what is wrong.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import descentlab.optim as dl
from optim_cases import CASES, Case, build, clone_params, dtype_id, grad_is_set, make_grad, make_params, run_pair

STEPS, SWITCH = 36, (12, 24)


def grad_schedule(dtype: torch.dtype, steps: int = STEPS) -> list[list[torch.Tensor | None]]:
    gen = torch.Generator().manual_seed(7)
    like = make_params(dtype)
    return [[make_grad(gen, p) if grad_is_set(i, t) else None for i, p in enumerate(like)] for t in range(steps)]


def run_switching(case: Case, dtype: torch.dtype, impls: tuple[str, ...]) -> tuple[list[torch.Tensor], Any]:
    """Train ``STEPS`` steps, handing the optimizer state to the next implementation in ``impls`` at
    each ``SWITCH`` step through ``state_dict()`` / ``load_state_dict()`` (deep-copied, as a checkpoint
    would be). Returns the params and the last optimizer."""
    params = make_params(dtype)
    grads = grad_schedule(dtype)
    opt = build(case, params, impls[0])
    for t in range(STEPS):
        if t in SWITCH:
            saved = copy.deepcopy(opt.state_dict())
            opt = build(case, params, impls[1 + SWITCH.index(t)])
            opt.load_state_dict(saved)
        if t == 5:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.5
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads[t], strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("impls", [("torch", "descentlab", "torch"), ("descentlab", "torch", "descentlab")],
                         ids=["torch-dl-torch", "dl-torch-dl"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_round_trip_continues_identically(case: Case, impls: tuple[str, ...], dtype: torch.dtype) -> None:
    expected, never_switched = run_switching(case, dtype, (impls[0],) * 3)
    got, switched = run_switching(case, dtype, impls)
    assert type(switched).__module__.startswith(impls[2])
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(a, b), f"param {i} differs after switching {impls}"
    assert_state_dicts_equal(switched.state_dict(), never_switched.state_dict())


def assert_state_dicts_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index, state in theirs["state"].items():
        assert sorted(ours["state"][index]) == sorted(state), f"state keys of param {index}"
        for key, value in state.items():
            mine = ours["state"][index][key]
            assert mine.shape == value.shape and mine.dtype == value.dtype, f"param {index} {key}"
            assert torch.equal(mine, value), f"param {index} {key}"
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for g_ours, g_theirs in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        assert sorted(g_ours) == sorted(g_theirs)
        for key, value in g_theirs.items():
            if isinstance(value, torch.Tensor):
                assert isinstance(g_ours[key], torch.Tensor) and torch.equal(g_ours[key], value), key
            else:
                assert g_ours[key] == value, key


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_layout_matches_torch(case: Case) -> None:
    """After the conformance run (incl. add_param_group): same keys, shapes, dtypes and values."""
    ours, theirs = run_pair(case, torch.float32, lambda *_: None, steps=25)
    assert_state_dicts_equal(ours.state_dict(), theirs.state_dict())
    for state in theirs.state_dict()["state"].values():
        if "step" in state:
            assert state["step"].dim() == 0 and state["step"].dtype == torch.float32


# -- mismatched states --------------------------------------------------------------------------------
def trained(cls: type[torch.optim.Optimizer], shapes: tuple[tuple[int, ...], ...] = ((3,), (2, 2)),
            groups: int = 1, **hypers: Any) -> torch.optim.Optimizer:
    params = make_params(torch.float32, shapes=shapes)
    if groups == 2:
        opt = cls([{"params": params[:1]}, {"params": params[1:]}], **hypers)
    else:
        opt = cls(params, **hypers)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


def fresh(cls: type[torch.optim.Optimizer], shapes: tuple[tuple[int, ...], ...] = ((3,), (2, 2)),
          groups: int = 1, **hypers: Any) -> torch.optim.Optimizer:
    params = make_params(torch.float32, shapes=shapes)
    if groups == 2:
        return cls([{"params": params[:1]}, {"params": params[1:]}], **hypers)
    return cls(params, **hypers)


MISMATCHES = [
    pytest.param(lambda: trained(torch.optim.Adam).state_dict(), lambda: fresh(dl.SGD, momentum=0.9),
                 r"SGD\.load_state_dict: state of param 0 in group 0 has keys \['exp_avg', 'exp_avg_sq', 'step'\]"
                 r".*another optimizer", id="adam-state-into-sgd"),
    pytest.param(lambda: trained(torch.optim.RMSprop, centered=True).state_dict(), lambda: fresh(dl.Adam),
                 r"Adam\.load_state_dict: .*'square_avg'.*another optimizer", id="rmsprop-state-into-adam"),
    pytest.param(lambda: trained(dl.Adagrad).state_dict(), lambda: fresh(dl.RMSprop),
                 r"RMSprop\.load_state_dict: .*\['sum'\] that RMSprop does not use", id="adagrad-into-rmsprop"),
    pytest.param(lambda: trained(torch.optim.Adam, shapes=((3,), (4,))).state_dict(),
                 lambda: fresh(dl.Adam, shapes=((3,), (5,))),
                 r"state of param 1 in group 0: 'exp_avg' has shape \(4,\) but the parameter has shape \(5,\)",
                 id="wrong-shape"),
    pytest.param(lambda: trained(torch.optim.Adam).state_dict(), lambda: fresh(dl.Adam, groups=2),
                 r"different number of parameter groups", id="group-count"),
    pytest.param(lambda: trained(torch.optim.Adam, shapes=((3,), (2,), (4,)), groups=2).state_dict(),
                 lambda: fresh(dl.Adam, groups=2), r"doesn't match the size of optimizer's group", id="group-size"),
]


@pytest.mark.parametrize(("make_state", "make_target", "message"), MISMATCHES)
def test_mismatched_state_is_refused(make_state, make_target, message: str) -> None:
    state = make_state()
    with pytest.raises(ValueError, match=message):
        make_target().load_state_dict(state)


def test_missing_buffer_is_refused() -> None:
    """A group that needs a buffer (RMSprop momentum > 0) but a saved state without it."""
    state = trained(torch.optim.RMSprop).state_dict()
    for group in state["param_groups"]:
        group["momentum"] = 0.9
    with pytest.raises(ValueError, match=r"RMSprop\.load_state_dict: state of param 0 in group 0 lacks "
                                         r"'momentum_buffer'"):
        fresh(dl.RMSprop).load_state_dict(state)
    state = trained(torch.optim.Adam).state_dict()
    del state["state"][1]["step"]
    with pytest.raises(ValueError, match=r"state of param 1 in group 0 lacks 'step'"):
        fresh(dl.Adam).load_state_dict(state)


def test_state_dict_matches_before_any_step() -> None:
    """Adagrad creates its state at construction, like torch; the others lazily at the first step."""
    for cls in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW"):
        params = make_params(torch.float32, shapes=((3,),))
        ours = getattr(dl, cls)(params, lr=0.1).state_dict()
        theirs = getattr(torch.optim, cls)(clone_params(params), lr=0.1).state_dict()
        assert_state_dicts_equal(ours, theirs)
