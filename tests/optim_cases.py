"""Shared tables for the optimizer tests: one :class:`Case` per (class, flag combination), and a
driver that runs descentlab, torch.optim and the NumPy reference side by side on the same gradients.

The run (:func:`run_pair`) exercises, in every case:

* params of several shapes (0-dim, vector, matrix, a 3-D tensor) split over two param groups, the
  second with its own hyper-parameters (``Case.group2``);
* gradients that are ``None`` on some steps (``zero_grad(set_to_none=True)`` then not set) or zeros
  (``set_to_none=False``), and one param without any gradient for the first steps;
* the learning rate of every group halved by hand at step ``LR_CHANGE_AT``;
* ``add_param_group`` with a new param (and its own lr) at step ``ADD_GROUP_AT``;
* ``STEPS`` steps, with the params compared after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import descentlab.optim as dl
from descentlab import reference

STEPS = 50
LR_CHANGE_AT = 30
ADD_GROUP_AT = 20
SHAPES: tuple[tuple[int, ...], ...] = ((), (5,), (3, 4), (2, 3, 4))
"""Group 0 gets the first two shapes, group 1 the last two; the added group gets shape (4,)."""
REAL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
ALL_DTYPES = (*REAL_DTYPES, torch.complex64)
CLASSES = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")


@dataclass(frozen=True, eq=False)
class Case:
    """One optimizer configuration: constructor keywords plus overrides for the second group."""

    cls: str
    name: str
    hypers: dict[str, Any] = field(default_factory=dict)
    group2: dict[str, Any] = field(default_factory=dict)
    tensor_lr: bool = False

    @property
    def id(self) -> str:
        return f"{self.cls}-{self.name}"

    def kwargs(self, lr_dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Constructor keywords; a tensor lr is a 0-dim ``lr_dtype`` tensor (torch's step-size
        arithmetic then runs in that dtype, so the float64 reference runs get a float64 one)."""
        kw = dict(self.hypers)
        if self.tensor_lr:
            kw["lr"] = torch.tensor(kw.get("lr", 0.01), dtype=lr_dtype)
        return kw


