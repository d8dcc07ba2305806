"""Red team, session 9: ways the fused path and the class-keyed shape probe give other numbers than
the core (``set_engine(opt, "eager")``). Each test fails on the code it was written against."""

from __future__ import annotations

import functools

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import define_rule, shape_problem
from engine_pairs import step_across_beta

_isinstance = isinstance  # a module-level alias of the builtin: its name is not "isinstance"


def _big(beta):
    return isinstance(beta, float) and beta > 0.5


_big_partial = functools.partial(_big)  # not a plain function: its body is never read
_big_default = lambda beta, kind=type: kind(beta) is float and beta > 0.5  # noqa: E731  (type as a default)


def _rule(name, predicate):
    @define_rule(name=name, hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
    def update(param, grad, state, *, step, lr, beta):
        scale = 0.1 if predicate(beta) else 1.0
        avg = state["avg"].mul(beta).add(grad)
        return param.add(avg, alpha=-lr * scale), {"avg": avg}
    return update


@define_rule(name="Red9Alias", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _alias(param, grad, state, *, step, lr, beta):
    scale = 0.1 if _isinstance(beta, float) and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red9Dunder", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _dunder(param, grad, state, *, step, lr, beta):
    scale = 0.1 if beta.__class__ is float and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red9Match", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _match(param, grad, state, *, step, lr, beta):
    match beta:  # a class pattern is an isinstance test (MATCH_CLASS), no builtin named
        case float() if beta > 0.5:
            scale = 0.1
        case _:
            scale = 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red9Hasattr", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _hasattr(param, grad, state, *, step, lr, beta):
    scale = 0.1 if hasattr(beta, "is_integer") and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red9Str", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _str(param, grad, state, *, step, lr, beta):
    scale = 0.1 if str(beta).startswith("0.") and beta > 0.5 else 1.0  # the stand-in's repr is not "0.…"
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


RULES = {
    "module-level alias of isinstance": _alias,
    "functools.partial of a helper": _rule("Red9Partial", _big_partial),
    "type as a lambda's default argument": _rule("Red9LambdaDefault", _big_default),
    "beta.__class__": _dunder,
    "match/case class pattern": _match,
    "hasattr": _hasattr,
    "str(beta)": _str,
}


@pytest.mark.parametrize("how", list(RULES))
def test_a_type_look_the_bytecode_scan_misses_gives_the_cores_numbers(how: str) -> None:
    """``_type_checks`` looks for the names type/isinstance/issubclass; a stand-in answers every other look
    at its type too (an alias, a partial, a default argument, ``__class__``, a class pattern, ``hasattr``,
    its text) unlike the float, and the comparison behind it (``beta > 0.5``) is never recorded. The kernel
    traced at beta = 0.4 has no guard, so at 0.6 it serves the else branch: got 0.74, the core 0.884."""
    step_across_beta(RULES[how], how)


@define_rule(name="Red9LrShape", hypers={"lr": 0.1}, buffers=[])
def _lr_shape(param, grad, state, *, step, lr):
    scale = 0.1 if lr > 0.5 and param.dim() == 2 else 1.0
    return param.sub(grad.mul(lr * scale)), {}


def test_a_rule_reading_the_shape_only_for_a_large_lr_is_caught_by_the_probe() -> None:
    """The trace refuses the rule at lr = 1.0 (it reads ``param.dim()``), so the probe keys it exactly and
    probes it at the *default* lr (0.1), where it reads no shape: no problem reported."""
    assert shape_problem(_lr_shape, {"lr": 1.0}) is not None


def test_auto_steps_a_rule_reading_the_shape_for_a_large_lr_with_the_cores_numbers() -> None:
    """Consequence of the probe's answer: ``auto`` steps a 32 MiB tensor of that rule in flat slices, where
    ``param.dim()`` is 1, so it moves 10x further than the core (got -1.0, core -0.1)."""
    torch.manual_seed(0)
    w = torch.randn(4096, 2049)
    a, b = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    ours, core = _lr_shape.optimizer([a], lr=1.0), _lr_shape.optimizer([b], lr=1.0)
    dl.set_engine(core, "eager")
    a.grad, b.grad = torch.ones_like(w), torch.ones_like(w)
    ours.step()
    core.step()
    assert torch.equal(a, b), (dl.last_routes(ours)[0], (a - w)[0, 0].item(), (b - w)[0, 0].item())
