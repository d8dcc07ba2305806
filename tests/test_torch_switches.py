"""torch.optim's engine switches (issue 26): ``differentiable=True`` gives torch's hypergradients,
``capturable=True`` and the ``fused`` combinations torch refuses are refused with torch's errors, and
``fused=True`` gives the for-loop's numbers (docs/engine.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import descentlab.optim as dl

CLASSES = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")


@pytest.fixture
def float64_default() -> Iterator[None]:
    """torch's differentiable Adam computes its bias corrections in ``state['step']``'s dtype, float32
    unless the default dtype is float64 (then it differs from its own for-loop by ~1e-5 relative): in
    float64 both libraries' hypergradients are exact to float64 rounding."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _hypergradient(library: Any, name: str, steps: int = 3, lr: float = 0.01,
                   **hypers: Any) -> tuple[float, torch.Tensor, torch.Tensor]:
    """torch's pattern: a non-leaf parameter (a clone of the weights), an lr tensor that requires grad,
    ``differentiable=True``; the derivatives of a loss after ``steps`` steps by lr and by the weights."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    rate = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    param = weights.clone()
    opt = getattr(library, name)([param], lr=rate, differentiable=True, **hypers)
    for _ in range(steps):
        param.grad = torch.randn(5, 4, dtype=torch.float64, generator=generator)
        opt.step()
    by_lr, by_weights = torch.autograd.grad((param ** 2).sum(), (rate, weights))
    return by_lr.item(), by_weights, param.detach()


TORCH_CASES = [("SGD", 3, {}), ("SGD", 1, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
               ("SGD", 3, {"weight_decay": 0.1, "maximize": True}), ("Adam", 3, {}),
               ("Adam", 3, {"weight_decay": 0.1}), ("Adam", 3, {"amsgrad": True}), ("AdamW", 3, {})]
"""The cases torch itself can differentiate (it fails on a multi-step momentum SGD, an lr tensor in
Adagrad and RMSprop, and Adam with amsgrad and weight decay: those are checked by finite differences)."""


@pytest.mark.parametrize(("name", "steps", "hypers"), TORCH_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in TORCH_CASES])
def test_hypergradients_equal_torchs(float64_default, name, steps, hypers):
    expected_lr, expected_weights, expected_param = _hypergradient(torch.optim, name, steps, **hypers)
    by_lr, by_weights, param = _hypergradient(dl, name, steps, **hypers)
    assert abs(expected_lr) > 1.0
    assert by_lr == pytest.approx(expected_lr, rel=1e-13)
    torch.testing.assert_close(by_weights, expected_weights, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(param, expected_param, rtol=1e-13, atol=1e-15)


FD_CASES = [("SGD", {"momentum": 0.9}), ("Adagrad", {"lr_decay": 0.1}),
            ("RMSprop", {"momentum": 0.5, "centered": True}), ("Adam", {"amsgrad": True, "weight_decay": 0.1})]


@pytest.mark.parametrize(("name", "hypers"), FD_CASES, ids=[c[0] for c in FD_CASES])
def test_hypergradients_torch_cannot_take_equal_finite_differences(name, hypers):
    by_lr, _, _ = _hypergradient(dl, name, **hypers)
    h = 1e-6
    plus, minus = (_hypergradient(dl, name, lr=0.01 + d, **hypers)[2] for d in (h, -h))
    finite = (((plus ** 2).sum() - (minus ** 2).sum()) / (2 * h)).item()
    assert by_lr == pytest.approx(finite, rel=1e-6)


def test_a_non_leaf_parameter_needs_differentiable_and_a_leaf_fails_as_in_torch():
    weights = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"not a leaf tensor.*differentiable=True"):
        dl.Adam([weights.clone()])
    for library in (torch.optim, dl):
        weights.grad = torch.ones(3)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            library.Adam([weights], differentiable=True).step()


def test_without_differentiable_the_step_records_no_graph():
    rate = torch.tensor(0.1, requires_grad=True)
    param = torch.zeros(3, requires_grad=True)
    param.grad = torch.ones(3)
    dl.SGD([param], lr=rate).step()
    assert param.is_leaf and param.grad_fn is None and rate.grad is None


@pytest.mark.parametrize("name", ("RMSprop", "Adam", "AdamW"))
def test_capturable_on_cpu_fails_at_the_step_as_in_torch(name):
    errors = []
    for library in (torch.optim, dl):
        param = torch.zeros(3, requires_grad=True)
        opt = getattr(library, name)([param], capturable=True)  # accepted at construction, as torch does
        param.grad = torch.ones(3)
        with pytest.raises(AssertionError, match="capturable=True, params and state_steps must be on supported") \
                as error:
            opt.step()
        errors.append(str(error.value))
        assert torch.equal(param.detach(), torch.zeros(3))
    assert errors[1].endswith(errors[0])


@pytest.mark.parametrize("name", ("Adam", "AdamW"))
def test_capturable_with_fused_steps_on_cpu_as_in_torch(name):
    params = [torch.ones(3, requires_grad=True) for _ in range(2)]
    for library, param in zip((torch.optim, dl), params, strict=True):
        param.grad = torch.ones(3)
        getattr(library, name)([param], capturable=True, fused=True).step()
    assert torch.equal(params[0], params[1])


@pytest.mark.parametrize("name", ("SGD", "Adagrad", "Adam", "AdamW"))
@pytest.mark.parametrize(("options", "message"), [({"fused": True, "foreach": True}, "cannot be `True` together"),
                                                  ({"fused": True, "differentiable": True}, "does not support")])
def test_fused_combinations_torch_refuses_are_refused_with_its_error(name, options, message):
    for library in (torch.optim, dl):
        with pytest.raises(RuntimeError, match=message):
            getattr(library, name)([torch.zeros(3, requires_grad=True)], **options)


@pytest.mark.parametrize("name", ("SGD", "Adagrad", "Adam", "AdamW"))
def test_fused_gives_the_for_loop_numbers(name):
    generator = torch.Generator().manual_seed(0)
    ours = [torch.randn(100, generator=generator, requires_grad=True) for _ in range(2)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(dl, name)(ours, lr=0.01, fused=True), getattr(torch.optim, name)(theirs, lr=0.01, foreach=False)
    for _ in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(100, generator=generator)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))
