"""The one declaration every optimizer is built from.

A :class:`Rule` says, once:

* ``update`` — the per-parameter step as a pure tensor function
  ``update(param, grad, state, *, step, **hypers) -> (new_param, new_state)``. ``grad`` has already
  been negated when ``maximize=True``; ``state`` maps each declared buffer name to its current
  tensor (``None`` for a lazy buffer before the rule first sets it); ``step`` is the step count
  t = 1, 2, ... (``None`` for rules that do not count steps). It must not modify its inputs.
* ``buffers`` — the state tensors, with torch.optim's names, how each starts, and when it exists.
* ``hypers`` — the hyper-parameters with defaults and valid ranges (see :mod:`.hyper`).

From it :func:`descentlab.optim.optimizer_class` builds a ``torch.optim.Optimizer`` subclass with
validation, param groups, ``state_dict`` and ``step``; the registry, the fast engine, the race, the
landscape and the bench all read the same object. This module is the bottom layer of the package
(it imports only :mod:`.hyper`): the rule with its optimizer class at hand (``rule.optimizer``) is
:class:`~.define.DefinedRule`, one layer above the shell.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from .hyper import Hyper, engine_option_problem, flag


class UpdateFn(Protocol):
    def __call__(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        state: Mapping[str, torch.Tensor | None],
        *,
        step: Any,
        **hypers: Any,
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]: ...


Init = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


def zeros(param: torch.Tensor, hypers: Mapping[str, Any]) -> torch.Tensor:
    """A buffer of zeros shaped like the parameter."""
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def filled_with(hyper_name: str) -> Init:
    """A buffer filled with the value of hyper-parameter ``hyper_name`` (Adagrad's
    ``initial_accumulator_value``); complex parameters get ``v + vj``, as torch.optim does."""

    def init(param: torch.Tensor, hypers: Mapping[str, Any]) -> torch.Tensor:
        value = hypers[hyper_name]
        if torch.is_complex(param):
            value = complex(value, value)
        return torch.full_like(param, value, memory_format=torch.preserve_format)

    init.__name__ = f"filled_with_{hyper_name}"
    return init


@dataclass(frozen=True)
class Buffer:
    """A state tensor of a rule.

    ``init`` builds it from the parameter and the group's hyper-parameters; ``None`` makes it
    lazy: absent until the update first returns it (torch's SGD momentum buffer, which starts as a
    copy of the first gradient). ``when`` decides from the group's hyper-parameters whether the
    buffer exists at all (RMSprop's ``momentum_buffer`` only when ``momentum > 0``).
    """

    name: str
    init: Init | None = zeros
    when: Callable[[Mapping[str, Any]], bool] | None = None

    def exists(self, hypers: Mapping[str, Any]) -> bool:
        return self.when is None or bool(self.when(hypers))


Constraint = Callable[[Mapping[str, Any]], "Exception | None"]
"""A check across hyper-parameters (Nesterov needs momentum > 0 and zero dampening)."""


class RuleError(ValueError):
    """A mistake in a rule's declaration or in what its update returned."""


@dataclass(frozen=True)
class Rule:
    """An optimizer's update rule, declared once (see the module docstring)."""

    name: str
    update: UpdateFn
    hypers: tuple[Hyper, ...]
    buffers: tuple[Buffer, ...] = ()
    counts_steps: bool = True
    eager_state: bool = False
    elementwise: bool = True
    constraints: tuple[Constraint, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self) -> None:
        names = [h.name for h in self.hypers]
        if "maximize" not in names:
            object.__setattr__(
                self, "hypers", (*self.hypers, flag("maximize", False, keyword_only=True,
                                                    doc="ascend instead of descend"))
            )
        check_declaration(self)

    # -- derived views ------------------------------------------------------------------
    @property
    def hyper_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hypers)

    @functools.cached_property
    def math_names(self) -> tuple[str, ...]:
        """Hyper-parameters passed to ``update`` (engine options and ``maximize`` excluded)."""
        return tuple(h.name for h in self.hypers if h.math and h.name != "maximize") + tuple(
            self.fixed
        )

    @functools.cached_property
    def tensor_names(self) -> frozenset[str]:
        """Hyper-parameters that may be tensors and change every step (``Hyper.tensor_ok``: lr)."""
        return frozenset(h.name for h in self.hypers if h.tensor_ok)

    @property
    def defaults(self) -> dict[str, Any]:
        """The param-group defaults, in declaration order, with fixed values last."""
        return {**{h.name: h.default for h in self.hypers}, **self.fixed}

    def hyper(self, name: str) -> Hyper:
        for h in self.hypers:
            if h.name == name:
                return h
        raise KeyError(name)

    def with_defaults(self, name: str, fixed: Mapping[str, Any] | None = None, **defaults: Any) -> Rule:
        """The same rule under another name with other defaults, and some hyper-parameters
        ``fixed`` (kept in the param group, no longer constructor arguments): AdamW is Adam
        with ``weight_decay=1e-2`` and ``decoupled_weight_decay`` fixed to True."""
        fixed = dict(fixed or {})
        hypers = tuple(
            replace(h, default=defaults.get(h.name, h.default)) for h in self.hypers if h.name not in fixed
        )
        unknown = set(defaults) - {h.name for h in hypers}
        if unknown:
            raise RuleError(f"rule {name!r}: unknown hyper-parameters {sorted(unknown)}")
        return replace(self, name=name, hypers=hypers, fixed={**self.fixed, **fixed})

    def validate(self, hypers: Mapping[str, Any], owner: str | None = None) -> dict[str, Any]:
        """Check every hyper-parameter value and cross-constraint; return the cleaned values."""
        owner = owner or self.name
        cleaned = {name: self.hyper(name).validate(hypers[name], owner) if name not in self.fixed
                   else hypers[name] for name in hypers}
        for constraint in (*self.constraints, engine_option_problem):
            problem = constraint(cleaned)
            if problem is not None:
                raise type(problem)(f"{owner}: {problem}")
        return cleaned


