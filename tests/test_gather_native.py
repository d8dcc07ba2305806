"""The native table reader (optim/_gather_native.py) against the Python reading it replaces on the usual
group: the same table (every address and count, in the same order, the same parameters) where it takes a
group, and "not taken" (the Python reading decides) wherever one parameter is anything else."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import descentlab.optim as dl
from descentlab.optim import _fused, _gather_native
from descentlab.optim.rule import buffer_names

ODDITIES = ("none", "no_grad", "plain_tensor", "subclass", "strided_grad", "float64", "strided_buffer",
            "buffer_dtype", "missing_buffer", "int_step", "step_1d", "float_step", "state_not_dict",
            "grad_subclass", "buffer_shape")
"""What one parameter of a group can be made (``none``: the usual parameter)."""


class Marked(torch.nn.Parameter):
    """A Parameter subclass (a user's tagged parameter): the kernel does not take it."""


def _reader() -> Any:
    reader = _gather_native.reader()
    assert reader is not None, "the native reader did not build on this machine"
    return reader


def _group(oddities: list[str], amsgrad: bool, seed: int) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """An Adam that has stepped once on parameters of assorted shapes, then one parameter made odd per entry."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3,), (2, 5), (4, 1, 3), (7,), (1,), (6, 2)]
    params = [torch.nn.Parameter(torch.randn(shapes[i % len(shapes)], generator=gen)) for i in range(len(oddities))]
    opt = dl.Adam(params, lr=1e-2, amsgrad=amsgrad)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    for index, oddity in enumerate(oddities):
        _make_odd(opt, params, index, oddity)
    return opt, opt.param_groups[0]["params"]


def _make_odd(opt: torch.optim.Optimizer, params: list[torch.Tensor], index: int, oddity: str) -> None:
    p = params[index]
    state = opt.state[p]
    if oddity == "no_grad":
        p.grad = None
    elif oddity == "plain_tensor":
        plain = p.detach().clone().requires_grad_()
        plain.grad = p.grad
        opt.state[plain] = opt.state.pop(p)
        opt.param_groups[0]["params"][index] = plain
    elif oddity == "subclass":
        marked = Marked(p.detach().clone())
        marked.grad = p.grad
        opt.state[marked] = opt.state.pop(p)
        opt.param_groups[0]["params"][index] = marked
    elif oddity == "strided_grad":
        p.grad = _strided(p.grad)
    elif oddity == "float64":
        with torch.no_grad():
            p.data = p.data.double()
        p.grad = p.grad.double()
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if name in state:
                state[name] = state[name].double()
    elif oddity == "strided_buffer":
        state["exp_avg"] = _strided(state["exp_avg"])
    elif oddity == "buffer_dtype":
        state["exp_avg_sq"] = state["exp_avg_sq"].double()
    elif oddity == "missing_buffer":
        del state["exp_avg"]
    elif oddity == "int_step":
        state["step"] = torch.tensor(1)
    elif oddity == "step_1d":
        state["step"] = state["step"].reshape(1)
    elif oddity == "float_step":
        state["step"] = 1.0
    elif oddity == "state_not_dict":
        opt.state[p] = OrderedDict(state)
    elif oddity == "grad_subclass":
        p.grad = Marked(p.grad)
    elif oddity == "buffer_shape":
        state["exp_avg"] = state["exp_avg"].reshape(-1)


def _strided(tensor: torch.Tensor) -> torch.Tensor:
    """The same values and shape, every other element of a wider tensor (not contiguous unless 1 element)."""
    wide = torch.zeros(*tensor.shape[:-1], tensor.shape[-1] * 2, dtype=tensor.dtype)
    wide[..., ::2] = tensor
    return wide[..., ::2]


def _python_reading(opt: torch.optim.Optimizer, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list]:
    group = opt.param_groups[0]
    with monkeypatch.context() as patch:
        patch.setenv(_gather_native.DISABLE_VAR, "0")
        return _fused.gather(opt.rule, group, opt.state, buffer_names(opt.rule, group))


def _check(oddities: list[str], amsgrad: bool, seed: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The reader's table equals the Python reading's wherever it takes the group; True if it took it."""
    opt, params = _group(oddities, amsgrad, seed)
    group = opt.param_groups[0]
    names = buffer_names(opt.rule, group)
    native = _gather_native.read_group(_reader(), params, opt.state, names, True)
    tables, leftover = _python_reading(opt, monkeypatch)
    if native is None:
        return False
    dtype, meta, taken = native
    assert leftover == [], (oddities, leftover)
    if not taken:
        assert tables == {}
        return True
    assert list(tables) == [dtype], (oddities, list(tables), dtype)
    assert tables[dtype].meta == meta, oddities
    assert [id(p) for p in tables[dtype].params] == [id(p) for p in taken], oddities
    return True


TAKEN = ("none", "no_grad", "plain_tensor")


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("oddity", ODDITIES)
def test_one_odd_parameter_is_read_as_python_reads_it(oddity: str, amsgrad: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    oddities = ["none", oddity, "none", "none"]
    took = _check(oddities, amsgrad, 0, monkeypatch)
    assert took == (oddity in TAKEN), (oddity, took)


def test_a_group_of_one_float64_dtype_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(["float64"] * 3, False, 1, monkeypatch)


def test_a_group_without_any_gradient_gives_no_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(["no_grad"] * 3, True, 2, monkeypatch)


@settings(max_examples=60, deadline=None)
@given(oddities=st.lists(st.sampled_from(ODDITIES), min_size=1, max_size=9), amsgrad=st.booleans(),
       seed=st.integers(0, 10))
def test_any_group_is_read_as_python_reads_it(oddities: list[str], amsgrad: bool, seed: int) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        took = _check(oddities, amsgrad, seed, monkeypatch)
    usual = set(oddities) - {"no_grad"}
    if usual <= set(TAKEN) or usual == {"float64"}:
        assert took, oddities


def test_a_rule_without_state_and_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain SGD keeps no state (the reader is given none); DESCENTLAB_NATIVE_GATHER=0 turns it off."""
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(4)
    opt = dl.SGD(params, lr=0.1)
    group = opt.param_groups[0]
    names = buffer_names(opt.rule, group)
    assert names == [] or names == ()
    native = _gather_native.read_group(_reader(), group["params"], None, names, opt.rule.counts_steps)
    assert native is not None
    tables, leftover = _python_reading(opt, monkeypatch)
    assert leftover == [] and tables[torch.float32].meta == native[1]
    monkeypatch.setenv(_gather_native.DISABLE_VAR, "0")
    assert _gather_native.gather_native(group, None, names, False) is None


def test_a_user_changing_tensors_between_steps_gets_torchs_numbers() -> None:
    """Nothing is kept between steps: a gradient replaced, a buffer replaced and a parameter's data
    swapped between steps are all read afresh (bitwise torch.optim.Adam)."""
    gen = torch.Generator().manual_seed(5)
    ours = [torch.nn.Parameter(torch.randn(5, 3, generator=gen)) for _ in range(4)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = dl.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    for t in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        if t == 2:
            for opt, params in ((a, ours), (b, theirs)):
                opt.state[params[1]]["exp_avg"] = opt.state[params[1]]["exp_avg"].clone() * 0.5
                with torch.no_grad():
                    params[2].data = params[2].data.clone() + 1.0
        a.step()
        b.step()
        assert dl.last_routes(a)[0].path == "fused", dl.last_routes(a)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


def test_the_layout_check_is_the_python_checks() -> None:
    """``all_dense`` says True only where every gradient there is a plain strided tensor; a sparse or
    subclass gradient is left to the Python check (which raises for sparse, as torch.optim does)."""
    _reader()
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(3)]
    params[0].grad = torch.randn(3)
    assert _gather_native.all_dense(params) is True  # params[1:] have no gradient: nothing to check
    params[1].grad = torch.randn(3).to_sparse()
    assert _gather_native.all_dense(params) is None
    params[1].grad = Marked(torch.randn(3))
    assert _gather_native.all_dense(params) is None
    params[1].grad = torch.randn(3).to_sparse()
    opt = dl.Adam(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))


def test_an_inference_tensor_is_refused_as_torch_refuses_it() -> None:
    """A parameter made under ``torch.inference_mode()`` and stepped outside it: torch's in-place update
    raises; the fused path must not write it behind torch's back (the core raises torch's error)."""
    with torch.inference_mode():
        ours = [torch.randn(4)]
        theirs = [ours[0].clone()]
    for p in (*ours, *theirs):
        p.grad = torch.ones(4)
    for opt in (dl.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)):
        with pytest.raises(RuntimeError, match=r"[Ii]nference"):
            opt.step()
    torch.testing.assert_close(ours[0].detach(), theirs[0].detach())


def test_a_keyboard_interrupt_during_the_read_is_raised() -> None:
    """Python code the read runs (a state mapping's ``__missing__``) may be interrupted: the reader
    gives the KeyboardInterrupt back instead of swallowing it."""

    class Interrupting(dict):
        def __missing__(self, key: object) -> None:
            raise KeyboardInterrupt

    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn(3)
    opt = dl.Adam(params, lr=0.1)
    opt.step()
    states = Interrupting(opt.state)
    del states[params[1]]
    with pytest.raises(KeyboardInterrupt):
        _gather_native.read_group(_reader(), params, states, buffer_names(opt.rule, opt.param_groups[0]), True)


def test_a_step_compiled_with_fullgraph_traces_through_the_sparse_check() -> None:
    """``torch.compile(opt.step, fullgraph=True)``: the sparse check is a loop torch.compile can trace
    (no ctypes call inside the graph). Dynamo's ``eager`` backend (Inductor would only add seconds of
    compiling); the traced step is the core's, within float32 rounding of torch (the scalars are traced
    as dynamo computes them, not bitwise)."""
    _reader()  # built: the check would take the C path outside tracing
    gen = torch.Generator().manual_seed(7)
    ours = [torch.nn.Parameter(torch.randn(5, generator=gen))]
    theirs = [torch.nn.Parameter(ours[0].detach().clone())]
    a, b = dl.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    step = torch.compile(a.step, fullgraph=True, backend="eager")
    for _ in range(2):
        ours[0].grad = torch.randn(5, generator=gen)
        theirs[0].grad = ours[0].grad.clone()
        step()
        b.step()
    assert dl.last_routes(a)[0].reason.startswith("traced by torch.compile")
    torch.testing.assert_close(ours[0].detach(), theirs[0].detach())
