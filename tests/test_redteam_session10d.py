"""Red team, session 10d: a last pass over the final engine. Each test is a way in which the default
engine (``auto``) gives other numbers than the core (``set_engine(opt, "eager")``), or refuses the fused
path to an ordinary pure rule. Each fails on 739da04.
"""

from __future__ import annotations

import math

import torch

import descentlab.optim as dl
from descentlab.optim import define_rule


def _auto_and_eager(rule, grads, steps=1, **hypers):
    """Step an auto and an eager optimizer of ``rule`` on one parameter (zeros, gradient ``grads``).
    Returns, per mode, (param, state, routes)."""
    results = {}
    for mode in ("auto", "eager"):
        param = torch.nn.Parameter(torch.zeros(len(grads)))
        optimizer = rule.optimizer([param], **hypers)
        dl.set_engine(optimizer, mode)
        for _ in range(steps):
            param.grad = torch.tensor(grads)
            optimizer.step()
        state = {k: v.clone() for k, v in optimizer.state[param].items() if k != "step"}
        results[mode] = (param.detach().clone(), state, dl.last_routes(optimizer))
    return results


def _bits(t: torch.Tensor) -> list[int]:
    return t.view(torch.int32).tolist()


# --- 1. clamp with one bound is traced as maximum/minimum, which loses the sign of a zero --------------


@define_rule(name="Red10dNegPart", hypers={"lr": 0.1}, buffers=["neg"])
def negative_part(param, grad, state, *, step, lr):
    neg = grad.neg().clamp(min=0.0)  # the negative part of the gradient (a ReLU)
    return param.sub(grad, alpha=lr), {"neg": neg}


def test_clamp_with_one_bound_keeps_the_sign_of_a_zero_as_the_core() -> None:
    """``torch.clamp(x, min=0.0)`` returns x where x is not below the bound, so on -0.0 it gives -0.0
    (likewise ``clamp(x, max=-0.0)`` keeps +0.0). ``_trace._op_clamp`` records ``clamp(min=a)`` as
    ``maximum(x, a)`` and the kernel gives +0.0. With a gradient of exactly zero (a parameter not in
    this batch's loss), ``grad.neg().clamp(min=0.0)`` is -0.0 on the core (bits 0x80000000 =
    -2147483648) and +0.0 (bits 0) on auto's fused kernel; ``1 / neg`` would be -inf against +inf.
    (Two bounds, ``clamp(g, -1, 1)``, keep -0.0: maximum(-0.0, -1) is -0.0.)"""
    results = _auto_and_eager(negative_part, [0.0, 1.0, -2.0])
    auto, eager = results["auto"], results["eager"]
    assert auto[2][0].path == "fused"
    assert _bits(eager[1]["neg"]) == [-2147483648, 0, _bits(torch.tensor([2.0]))[0]]
    assert _bits(auto[1]["neg"]) == _bits(eager[1]["neg"]), (auto[1]["neg"], eager[1]["neg"])


# --- 2. math.sqrt of a bias correction refuses the fused path --------------------------------------------


@define_rule(name="Red10dAdamMathSqrt", hypers={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
             buffers=["exp_avg", "exp_avg_sq"])
def adam_math_sqrt(param, grad, state, *, step, lr, betas, eps):
    beta1, beta2 = betas
    m = state["exp_avg"].lerp(grad, 1 - beta1)
    v = state["exp_avg_sq"].mul(beta2).addcmul(grad, grad, value=1 - beta2)
    step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)  # torch's own Adam (_dispatch_sqrt)
    return param.addcdiv(m, v.sqrt().add(eps), value=-step_size), {"exp_avg": m, "exp_avg_sq": v}


def test_adam_written_with_math_sqrt_of_the_bias_correction_gives_the_cores_numbers_with_the_reason() -> None:
    """The textbook Adam (torch.optim's ``_dispatch_sqrt`` is ``math.sqrt``) steps on the core: auto's
    route is ``eager`` with "not fused: the rule converts a hyper-parameter to a Python number
    (float/int/item)" — ``math.sqrt`` calls ``__float__`` on the traced scalar, which refuses. The same
    rule with ``(1 - beta2 ** step) ** 0.5`` (the built-in Adam's spelling) is fused. ``math`` is a pure
    C module (the outside screen already trusts it); its one-argument functions on a traced scalar
    could be recorded in the scalar program (computed in doubles, as the core computes them). Left as a
    refusal this session (docs/engine.md): what must hold is the core's numbers and the reason said."""
    results = _auto_and_eager(adam_math_sqrt, [0.5, -1.0, 2.0], steps=3)
    assert torch.equal(results["auto"][0], results["eager"][0])
    route = results["auto"][2][0]
    assert route.path == "eager" and "Python number" in route.reason, route.reason


# --- 3. torch.where refuses the fused path with a wrong reason ---------------------------------------------


@define_rule(name="Red10dLeaky", hypers={"lr": 0.1}, buffers=[])
def leaky(param, grad, state, *, step, lr):
    return param - lr * torch.where(grad > 0, grad, grad * 0.5), {}


def test_torch_where_is_fused_or_refused_as_unknown_not_as_state() -> None:
    """``torch.where(grad > 0, grad, grad * 0.5)`` is a pure elementwise select. auto steps it on the
    core with "not fused: leaky calls torch.where(), which reads or changes state: a trace would keep
    what it saw" — it neither reads nor changes state (docs/engine.md admits the trace refuses it).
    Either the generator learns ``where`` (a compare and a select, bitwise torch's), or the reason says
    it is an op the generator does not know (as ``tensor.view_as is not known to the fused code
    generator`` does)."""
    results = _auto_and_eager(leaky, [0.5, -1.0, 2.0])
    assert torch.equal(results["auto"][0], results["eager"][0])
    route = results["auto"][2][0]
    assert route.path == "fused" or "state" not in route.reason, route.reason
