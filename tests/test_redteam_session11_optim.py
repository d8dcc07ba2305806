"""Red team, session 11 (drop-in optimizers): each test is a way in which a user who swaps
``torch.optim.X`` for ``descentlab.optim.X`` (default engine, ``auto``) gets other numbers than torch 2.13's
default (for-loop) CPU step, a crash where torch steps, or acceptance where torch raises.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import descentlab.optim as dl


def _twin_run(cls: str, make_params: Any, steps: int = 4,
              **kwargs: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Step torch.optim.<cls> and descentlab.optim.<cls> on equal parameters with equal gradients.
    ``kwargs`` are deep-copied for each (a tensor hyper-parameter is never shared between the two)."""
    results = []
    for module in (torch.optim, dl):
        params = make_params()
        optimizer = getattr(module, cls)(params, **copy.deepcopy(kwargs))
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(tuple(p.shape), generator=gen, dtype=torch.float64).to(p.dtype)
            optimizer.step()
        results.append([p.detach().clone() for p in params])
    return results[0], results[1]


def _params(dtype: torch.dtype = torch.float32) -> Any:
    def make() -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        return [torch.nn.Parameter(torch.randn(40, generator=gen, dtype=torch.float64).to(dtype)),
                torch.nn.Parameter(torch.randn(3, 5, generator=gen, dtype=torch.float64).to(dtype))]
    return make


# --- 1. betas given as one-element 1-d tensors ---------------------------------------------------------------


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_betas_given_as_one_element_1d_tensors_step_as_in_torch(cls: str) -> None:
    """torch's Adam constructor squeezes each tensor beta (``betas = tuple(map(_to_scalar, betas))``; lr is
    squeezed the same way, and descentlab squeezes lr). descentlab keeps ``tensor([0.9])`` as given and its
    first step raises ``TypeError: addcmul_(): argument 'value' must be Number, not Tensor``."""
    betas = (torch.tensor([0.9]), torch.tensor([0.999]))
    theirs, ours = _twin_run(cls, _params(), betas=betas)
    for a, b in zip(theirs, ours, strict=True):
        assert torch.equal(a, b)


# --- 2. tensor betas are not cast to the parameter's dtype ----------------------------------------------------


@pytest.mark.parametrize(("param_dtype", "beta_dtype"), [
    (torch.float64, torch.float32),   # a float64 model, betas made with torch.tensor(0.123) (default dtype)
    (torch.bfloat16, torch.float32),  # a bfloat16 model, betas made with torch.tensor(0.9)
], ids=["f64-param-f32-betas", "bf16-param-f32-betas"])
def test_tensor_betas_of_another_dtype_than_the_parameter_give_torchs_bits(param_dtype: torch.dtype,
                                                                            beta_dtype: torch.dtype) -> None:
    """torch's for-loop casts a tensor beta1 to each parameter's dtype before ``exp_avg.lerp_(grad, 1 -
    beta1)`` (``beta1_dict``, the workaround for pytorch#140601), so ``1 - beta1`` is computed in the
    parameter's dtype. descentlab's core computes ``1 - beta1`` in the tensor's own dtype (the route is
    ``eager``: "hyper-parameter betas is a tuple"), so the parameters move by a few ulps, not bitwise."""
    betas = (torch.tensor(0.123, dtype=beta_dtype), torch.tensor(0.4567, dtype=beta_dtype))
    theirs, ours = _twin_run("Adam", _params(param_dtype), steps=6, betas=betas)
    for a, b in zip(theirs, ours, strict=True):
        assert torch.equal(a, b)


def test_default_betas_as_float64_tensors_on_float32_parameters_give_torchs_bits() -> None:
    """The same with torch's default values: betas=(tensor(0.9, float64), tensor(0.999, float64)) on float32
    parameters differ by up to 6e-8 after 6 steps."""
    betas = (torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.999, dtype=torch.float64))
    theirs, ours = _twin_run("AdamW", _params(), steps=6, betas=betas, amsgrad=True)
    for a, b in zip(theirs, ours, strict=True):
        assert torch.equal(a, b)


# --- 3. an Adam checkpoint loaded into AdamW -------------------------------------------------------------------


def test_an_adam_checkpoint_loaded_into_adamw_decays_decoupled_as_in_torch() -> None:
    """Switching a run from Adam to AdamW and resuming from the Adam checkpoint: torch.optim.AdamW's
    ``__setstate__`` (reached from ``load_state_dict``) forces ``decoupled_weight_decay = True`` in every
    group. descentlab's ``RuleOptimizer.__setstate__`` only ``setdefault``s it, so the loaded ``False`` stays:
    the AdamW steps as Adam with an L2 penalty (other numbers), and its group holds a value AdamW's own
    ``add_param_group`` refuses ("decoupled_weight_decay is fixed to True")."""
    results = []
    for module in (torch.optim, dl):
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(6, generator=gen))
        adam = module.Adam([p], lr=0.1, weight_decay=0.5)
        p.grad = torch.randn(6, generator=gen)
        adam.step()
        adamw = module.AdamW([p], lr=0.1, weight_decay=0.5)
        adamw.load_state_dict(copy.deepcopy(adam.state_dict()))
        for _ in range(3):
            p.grad = torch.randn(6, generator=gen)
            adamw.step()
        results.append((p.detach().clone(), adamw.param_groups[0]["decoupled_weight_decay"]))
    (theirs, their_flag), (ours, our_flag) = results
    assert their_flag is True
    assert our_flag is True
    assert torch.equal(theirs, ours)


