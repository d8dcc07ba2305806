"""The torch.optim shell shared by every rule: built once, from a :class:`~.rule.Rule`.

:func:`optimizer_class` turns a rule into a ``torch.optim.Optimizer`` subclass whose constructor
has the rule's hyper-parameters as arguments (torch's names, order and defaults), validates them
with named errors, supports param groups, ``add_param_group``, schedulers, closures and
``state_dict``/``load_state_dict`` with torch's keys, and steps through the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from ._state import check_loaded_state, init_state, scalar_dtype
from .engine import EngineChoice, step_all
from .rule import Rule


class RuleOptimizer(torch.optim.Optimizer):
    """Base class of every descentlab optimizer; ``rule`` is set by :func:`optimizer_class`."""

    rule: ClassVar[Rule]

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        try:
            bound = self._signature().bind(*args, **kwargs)
        except TypeError as error:
            known = ", ".join(self._signature().parameters)
            raise TypeError(f"{owner}: {error}; known arguments: {known}") from None
        bound.apply_defaults()
        defaults = self.rule.validate({**bound.arguments, **self.rule.fixed}, owner)
        params = _check_params_argument(params, owner)
        self.engine_choice = EngineChoice()
        super().__init__(params, defaults)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def _signature(cls) -> inspect.Signature:
        hypers = sorted(cls.rule.hypers, key=lambda h: h.keyword_only)
        kinds = {False: inspect.Parameter.POSITIONAL_OR_KEYWORD, True: inspect.Parameter.KEYWORD_ONLY}
        return inspect.Signature([inspect.Parameter(h.name, kinds[h.keyword_only], default=h.default)
                                  for h in hypers])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group`` with named checks: the user's dict itself becomes the group (as
        torch keeps it, so a value written into it later is honoured), filled and validated; a list of
        ``(name, tensor)`` pairs (``model.named_parameters()``) records ``param_names`` as torch does."""
        owner = type(self).__name__
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{owner}: a param group must be a dict, got {type(param_group).__name__}")
        group = param_group if isinstance(param_group, dict) else dict(param_group)
        params = group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{owner}: params must be an ordered collection, got a set")
        else:
            params = list(params) if params is not None else []
        names = [p[0] for p in params if isinstance(p, tuple) and len(p) == 2]
        if names:
            if len(names) != len(params):
                raise ValueError(f"{owner}: give every parameter a name or none (got {len(names)} names "
                                 f"for {len(params)} parameters)")
            params = [p[1] for p in params]
        _check_tensors(params, owner, len(self.param_groups), bool(self.defaults.get("differentiable", False)))
        _check_not_in_other_group(params, self.param_groups, owner)
        for name in set(group) & set(self.rule.fixed):
            if group[name] != self.rule.fixed[name]:
                raise ValueError(f"{owner}: {name} is fixed to {self.rule.fixed[name]!r}, got {group[name]!r}")
        merged = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        validated = self.rule.validate(
            {k: merged[k] for k in self.rule.defaults}, f"{owner} (param group {len(self.param_groups)})"
        )
        group["params"] = params
        if names:
            group["param_names"] = names
        group.update(validated)
        super().add_param_group(group)
        if self.rule.eager_state:
            added = self.param_groups[-1]
            for p in added["params"]:
                init_state(self.rule, p, added, self.state[p])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also reached from ``load_state_dict``: fill hyper-parameters an older checkpoint lacks, set the
        rule's fixed ones whatever the checkpoint holds (an Adam checkpoint loaded into AdamW gets
        ``decoupled_weight_decay=True``, as torch's ``AdamW.__setstate__`` forces), and turn a plain-number
        ``step`` (older torch checkpoints) into torch's 0-dim tensor."""
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in self.rule.defaults.items():
                group.setdefault(name, value)
            group.update(self.rule.fixed)
        for param_state in self.state.values():
            step = param_state.get("step") if isinstance(param_state, dict) else None
            if step is not None and not torch.is_tensor(step):
                param_state["step"] = torch.tensor(float(step), dtype=scalar_dtype())

    # -- stepping -------------------------------------------------------------------------
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            step_all(self)  # differentiable=True: with autograd on, as torch.optim's step
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        check_loaded_state(self.rule, self.param_groups, self.state, type(self).__name__)