def check_declaration(rule: Rule) -> None:
    """Reject a malformed declaration at definition time, naming the rule and the problem."""
    where = f"rule {rule.name!r}"
    names = [h.name for h in rule.hypers]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuleError(f"{where}: hyper-parameters declared twice: {sorted(duplicates)}")
    if "lr" not in names and "lr" not in rule.fixed:
        raise RuleError(f"{where}: every rule needs an 'lr' hyper-parameter (schedulers set it)")
    for h in rule.hypers:
        problem = h.check(h.name, h.default)
        if problem is not None:
            raise RuleError(f"{where}: invalid default for {h.name}: {problem}")
    buffer_names = [b.name for b in rule.buffers]
    if "step" in buffer_names or len(set(buffer_names)) != len(buffer_names):
        raise RuleError(f"{where}: buffer names must be unique and not 'step', got {buffer_names}")
    if not callable(rule.update):
        raise RuleError(f"{where}: update must be callable, got {rule.update!r}")
    _check_update_signature(rule, where)


def _check_update_signature(rule: Rule, where: str) -> None:
    try:
        signature = inspect.signature(rule.update)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3:
        raise RuleError(f"{where}: update must take (param, grad, state, *, step, **hypers)")
    accepted = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    declared = set(rule.math_names) | {"step"}
    undeclared = accepted - declared
    if undeclared:
        raise RuleError(
            f"{where}: update takes {sorted(undeclared)} which are not declared hyper-parameters "
            f"(declared: {sorted(declared - {'step'})})"
        )
    missing = declared - accepted
    if missing:
        raise RuleError(f"{where}: update does not accept declared hyper-parameters {sorted(missing)}")


def buffer_names(rule: Rule, hypers: Mapping[str, Any]) -> Sequence[str]:
    """The buffers that exist for a group with these hyper-parameters."""
    return [b.name for b in rule.buffers if b.exists(hypers)]
