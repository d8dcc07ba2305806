"""Bad input raises ValueError/TypeError whose message names the argument and the value received.

The table crosses every invalid value with every class that has the argument; the match pattern
contains the class, the argument name and the value as received (``re.escape``d).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

import descentlab.optim as dl


def params() -> list[torch.Tensor]:
    return [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)]


ALL = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")
WITH_EPS = ("Adagrad", "RMSprop", "Adam", "AdamW")
ADAMS = ("Adam", "AdamW")

# (classes, keyword arguments, exception, message fragment after "<Class>: ")
BAD_HYPERS: list[tuple[tuple[str, ...], dict[str, Any], type[Exception], str]] = [
    (ALL, {"lr": -0.1}, ValueError, "lr must be >= 0, got -0.1"),
    (ALL, {"lr": float("nan")}, ValueError, "lr must be finite, got nan"),
    (ALL, {"lr": float("inf")}, ValueError, "lr must be finite, got inf"),
    (ALL, {"lr": torch.tensor(float("nan"))}, ValueError, "lr must be finite, got nan"),
    (ALL, {"lr": torch.tensor([0.1, 0.2])}, ValueError, "lr as a tensor must have exactly one element, got shape (2,)"),
    (ALL, {"lr": "0.1"}, TypeError, "lr must be a real number, got '0.1' (str)"),
    (ALL, {"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0, got -0.0001"),
    (ALL, {"maximize": "yes"}, TypeError, "maximize must be a bool, got 'yes' (str)"),
    (WITH_EPS, {"eps": -1e-8}, ValueError, "eps must be >= 0, got -1e-08"),
    (("SGD", "RMSprop"), {"momentum": -0.5}, ValueError, "momentum must be >= 0, got -0.5"),
    (("SGD",), {"dampening": 1.5}, ValueError, "dampening must be in [0, 1], got 1.5"),
    (("SGD",), {"nesterov": True}, ValueError,
     "nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.0, dampening=0.0"),
    (("SGD",), {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     "nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.1"),
    (("RMSprop",), {"alpha": 1.5}, ValueError, "alpha must be in [0, 1], got 1.5"),
    (("RMSprop",), {"alpha": -0.1}, ValueError, "alpha must be in [0, 1], got -0.1"),
    (("RMSprop",), {"centered": 1}, TypeError, "centered must be a bool, got 1 (int)"),
    (("Adagrad",), {"lr_decay": -0.1}, ValueError, "lr_decay must be >= 0, got -0.1"),
    (("Adagrad",), {"initial_accumulator_value": -1.0}, ValueError,
     "initial_accumulator_value must be >= 0, got -1.0"),
    (ADAMS, {"betas": (1.0, 0.999)}, ValueError, "betas[0] must be in [0, 1), got 1.0"),
    (ADAMS, {"betas": (0.9, 1.0)}, ValueError, "betas[1] must be in [0, 1), got 1.0"),
    (ADAMS, {"betas": (-0.1, 0.999)}, ValueError, "betas[0] must be in [0, 1), got -0.1"),
    (ADAMS, {"betas": (0.9, float("nan"))}, ValueError, "betas[1] must be finite, got nan"),
    (ADAMS, {"betas": 0.9}, TypeError, "betas must be a pair of two numbers, got 0.9"),
    (ADAMS, {"amsgrad": "no"}, TypeError, "amsgrad must be a bool, got 'no' (str)"),
    (ALL, {"bogus": 1}, TypeError, "got an unexpected keyword argument 'bogus'; known arguments: lr,"),
    (("AdamW",), {"decoupled_weight_decay": False}, TypeError,
     "got an unexpected keyword argument 'decoupled_weight_decay'"),
]

HYPER_TABLE = [
    pytest.param(cls, kwargs, error, message,
                 id=f"{cls}-" + "-".join(f"{k}={v!r}".replace(" ", "") for k, v in kwargs.items()))
    for classes, kwargs, error, message in BAD_HYPERS for cls in classes
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "message"), HYPER_TABLE)
def test_bad_hyper_parameter(cls: str, kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(f"{cls}: {message}")):
        getattr(dl, cls)(params(), **kwargs)


GROUP_TABLE = [
    pytest.param(cls, kwargs, error, message,
                 id=f"{cls}-group-" + "-".join(f"{k}={v!r}".replace(" ", "") for k, v in kwargs.items()))
    for classes, kwargs, error, message in BAD_HYPERS
    if "bogus" not in kwargs and "decoupled_weight_decay" not in kwargs  # unknown group keys are torch-legal
    for cls in classes
]


@pytest.mark.parametrize(("cls", "kwargs", "error", "message"), GROUP_TABLE)
def test_bad_value_in_param_group_override(cls: str, kwargs: dict[str, Any], error: type[Exception],
                                           message: str) -> None:
    """A bad override in the second group (constructor) or in add_param_group names the group."""
    a, b = params()
    with pytest.raises(error, match=re.escape(f"{cls} (param group 1): {message}")):
        getattr(dl, cls)([{"params": [a]}, {"params": [b], **kwargs}])
    opt = getattr(dl, cls)([a])
    with pytest.raises(error, match=re.escape(f"{cls} (param group 1): {message}")):
        opt.add_param_group({"params": [b], **kwargs})
    assert len(opt.param_groups) == 1


def test_adamw_decoupled_flag_is_fixed_in_groups() -> None:
    a, b = params()
    with pytest.raises(ValueError, match=re.escape("AdamW: decoupled_weight_decay is fixed to True, got False")):
        dl.AdamW([a]).add_param_group({"params": [b], "decoupled_weight_decay": False})


BAD_PARAMS = [
    pytest.param(lambda: [], ValueError, "params is an empty list; the optimizer has nothing to optimize", id="empty"),
    pytest.param(lambda: iter(()), ValueError, "params is an empty list", id="empty-iterator"),
    pytest.param(lambda: [1.0], TypeError, "params[0] of group 0 must be a torch.Tensor, got float: 1.0",
                 id="float-param"),
    pytest.param(lambda: [torch.zeros(2, requires_grad=True), "w"], TypeError,
                 "params[1] of group 0 must be a torch.Tensor, got str: 'w'", id="str-param"),
    pytest.param(lambda: torch.zeros(2, requires_grad=True), TypeError,
                 "params must be an iterable of Tensors or dicts, got a single Tensor of shape (2,)",
                 id="single-tensor"),
    pytest.param(lambda: {torch.zeros(2, requires_grad=True)}, TypeError,
                 "params must be an ordered iterable, got a set", id="set"),
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(("make", "error", "message"), BAD_PARAMS)
def test_bad_params(cls: str, make, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(f"{cls}: {message}")):
        getattr(dl, cls)(make())


@pytest.mark.parametrize("cls", ALL)
def test_same_tensor_in_two_groups(cls: str) -> None:
    shared = torch.zeros(3, requires_grad=True)
    other = torch.zeros(2, requires_grad=True)
    expected = re.escape(f"{cls}: params[0] (shape (3,)) is already in param group 0; "
                         "a tensor may belong to only one group")
    with pytest.raises(ValueError, match=expected):
        getattr(dl, cls)([{"params": [shared, other]}, {"params": [shared]}])
    opt = getattr(dl, cls)([shared])
    with pytest.raises(ValueError, match=expected):
        opt.add_param_group({"params": [shared]})


@pytest.mark.parametrize("cls", ALL)
def test_sparse_gradient_is_refused(cls: str) -> None:
    """A sparse gradient is refused at step time, naming the layout and shape. It is a RuntimeError,
    as in torch.optim (the error comes from ``step``, not from an argument)."""
    p = torch.zeros(4, 2, requires_grad=True)
    opt = getattr(dl, cls)([p], lr=0.1)
    p.grad = torch.ones(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match=re.escape(f"{cls} does not support sparse gradients (got a "
                                                     "torch.sparse_coo gradient of shape (4, 2))")):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4, 2))


@pytest.mark.parametrize("cls", ALL)
def test_valid_edge_values_are_accepted(cls: str) -> None:
    """The boundaries of the valid ranges are accepted: lr = 0 (a step that changes nothing) and a
    one-element tensor lr, kept as a 0-dim tensor as torch.optim does."""
    ps = params()
    opt = getattr(dl, cls)(ps, lr=0.0)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(torch.equal(p.detach(), torch.zeros_like(p)) for p in ps)
    for lr in (torch.tensor(0.1), torch.tensor([0.1])):
        group_lr = getattr(dl, cls)(params(), lr=lr).param_groups[0]["lr"]
        assert isinstance(group_lr, torch.Tensor) and group_lr.dim() == 0 and float(group_lr) == pytest.approx(0.1)
