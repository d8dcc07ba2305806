"""How a param group is stepped: one dispatcher over the core and its accelerators, with reasons.

Paths (every rule, built-in or a user's own, goes through the same ones):

* ``eager`` — the core (:mod:`._eager`): the rule's update once per parameter, where it lives.
  Bitwise equal to torch.optim's CPU for-loop. Always correct; the reference for the others.
* ``flat`` — the rule's update once per cache-sized slice of each big tensor (:mod:`._pieces`),
  in place; smaller tensors go to the core. Bitwise equal to the core for float32 and float64. On a
  big tensor the core's out-of-place update makes full-size temporaries (fresh pages, zeroed, at every
  step); slices keep them in cache (``docs/performance.md``: 2.6-3.0x faster than the core on one
  20M-element tensor).
* ``compiled`` — pieces (big tensors sliced, small ones concatenated) stepped by ``torch.compile`` of
  the rule's update (:mod:`._compiled`): one fused pass per piece, equal to the core within the
  dtype's rounding. Opt-in: compiling costs seconds, and its numbers are not bitwise torch's.
* ``fused`` — the rule's update traced once into a compiled C loop (:mod:`._fused`): one call walks
  every tensor of the group, one in-place pass each (read p, g and the state once, write p and the
  state once). Bitwise equal to the core, checked on each new kernel (:mod:`._selfcheck`): square roots
  are torch's own vector function. ``fused-ieee`` is the same pass with the IEEE square root inlined
  (faster where torch's root is MKL's): the core's numbers within 1 ulp of each root, opt-in.

Mode (``set_engine(opt, mode)``, or ``DESCENTLAB_ENGINE`` for new optimizers; default ``auto``):
``eager``, ``flat``, ``compiled``, ``fused`` or ``fused-ieee`` ask for one path; ``auto`` takes
``fused``; where the fused path cannot (no compiler, an op the code generator does not know, a tensor
hyper-parameter, its self-check failed) it says why and takes ``flat`` for a group holding a
tensor of at least :data:`FLAT_MIN_BYTES` (where the flat path measured faster), otherwise
the core. Whatever the mode, the core steps a group that asks for the per-tensor path
(``foreach=False``, ``fused=False``, ``differentiable=True``), a rule declared ``elementwise=False``,
a step traced by ``torch.compile`` (the caller compiles the core, as it would torch.optim's), a rule
whose numbers change when its tensors are flattened, sliced or concatenated
(:func:`.probe.shape_problem`: it reads ``param.dim()`` or a size, or is not elementwise), and,
inside an accelerated group, each parameter the path does not take (small, half precision, complex,
sparse, a lazy buffer not yet made, memory shared with another parameter).
:func:`last_routes` tells, per group, which path the last step took and why.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, is_not
from typing import Any

import torch

from ._compiled import compiled_piece
from ._eager import check_dense, eager_step
from ._fused import fused_route
from ._gather_native import all_dense
from ._outside import Screen, outside_reads
from ._pieces import eager_piece, step_pieces, take
from ._trace import trace_problem
from .hyper import FUSED_DEVICES, capturable_problem, fused_problem
from .probe import shape_problem
from .rule import Rule, buffer_names

MODES = ("auto", "eager", "flat", "compiled", "fused", "fused-ieee")
ENV_VAR = "DESCENTLAB_ENGINE"
FLAT_PIECE_BYTES = 1 << 20
"""Uncompiled pieces (of float64 elements; float32 pieces hold twice as many): few enough per tensor that
the update's per-op overhead stays small, small enough that its temporaries are reused heap memory."""
FLAT_MIN_BYTES = 32 << 20
"""The flat path takes tensors of at least this many bytes (smaller ones: the core); ``auto`` takes the
flat path for a group holding one. glibc serves a temporary under 32 MiB from reused heap once a
process has freed one that big, but maps every one from 32 MiB up afresh, page-faulted and zeroed at
every step: there the core's full-size temporaries cost 2.6-3.0x (docs/performance.md)."""
COMPILED_PIECE_NUMEL = 1 << 20
"""Compiled pieces: big enough that a call's overhead is small, small enough (4 MiB of float32) that
malloc reuses the concatenations' memory instead of mapping fresh pages every step."""