def _cases() -> list[Case]:
    c: list[Case] = []
    # SGD: momentum, dampening, nesterov, weight decay, maximize.
    c += [
        Case("SGD", "plain", {"lr": 0.05}),
        Case("SGD", "weight_decay", {"lr": 0.05, "weight_decay": 0.1}),
        Case("SGD", "maximize", {"lr": 0.05, "maximize": True}),
        Case("SGD", "momentum", {"lr": 0.05, "momentum": 0.9}),
        Case("SGD", "momentum-dampening-wd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
        Case("SGD", "nesterov", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        Case("SGD", "nesterov-wd-maximize",
             {"lr": 0.02, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05, "maximize": True}),
        Case("SGD", "groups-momentum-vs-plain", {"lr": 0.05},
             {"lr": 0.01, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.1}),
        Case("SGD", "groups-nesterov-vs-momentum", {"lr": 0.03, "momentum": 0.9},
             {"lr": 0.07, "momentum": 0.7, "nesterov": True, "maximize": True}),
        Case("SGD", "tensor-lr-momentum", {"lr": 0.05, "momentum": 0.9}, tensor_lr=True),
    ]
    # Adagrad: lr_decay, initial accumulator, weight decay, eps, maximize.
    c += [
        Case("Adagrad", "default", {"lr": 0.1}),
        Case("Adagrad", "weight_decay", {"lr": 0.1, "weight_decay": 0.1}),
        Case("Adagrad", "lr_decay", {"lr": 0.1, "lr_decay": 0.05}),
        Case("Adagrad", "initial_accumulator", {"lr": 0.1, "initial_accumulator_value": 0.5}),
        Case("Adagrad", "all-flags",
             {"lr": 0.1, "lr_decay": 0.02, "weight_decay": 0.05, "initial_accumulator_value": 0.2,
              "eps": 1e-6, "maximize": True}),
        # torch.optim.Adagrad fills `sum` with the *constructor's* initial_accumulator_value for every
        # group, so a per-group initial_accumulator_value is left out of the torch table (see
        # test_conformance_reference.py for descentlab's per-group behaviour).
        Case("Adagrad", "groups", {"lr": 0.1, "initial_accumulator_value": 0.1},
             {"lr": 0.03, "lr_decay": 0.1, "weight_decay": 0.2, "maximize": True}),
        Case("Adagrad", "tensor-lr", {"lr": 0.1, "lr_decay": 0.01}, tensor_lr=True),
    ]
    # RMSprop: alpha, centered, momentum, weight decay, maximize.
    c += [
        Case("RMSprop", "default", {"lr": 0.01}),
        Case("RMSprop", "alpha-wd", {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.1}),
        Case("RMSprop", "centered", {"lr": 0.01, "centered": True}),
        Case("RMSprop", "momentum", {"lr": 0.01, "momentum": 0.9}),
        Case("RMSprop", "centered-momentum-wd-maximize",
             {"lr": 0.005, "centered": True, "momentum": 0.5, "weight_decay": 0.05, "maximize": True,
              "eps": 1e-6}),
        Case("RMSprop", "groups-buffers-differ", {"lr": 0.01},
             {"lr": 0.02, "centered": True, "momentum": 0.5, "alpha": 0.95}),
        Case("RMSprop", "tensor-lr-centered", {"lr": 0.01, "centered": True, "momentum": 0.9}, tensor_lr=True),
    ]
    # Adam / AdamW: betas, eps, weight decay (L2 vs decoupled), amsgrad, maximize.
    for cls in ("Adam", "AdamW"):
        c += [
            Case(cls, "default", {"lr": 0.01}),
            Case(cls, "weight_decay", {"lr": 0.01, "weight_decay": 0.1}),
            Case(cls, "amsgrad", {"lr": 0.01, "amsgrad": True}),
            Case(cls, "betas-eps", {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-6}),
            Case(cls, "amsgrad-wd-maximize", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True}),
            Case(cls, "groups", {"lr": 0.01},
                 {"lr": 0.003, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.2}),
            Case(cls, "tensor-lr-amsgrad", {"lr": 0.01, "amsgrad": True}, tensor_lr=True),
        ]
    c.append(Case("Adam", "decoupled_weight_decay", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}))
    return c


