"""Bring your own rule: declare an update in a few lines and get a full torch optimizer.

    from descentlab.optim import define_rule

    @define_rule(hypers={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0}, buffers=["exp_avg"])
    def lion(param, grad, state, *, step, lr, betas, weight_decay):
        beta1, beta2 = betas
        m = state["exp_avg"]
        direction = m.lerp(grad, 1 - beta1).sign()
        param = param.mul(1 - lr * weight_decay).add(direction * -lr)
        return param, {"exp_avg": m.lerp(grad, 1 - beta2)}

    Lion = lion.optimizer            # a torch.optim.Optimizer subclass: Lion(model.parameters())

``lion`` is a :class:`~descentlab.optim.Rule`, exactly like the built-in rules: the torch shell
(validation, param groups, state_dict with the declared buffer names), the fast engine (when the
rule is elementwise), the registry (``register=True``, or the import path ``mypkg.rules:lion``),
``descentlab race``, ``landscape`` and ``bench`` all take it.

Shorthand for ``hypers``: a float becomes a finite number >= 0 (``lr`` also accepts a 0-dim
tensor), a bool a flag, a pair of floats a pair in [0, 1) (betas); pass a :class:`Hyper`
(``real("x", 0.5, low=-1, high=1)``) for any other range. ``buffers``: a name starts as zeros
shaped like the parameter; pass a :class:`Buffer` for another start or a lazy one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._base import RuleOptimizer, optimizer_of
from .hyper import Hyper, flag, learning_rate, real, real_pair
from .registry import register as add_to_registry
from .rule import Buffer, Constraint, Rule, RuleError, UpdateFn


class DefinedRule(Rule):
    """A :class:`Rule` with its ``torch.optim.Optimizer`` subclass at hand: what :func:`define_rule`
    returns, and how the built-in rules are declared (``Lion = lion.optimizer``)."""

    @property
    def optimizer(self) -> type[RuleOptimizer]:
        """The optimizer class built from this rule (once per rule object)."""
        return optimizer_of(self)


def define_rule(
    *,
    hypers: Mapping[str, Any] | Sequence[Hyper],
    buffers: Sequence[str | Buffer] = (),
    name: str | None = None,
    counts_steps: bool = True,
    elementwise: bool = True,
    constraints: Sequence[Constraint] = (),
    register: bool | str = False,
) -> Callable[[UpdateFn], DefinedRule]:
    """Decorator: turn ``update(param, grad, state, *, step, **hypers)`` into a :class:`DefinedRule`.

    ``elementwise=False`` declares that the update looks across the tensor (a norm, a sort, a
    matrix product); such a rule runs on the per-tensor core, never on pieces of several tensors.
    """

    def decorate(update: UpdateFn) -> DefinedRule:
        rule_name = name or getattr(update, "__name__", "rule")
        rule = DefinedRule(
            name=rule_name,
            update=update,
            hypers=tuple(_as_hyper(rule_name, k, v) for k, v in _items(hypers)),
            buffers=tuple(_as_buffer(rule_name, b) for b in buffers),
            counts_steps=counts_steps,
            elementwise=elementwise,
            constraints=tuple(constraints),
            doc=update.__doc__ or "",
        )
        if not elementwise:
            warnings.warn(
                f"rule {rule_name!r} is declared not elementwise: it runs on the per-tensor path "
                "(never on pieces of several tensors)",
                stacklevel=2,
            )
        if register:
            add_to_registry(register if isinstance(register, str) else rule_name.lower(), rule, {},
                (update.__doc__ or "").strip().splitlines()[0] if update.__doc__ else "user rule")
        return rule

    return decorate


def _items(hypers: Mapping[str, Any] | Sequence[Hyper]) -> list[tuple[str, Any]]:
    if isinstance(hypers, Mapping):
        return list(hypers.items())
    return [(h.name, h) for h in hypers]


def _as_hyper(rule_name: str, key: str, value: Any) -> Hyper:
    if isinstance(value, Hyper):
        if value.name != key:
            raise RuleError(f"rule {rule_name!r}: hyper-parameter {key!r} is declared as {value.name!r}")
        return value
    if key == "lr":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RuleError(f"rule {rule_name!r}: lr default must be a number, got {value!r}")
        return learning_rate(float(value))
    if isinstance(value, bool):
        return flag(key, value)
    if isinstance(value, (int, float)):
        return real(key, float(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return real_pair(key, (float(value[0]), float(value[1])))
    raise RuleError(
        f"rule {rule_name!r}: cannot infer the valid range of hyper-parameter {key}={value!r}; "
        "declare it with descentlab.optim.real(...), flag(...) or real_pair(...)"
    )


def _as_buffer(rule_name: str, value: str | Buffer) -> Buffer:
    if isinstance(value, Buffer):
        return value
    if isinstance(value, str) and value.isidentifier():
        return Buffer(value)
    raise RuleError(f"rule {rule_name!r}: a buffer must be a name or a Buffer, got {value!r}")