@dataclass(frozen=True)
class Route:
    """The path one group's step took, and why."""

    path: str
    reason: str


@dataclass
class EngineChoice:
    """Per optimizer: the mode asked for, the routes of the last step, what the compiled path learned."""

    mode: str = field(default_factory=lambda: _mode_from_environment())
    routes: list[Route] = field(default_factory=list)
    seen: set[tuple[Any, ...]] = field(default_factory=set)


def _mode_from_environment() -> str:
    mode = os.environ.get(ENV_VAR, "") or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _choice(optimizer: Any) -> EngineChoice:
    choice = optimizer.__dict__.get("engine_choice")
    if choice is None:
        choice = optimizer.engine_choice = EngineChoice()
    return choice


def set_engine(optimizer: torch.optim.Optimizer, mode: str) -> None:
    """Choose the path of ``optimizer``'s steps: ``auto``, ``eager``, ``flat`` or ``compiled``."""
    if mode not in MODES:
        raise ValueError(f"engine mode must be one of {', '.join(MODES)}, got {mode!r}")
    _choice(optimizer).mode = mode


def engine_mode(optimizer: torch.optim.Optimizer) -> str:
    return _choice(optimizer).mode


def last_routes(optimizer: torch.optim.Optimizer) -> list[Route]:
    """Per param group, the path of the last step and the reason."""
    return list(_choice(optimizer).routes)


def step_all(optimizer: Any) -> None:
    """Step every param group of ``optimizer`` (a :class:`~._base.RuleOptimizer`) on its route."""
    choice = _choice(optimizer)
    owner = type(optimizer).__name__
    tracing = torch.compiler.is_compiling()
    for group in optimizer.param_groups:  # as torch.optim: a sparse gradient fails before anything moved
        fused = bool(group.get("fused")) and not tracing and not _all_fusable(group["params"])
        if (tracing or not group.get("capturable") or group.get("fused")) and not fused \
                and _all_dense(group["params"]):
            continue  # nothing below would raise: skip its per-parameter Python loop
        for param in group["params"]:
            if param.grad is not None:
                check_dense(param.grad, owner)
                problem = None if tracing else capturable_problem(group, param.device)
                if problem is None and fused and _unstepped(optimizer.rule, optimizer.state.get(param)):
                    problem = fused_problem(group, param)
                if problem is not None:
                    raise type(problem)(f"{owner}: {problem}")
    choice.routes = [_step_group(optimizer.rule, group, optimizer.state, owner, choice)
                     for group in optimizer.param_groups]


_grad, _layout = attrgetter("grad"), attrgetter("layout")
_not_none = partial(is_not, None)
_dtype, _device_type = attrgetter("dtype"), attrgetter("device.type")


def _all_fusable(params: list[torch.Tensor]) -> bool:
    """Whether ``fused=True`` takes every parameter (:func:`.hyper.fused_problem` passes), in two C-level
    ``map`` passes: the per-parameter loop runs only for a group that holds one it does not."""
    return (all(map(torch.is_floating_point, params))
            and set(map(_device_type, params)) <= set(FUSED_DEVICES))


def _unstepped(rule: Rule, state: Any) -> bool:
    """Whether a parameter has not been stepped yet (no state, or a step count of 0). torch checks a
    ``fused=True`` parameter as it makes its first state (Adam), or at the optimizer's first step (SGD,
    Adagrad): a complex parameter whose state was loaded from a checkpoint is stepped, as torch's Adam does."""
    if not state:
        return True
    step = state.get("step") if rule.counts_steps else None
    return step is None or float(step) == 0