def share_memory(self: RuleOptimizer) -> None:
    """``share_memory_()`` on every state buffer (not ``step``), as torch's ``Adagrad.share_memory()``: called
    before forking Hogwild workers that step one optimizer, so each worker updates the same accumulators.
    Given to the classes of rules whose state is made at construction (``Rule.eager_state``), where the
    buffers exist before the first step."""
    names = {buffer.name for buffer in self.rule.buffers}
    for group in self.param_groups:
        for p in group["params"]:
            for name, value in self.state[p].items():
                if name in names and isinstance(value, torch.Tensor):
                    value.share_memory_()


def _check_params_argument(params: Any, owner: str) -> list[Any]:
    if isinstance(params, torch.Tensor):
        raise TypeError(
            f"{owner}: params must be an iterable of Tensors or dicts, got a single Tensor "
            f"of shape {tuple(params.shape)}; wrap it in a list"
        )
    if isinstance(params, (set, dict)):
        raise TypeError(f"{owner}: params must be an ordered iterable, got a {type(params).__name__}")
    if not isinstance(params, Iterable):
        raise TypeError(f"{owner}: params must be an iterable of Tensors or dicts, got {params!r}")
    params = list(params)
    if not params:
        raise ValueError(f"{owner}: params is an empty list; the optimizer has nothing to optimize")
    return params


def _check_tensors(params: list[Any], owner: str, group_index: int, differentiable: bool = False) -> None:
    """Each parameter a tensor, listed once, and a leaf (or retaining its grad) unless the optimizer is
    ``differentiable``, as torch.optim checks. A group may be empty, as in torch.optim (a "no decay" group
    that a model happens not to fill)."""
    seen: set[int] = set()
    for index, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"{owner}: params[{index}] of group {group_index} must be a torch.Tensor, "
                f"got {type(p).__name__}: {p!r}"
            )
        if not p.is_leaf and not p.retains_grad and not differentiable:
            raise ValueError(f"{owner}: params[{index}] of group {group_index} is not a leaf tensor; a non-leaf "
                             "tensor can be optimized with differentiable=True only (torch: can't optimize a "
                             "non-leaf Tensor)")
        if id(p) in seen:
            raise ValueError(
                f"{owner}: params[{index}] of group {group_index} appears twice in the same group"
            )
        seen.add(id(p))


def _check_not_in_other_group(params: list[torch.Tensor], groups: list[dict[str, Any]], owner: str) -> None:
    existing = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
    for index, p in enumerate(params):
        if id(p) in existing:
            raise ValueError(
                f"{owner}: params[{index}] (shape {tuple(p.shape)}) is already in param group "
                f"{existing[id(p)]}; a tensor may belong to only one group"
            )


def optimizer_class(rule: Rule, class_name: str | None = None, doc: str | None = None,
                    module: str | None = None) -> type[RuleOptimizer]:
    """Build the ``torch.optim.Optimizer`` subclass for ``rule``."""
    name = class_name or rule.name
    methods = {"share_memory": share_memory} if rule.eager_state else {}
    cls = type(name, (RuleOptimizer,), {
        **methods,
        "rule": rule,
        "__doc__": doc or rule.doc or f"The {rule.name!r} rule as a torch.optim.Optimizer.",
        "__module__": module or __name__,
        "__qualname__": name,
    })
    signature = cls._signature()
    cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD), *signature.parameters.values()]
    )
    return cls


def optimizer_of(rule: Rule) -> type[RuleOptimizer]:
    """The torch.optim.Optimizer subclass for ``rule`` (built once per rule object, cached)."""
    cached = _CLASSES.get(id(rule))
    if cached is None or cached[0] is not rule:
        # in the rule's own module, so pickle finds the class where the user keeps it (Lion = lion.optimizer)
        cls = optimizer_class(rule, class_name=_class_name(rule.name), module=getattr(rule.update, "__module__", None))
        _CLASSES[id(rule)] = (rule, cls)
        return cls
    return cached[1]


_CLASSES: dict[int, tuple[Rule, type[RuleOptimizer]]] = {}


def _class_name(name: str) -> str:
    parts = [p for p in name.replace("-", "_").split("_") if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) or "Rule"
