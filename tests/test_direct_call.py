"""Compiled steps skip dynamo once it has served a bucket size (optim/_direct.py).

The engine calls the graph dynamo compiled straight from the update's arguments, through the sources
dynamo recorded for each graph input. These tests check the numbers stay those of the per-tensor path
for several bucket sizes (dynamo compiles size 1 apart from the rest), that the skip happens, and
that anything the mapping does not know is left to dynamo.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.source import DictGetItemSource, GetItemSource, LocalSource, TensorProperty, TensorPropertySource

import descentlab.optim as dl
from descentlab.optim import _flat
from descentlab.optim._compile import boxed_entry
from descentlab.optim._direct import Captured, direct_call
from descentlab.optim._flat import STATS, set_engine
from descentlab.optim._float_prefix import float_program

SIZES = (1, 7, 50)
STEPS = 6


def _optimizer(mode: str) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in SIZES]
    opt = dl.SGD([{"params": [p]} for p in params], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    set_engine(opt, mode)
    return params, opt


def test_each_bucket_size_goes_direct_after_dynamo_served_it_with_the_per_tensor_numbers() -> None:
    fast_params, fast = _optimizer("compiled")
    ref_params, ref = _optimizer("eager")
    direct_before = STATS["direct_steps"]
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(100 + step)
        grads = [torch.randn(n, generator=gen) for n in SIZES]
        for params, opt in ((fast_params, fast), (ref_params, ref)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        for pf, pr in zip(fast_params, ref_params, strict=True):
            torch.testing.assert_close(pf, pr, msg=f"step {step}")
            torch.testing.assert_close(fast.state[pf]["momentum_buffer"], ref.state[pr]["momentum_buffer"])
    # step 0 creates the (lazy) momentum per tensor, step 1 goes through dynamo, the rest go direct
    assert STATS["direct_steps"] - direct_before == len(SIZES) * (STEPS - 2)
    kernels = [k for k in _flat._KERNELS.values() if any(size[1] in SIZES for size in k.direct)]
    mapped = {size[1] for k in kernels for size, call in k.direct.items() if call is not None}
    assert set(SIZES) <= mapped
    # and past AOTAutograd's wrapper too, with the scalar math (-lr) on Python floats
    assert all(boxed_entry(k.served.compiled) is not None for k in kernels if k.served is not None)
    assert any(float_program(k.served.compiled.hoisted) is not None for k in kernels if k.served is not None)


def _captured(inputs: list[tuple[object, object]], calls: list[tuple], returns_nothing: bool = True) -> Captured:
    return Captured(tuple(inputs), lambda *args: calls.append(args), returns_nothing)


def _args() -> tuple:
    return (torch.zeros(3), torch.ones(3), [torch.zeros(3), torch.full((3,), 2.0)], None, [torch.tensor(0.1)])


def test_inputs_are_rebuilt_from_arguments_closure_values_and_sizes() -> None:
    static_cell = LocalSource("static", is_derefed_cell_contents=True)
    buffers = LocalSource("buffers", is_input=True)
    inputs = [
        (TensorPropertySource(LocalSource("param", is_input=True), TensorProperty.SIZE, 0), 3),
        (GetItemSource(buffers, 1), torch.zeros(3)),
        (DictGetItemSource(static_cell, "momentum"), torch.zeros((), dtype=torch.float64)),
        (GetItemSource(DictGetItemSource(static_cell, "betas"), 1), torch.zeros((), dtype=torch.float64)),
        (LocalSource("grad", is_input=True), torch.zeros(3)),
    ]
    calls: list[tuple] = []
    static = {"momentum": 0.9, "betas": (0.8, 0.95)}
    call = direct_call(_captured(inputs, calls), static, _args())
    assert call is not None
    args = _args()
    call(args)
    size, buffer, momentum, beta2, grad = calls[0]
    assert size == 3 and buffer is args[2][1] and grad is args[1]
    assert momentum.dtype == torch.float64 and float(momentum) == 0.9  # dynamo's wrapped float
    assert float(beta2) == 0.95


@pytest.mark.parametrize("inputs, returns_nothing, why", [
    ([(LocalSource("param", is_input=True), torch.zeros(3))], False, "the graph returns values"),
    ([(None, torch.zeros(3))], True, "an input without a source"),
    ([(LocalSource("hypers", is_input=True), torch.zeros(3))], True, "an argument the update does not have"),
    ([(LocalSource("param", is_input=True), torch.zeros(3, dtype=torch.float64))], True, "a dtype unlike the example"),
    ([(LocalSource("names", is_derefed_cell_contents=True), torch.zeros(()))], True, "a closure other than static"),
    ([(DictGetItemSource(LocalSource("static", is_derefed_cell_contents=True), "nope"), torch.zeros(()))], True,
     "a static hyper-parameter that is not there"),
    ([(TensorPropertySource(LocalSource("param", is_input=True), TensorProperty.STRIDE, 0), 1)], True,
     "a stride"),
])
def test_what_cannot_be_mapped_stays_with_dynamo(inputs: list, returns_nothing: bool, why: str) -> None:
    assert direct_call(_captured(inputs, [], returns_nothing), {"momentum": 0.9}, _args()) is None, why