CASES: list[Case] = _cases()


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- params and gradients ---------------------------------------------------------------------
def make_params(dtype: torch.dtype, seed: int = 0, shapes: tuple[tuple[int, ...], ...] = SHAPES) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes] \
        if not dtype.is_complex else \
        [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def clone_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def grad_is_set(index: int, step: int) -> bool:
    """Param 1 has no gradient every 4th step, the 0-dim param every 7th, param 3 for the first 5."""
    if index == 1 and step % 4 == 3:
        return False
    if index == 0 and step % 7 == 0:
        return False
    return not (index == 3 and step < 5)


def make_grad(gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    if like.dtype.is_complex:
        return torch.randn(like.shape, generator=gen, dtype=like.dtype)
    return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like.dtype)


def param_groups(case: Case, params: list[torch.Tensor]) -> list[dict[str, Any]]:
    half = len(params) // 2
    return [{"params": params[:half]}, {"params": params[half:], **case.group2}]


# -- side-by-side runs ---------------------------------------------------------------------------
Check = Callable[[int, list[torch.Tensor], list[torch.Tensor]], None]


ENGINE_MODES = ("eager", "flat", "fused")
"""The engine paths promised bitwise equal to torch.optim (``compiled`` is tested within rounding)."""


def build(case: Case, params: list[torch.Tensor], impl: str, lr_dtype: torch.dtype = torch.float32,
          mode: str = "auto") -> torch.optim.Optimizer:
    module = dl if impl == "descentlab" else torch.optim
    # torch's default (foreach=None) is the single-tensor for-loop path for CPU params
    opt = getattr(module, case.cls)(param_groups(case, params), **case.kwargs(lr_dtype))
    if impl == "descentlab":
        dl.set_engine(opt, mode)
    return opt


def scale_lr(group: dict[str, Any], factor: float) -> None:
    group["lr"] = group["lr"] * factor  # stays a tensor when it was one


def run_pair(case: Case, dtype: torch.dtype, check: Check, steps: int = STEPS, seed: int = 0, mode: str = "auto"
             ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Step descentlab (engine ``mode``) and torch.optim on equal params and equal gradients;
    ``check(step, ours, theirs)`` after every step. Returns the two optimizers."""
    ours_p = make_params(dtype, seed)
    theirs_p = clone_params(ours_p)
    ours, theirs = build(case, ours_p, "descentlab", mode=mode), build(case, theirs_p, "torch")
    gen = torch.Generator().manual_seed(seed + 1)
    extra = make_params(dtype, seed + 2, ((4,),))[0]
    for t in range(steps):
        if t == ADD_GROUP_AT:
            twin = extra.detach().clone().requires_grad_()
            ours.add_param_group({"params": [extra], "lr": 0.02})
            theirs.add_param_group({"params": [twin], "lr": 0.02})
            ours_p.append(extra)
            theirs_p.append(twin)
        if t == LR_CHANGE_AT:
            for opt in (ours, theirs):
                for group in opt.param_groups:
                    scale_lr(group, 0.5)
        set_to_none = t % 2 == 0
        ours.zero_grad(set_to_none=set_to_none)
        theirs.zero_grad(set_to_none=set_to_none)
        for i, (a, b) in enumerate(zip(ours_p, theirs_p, strict=True)):
            if grad_is_set(i, t):
                g = make_grad(gen, a)
                a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        check(t, ours_p, theirs_p)
    return ours, theirs


def iter_state_pairs(ours: torch.optim.Optimizer, theirs: torch.optim.Optimizer
                     ) -> Iterator[tuple[str, Any, Any]]:
    """(label, our value, torch's value) for every state entry of every param, keys checked equal."""
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert sorted(ours_sd["state"]) == sorted(theirs_sd["state"])
    for index, theirs_state in theirs_sd["state"].items():
        ours_state = ours_sd["state"][index]
        assert sorted(ours_state) == sorted(theirs_state), f"param {index}"
        for key, value in theirs_state.items():
            yield f"param {index} {key}", ours_state[key], value


# -- the NumPy reference -------------------------------------------------------------------------
def run_reference(case: Case, steps: int = STEPS, seed: int = 0, group2: dict[str, Any] | None = None
                  ) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Run descentlab in float64 and the NumPy reference on the same gradients, with the same
    schedule of missing gradients, lr change and added group; return both final params."""
    case = Case(case.cls, case.name, case.hypers, group2 if group2 is not None else case.group2, case.tensor_lr)
    params = make_params(torch.float64, seed)
    opt = build(case, params, "descentlab", lr_dtype=torch.float64)
    fn = reference.RULES[case.cls]
    weights = [p.detach().numpy().copy() for p in params]
    states: list[dict[str, Any]] = [{} for _ in params]
    gen = torch.Generator().manual_seed(seed + 1)
    extra = make_params(torch.float64, seed + 2, ((4,),))[0]
    for t in range(steps):
        if t == ADD_GROUP_AT:
            opt.add_param_group({"params": [extra], "lr": 0.02})
            params.append(extra)
            weights.append(extra.detach().numpy().copy())
            states.append({})
        if t == LR_CHANGE_AT:
            for group in opt.param_groups:
                scale_lr(group, 0.5)
        opt.zero_grad(set_to_none=t % 2 == 0)
        grads: list[np.ndarray | None] = []
        for i, p in enumerate(params):
            if grad_is_set(i, t):
                p.grad = make_grad(gen, p)
            # a gradient left unset is None (set_to_none) or zeros: both sides see the same
            grads.append(None if p.grad is None else p.grad.numpy().copy())
        opt.step()
        index = 0
        for group in opt.param_groups:
            hypers = reference.reference_hypers(case.cls, group)
            for _ in group["params"]:
                g = grads[index]
                if g is not None:
                    weights[index], states[index] = fn(weights[index], g, states[index], **hypers)
                index += 1
    return params, weights