# --- 4. an SGD checkpoint holding momentum_buffer None -----------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_an_sgd_checkpoint_with_a_none_momentum_buffer_loads_and_steps_as_in_torch(momentum: float) -> None:
    """torch.optim.SGD up to 2.2 stored ``state[p]['momentum_buffer'] = None`` for every parameter with a
    gradient, momentum or not (pytorch#122131 changed that), so such checkpoints are common. torch 2.13 loads
    them and steps (``state.get('momentum_buffer')`` is None: no momentum, or a first buffer cloned from the
    gradient). descentlab's ``load_state_dict`` raises ValueError("... 'momentum_buffer' has shape NoneType
    but the parameter has shape (4,)")."""
    results = []
    for module in (torch.optim, dl):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(4, generator=gen)), torch.nn.Parameter(torch.randn(3, generator=gen))]
        optimizer = module.SGD(params, lr=0.1, momentum=momentum)
        saved = optimizer.state_dict()
        saved["state"] = {0: {"momentum_buffer": None}, 1: {"momentum_buffer": None}}  # as torch <= 2.2 saved it
        optimizer.load_state_dict(saved)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            optimizer.step()
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


# --- 5. hypergradients through betas and weight_decay (differentiable=True) --------------------------------------


def _hypergradient(module: Any, cls: str, which: str) -> tuple[list[float], list[float]]:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    leaves = {"weight_decay": [torch.tensor(0.1, dtype=torch.float64, requires_grad=True)],
              "betas": [torch.tensor(0.9, dtype=torch.float64, requires_grad=True),
                        torch.tensor(0.999, dtype=torch.float64, requires_grad=True)]}[which]
    kwargs: dict[str, Any] = {"lr": 0.1, "differentiable": True,
                              which: leaves[0] if which == "weight_decay" else tuple(leaves)}
    p = w0 * 1.0  # a non-leaf parameter, torch's hypergradient pattern
    optimizer = getattr(module, cls)([p], **kwargs)
    for i in range(2):
        p.grad = torch.sin(p.detach() * (i + 1))
        optimizer.step()
    grads = torch.autograd.grad(p.sum(), leaves)
    return [g.item() for g in grads], p.detach().tolist()


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("which", ["betas", "weight_decay"])
def test_hypergradients_through_betas_and_weight_decay_as_in_torch(cls: str, which: str) -> None:
    """torch 2.13's Adam/AdamW take betas and weight_decay as tensors that require grad under
    ``differentiable=True`` and differentiate through them (``exp_avg_sq.lerp_(grad**2, 1 - beta2)``,
    ``grad.addcmul_(param.clone(), weight_decay)``). descentlab raises: betas at the first step
    (``addcmul_(): argument 'value' must be Number, not Tensor``), weight_decay in the constructor
    ("weight_decay must be a real number, got tensor(...)")."""
    (their_grads, their_params), (our_grads, our_params) = (_hypergradient(torch.optim, cls, which),
                                                            _hypergradient(dl, cls, which))
    assert our_params == pytest.approx(their_params, rel=1e-12, abs=1e-15)
    assert our_grads == pytest.approx(their_grads, rel=1e-9)


# --- 6. Adagrad.share_memory() ----------------------------------------------------------------------------------


def test_adagrad_share_memory_exists_and_shares_the_sums_as_in_torch() -> None:
    """torch.optim.Adagrad has a public ``share_memory()`` (Hogwild: "Calls tensor.share_memory_() on the state
    sum tensors"), called before forking workers that step one shared optimizer. descentlab.optim.Adagrad has
    no such method: ``AttributeError: 'Adagrad' object has no attribute 'share_memory'``."""
    params = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(2, 3))]
    theirs = torch.optim.Adagrad(params, lr=0.1)
    theirs.share_memory()
    assert all(theirs.state[p]["sum"].is_shared() for p in params)
    ours = dl.Adagrad(params, lr=0.1)
    ours.share_memory()
    assert all(ours.state[p]["sum"].is_shared() for p in params)


# --- 7. engine-switch combinations torch refuses -------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("which", ["lr", "betas"])
def test_a_tensor_lr_or_betas_with_foreach_true_is_refused_as_torch_refuses(cls: str, which: str) -> None:
    """torch's Adam constructor: ``ValueError("lr as a Tensor is not supported for capturable=False and
    foreach=True")`` (and ``"betas[0] as a Tensor ..."``). descentlab copies torch's other engine-option
    refusals (``fused`` with ``foreach``/``differentiable``, ``capturable`` on CPU) but accepts these and steps."""
    value = torch.tensor(0.01) if which == "lr" else (torch.tensor(0.9), torch.tensor(0.999))
    with pytest.raises(ValueError, match="as a Tensor is not supported for capturable=False and foreach=True"):
        getattr(torch.optim, cls)([torch.nn.Parameter(torch.randn(3))], foreach=True, **{which: value})
    with pytest.raises(ValueError, match="as a Tensor is not supported for capturable=False and foreach=True"):
        getattr(dl, cls)([torch.nn.Parameter(torch.randn(3))], foreach=True, **{which: copy.deepcopy(value)})


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_true_with_a_complex_parameter_is_refused_as_torch_refuses(cls: str) -> None:
    """torch 2.13 with ``fused=True`` checks each parameter at the first step (``_device_dtype_check_for_fused``):
    a complex parameter raises ``RuntimeError("`fused=True` requires all the params to be floating point Tensors
    ...")``. descentlab steps it (as with ``fused=None``), like the step-time ``capturable`` check it does copy."""
    for module in (torch.optim, dl):
        p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
        optimizer = getattr(module, cls)([p], lr=0.1, fused=True)
        p.grad = torch.ones(3, dtype=torch.complex64)
        with pytest.raises(RuntimeError, match="requires all the params to be floating point Tensors"):
            optimizer.step()