def _all_dense(params: list[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` there is strided (``check_dense`` passes): in C where the native
    reader is built and every gradient is a plain tensor, else one C-level ``map`` pass."""
    if torch.compiler.is_compiling():  # a loop torch.compile can trace (no ctypes call, no attrgetter)
        return all(p.grad is None or p.grad.layout == torch.strided for p in params)
    if all_dense(params):
        return True
    return set(map(_layout, filter(_not_none, map(_grad, params)))) <= {torch.strided}


def _step_group(rule: Rule, group: dict[str, Any], states: MutableMapping[torch.Tensor, Any], owner: str,
                choice: EngineChoice) -> Route:
    reads = choice.mode != "eager" and not torch.compiler.is_compiling()  # (dynamo cannot trace the screen)
    screen = outside_reads(rule.update) if reads else None
    path, reason = _probed(rule, group, *_path(rule, group, choice.mode, screen), screen)
    if path in ("fused", "fused-ieee"):
        taken, why_not = fused_route(rule, group, states, owner, reason, ieee=path == "fused-ieee")
        if taken is not None:
            return Route(path, taken)
        path, reason = _auto_path(group) if choice.mode == "auto" else ("eager", f"{path} asked for")
        path, reason = _probed(rule, group, path, f"{reason}; not fused: {why_not}", screen)
    if path == "eager":
        eager_step(rule, group, states, owner)
        return Route(path, reason)
    hypers = {name: group[name] for name in rule.math_names}
    names = buffer_names(rule, group)
    maximize = bool(group["maximize"])
    if path == "compiled":
        run_piece = compiled_piece(rule, names, hypers, maximize, choice.seen)
        buckets, leftover = take(rule, group, states)
        step_pieces(buckets, COMPILED_PIECE_NUMEL, run_piece)
    else:
        run_piece = eager_piece(rule, names, hypers, maximize)
        buckets, leftover = take(rule, group, states, _big_and_sliceable)
        step_pieces(buckets, max(1, FLAT_PIECE_BYTES // 8), run_piece)
    if leftover:
        eager_step(rule, group, states, owner, params=leftover)
        reason += f"; {len(leftover)} parameter(s) on the core"
    return Route(path, reason)


SLICING = ("flat", "compiled")
"""The paths that hand the rule slices of tensors (their probe takes the group's lr, not its default)."""


def _probed(rule: Rule, group: dict[str, Any], path: str, reason: str, screen: Screen | None) -> tuple[str, str]:
    """``path`` unless the shape probe finds the rule unfit for what every accelerator hands it (flat
    slices, concatenations, flat memory): then the per-tensor core, with the probe's reason. The fused
    path traces the update at the group's values, lr included, and refuses a shape read, so before it the
    probe may take lr at its default (once, not once per step of an lr schedule); before a slicing path it
    takes the group's lr."""
    if path == "eager":
        return path, reason
    problem = shape_problem(rule, group, lr_as_given=path in SLICING, screen=screen)
    return ("eager", f"{problem}: stepped on the per-tensor core") if problem is not None else (path, reason)


def _big_and_sliceable(member: Any) -> bool:
    return member.numel * member.param.element_size() >= FLAT_MIN_BYTES and member.sliceable


def _path(rule: Rule, group: dict[str, Any], mode: str, screen: Screen | None) -> tuple[str, str]:
    if mode == "eager":
        return "eager", "asked for"
    if not rule.elementwise:
        return "eager", f"rule {rule.name!r} is not elementwise"
    if group.get("fused") is False or group.get("foreach") is False or group.get("differentiable"):
        return "eager", "the group asks for the per-tensor path (foreach=False, fused=False or differentiable)"
    if torch.compiler.is_compiling():
        return "eager", "traced by torch.compile (the caller compiles the step)"
    screen = outside_reads(rule.update) if screen is None else screen
    effect = screen.effect
    if effect is not None:  # before any probe or trace: they would call the update where the core does not
        return "eager", f"{effect}: an update with effects outside the rule steps on the per-tensor core"
    untraceable = trace_problem(rule.update, screen) if mode in ("auto", "fused", "fused-ieee") else None
    if untraceable is not None:  # no probe for a path that will not be taken
        if mode != "auto":
            return "eager", f"{mode} asked for; not fused: {untraceable}"
        path, reason = _auto_path(group)
        return path, f"{reason}; not fused: {untraceable}"
    if mode != "auto":
        return mode, "asked for"
    return "fused", "auto: one fused pass per group"


def _auto_path(group: dict[str, Any]) -> tuple[str, str]:
    """What ``auto`` takes when the fused path cannot: the flat path for big tensors, else the core."""
    biggest = max((p.numel() * p.element_size() for p in group["params"]), default=0)
    if biggest >= FLAT_MIN_BYTES:
        return "flat", f"auto: a tensor of {biggest >> 20} MiB (>= {FLAT_MIN_BYTES >> 20}) is stepped in slices"
    return "eager", f"auto: every tensor under {FLAT_MIN_BYTES >> 20} MiB"
