"""Optimizers by name: the article's vocabulary mapped onto classes and presets.

``gd`` and ``sgd`` are the same SGD rule — GD is SGD fed the whole training set at each step, which
is the data loop's business (``batch_size=None``). ``momentum`` and ``nesterov`` are SGD presets.
A name of the form ``package.module:attribute`` imports a user's rule or optimizer class.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ._base import RuleOptimizer, optimizer_of
from .rule import Rule


@dataclass(frozen=True)
class Entry:
    """A registry name: an optimizer class plus preset hyper-parameters."""

    name: str
    cls: type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]
    """An optimizer class, or a factory ``(params, **hyperparams) -> Optimizer`` (a user's ``module:attr``)."""
    preset: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    full_batch: bool = False
    """Fed the whole training set at every step by the training loop and the race (``gd``)."""

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyper-parameters this name uses when the caller gives none."""
        rule = getattr(self.cls, "rule", None)
        base = rule.defaults if rule is not None else {}
        return {**base, **self.preset}

    def hyper_names(self) -> frozenset[str] | None:
        """The hyper-parameters this name takes: its rule's, or its class's / factory's keyword arguments (None:
        it takes any keyword, ``**kwargs``)."""
        rule = getattr(self.cls, "rule", None)
        if rule is not None:
            return frozenset(rule.defaults) | frozenset(self.preset)
        try:
            signature = inspect.signature(self.cls)
        except (TypeError, ValueError):
            return frozenset(self.preset)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        parameters = list(signature.parameters.values())[1:]
        if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        taken = {p.name for p in parameters if p.kind in kinds}
        return frozenset(taken) | frozenset(self.preset)

    def create(self, params: Any, **hyperparams: Any) -> torch.optim.Optimizer:
        optimizer = self.cls(params, **{**self.preset, **hyperparams})
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer {self.name!r} returned {type(optimizer).__name__}, not a torch.optim.Optimizer")
        return optimizer


_ENTRIES: dict[str, Entry] = {}

SHIPPED_EXAMPLES = {
    "lion": "descentlab.examples.lion:lion",
    "adabelief": "descentlab.examples.adabelief:adabelief",
}
"""Short names for the worked-example rules shipped in descentlab.examples (imported on first use)."""


def register(name: str, cls: type[torch.optim.Optimizer] | Rule, preset: Mapping[str, Any] | None = None,
             summary: str = "", *, full_batch: bool = False) -> Entry:
    """Add ``name`` to the registry (a class, or a rule that is turned into one)."""
    if isinstance(cls, Rule):
        cls = optimizer_of(cls)
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"register: name must be a plain word, got {name!r}")
    entry = Entry(name, cls, dict(preset or {}), summary, full_batch)
    _ENTRIES[name] = entry
    return entry


def names() -> list[str]:
    """The registered optimizer names, in registration order, then the shipped examples."""
    return [*_ENTRIES, *(n for n in SHIPPED_EXAMPLES if n not in _ENTRIES)]


def entries() -> list[Entry]:
    return [resolve(name) for name in names()]


def resolve(name: str) -> Entry:
    """The entry for a registry name or an import path ``module:attribute`` (a Rule, a
    RuleOptimizer subclass or any torch.optim.Optimizer subclass)."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r}")
    if name in _ENTRIES:
        return _ENTRIES[name]
    if name in SHIPPED_EXAMPLES:
        entry = _import_entry(SHIPPED_EXAMPLES[name])
        _ENTRIES[name] = Entry(name, entry.cls, {}, entry.summary)
        return _ENTRIES[name]
    if ":" in name:
        return _import_entry(name)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(names())} "
                     "(or an import path like 'mypkg.rules:lion')")


def create(name: str, params: Any, **hyperparams: Any) -> torch.optim.Optimizer:
    """``create("adam", model.parameters(), lr=1e-3)``: build a registered optimizer."""
    return resolve(name).create(params, **hyperparams)


def _import_entry(path: str) -> Entry:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"optimizer {path!r}: cannot import module {module_name!r} ({error})") from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"optimizer {path!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, Rule):
        summary = target.doc.strip().splitlines()[0] if target.doc.strip() else f"user rule {target.name}"
        return Entry(path, optimizer_of(target), {}, summary)
    if isinstance(target, type) and issubclass(target, torch.optim.Optimizer):
        return Entry(path, target)
    if isinstance(target, functools.partial) and not target.args and (
            isinstance(target.func, Rule) or (isinstance(target.func, type)
                                              and issubclass(target.func, torch.optim.Optimizer))):
        func = optimizer_of(target.func) if isinstance(target.func, Rule) else target.func
        return Entry(path, func, dict(target.keywords), f"{func.__name__} with {dict(target.keywords)}")
    if callable(target) and not isinstance(target, type) and _takes_params_and_lr(target):
        return Entry(path, target, {}, f"factory {attribute}")
    raise ValueError(f"optimizer {path!r}: {attribute!r} is a {type(target).__name__}, "
                     "expected a descentlab Rule, a torch.optim.Optimizer subclass or a callable (params, lr=...) "
                     "returning one")


def _takes_params_and_lr(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` can be called as ``factory(params, lr=...)`` (a positional first argument and ``lr``
    by keyword): an optimizer factory, not some other callable of the module."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    keyword = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)}
    return bool(parameters) and parameters[0].kind in positional and (
        "lr" in keyword or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters))


def rule_of(name: str) -> Rule | None:
    """The rule behind a name, when it is a descentlab optimizer."""
    cls = resolve(name).cls
    return cls.rule if isinstance(cls, type) and issubclass(cls, RuleOptimizer) else None


