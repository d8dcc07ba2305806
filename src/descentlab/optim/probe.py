"""Shape independence: whether a rule gives every element the same numbers whatever shape holds it.

The accelerators do not hand a rule the tensors the user made: the ``flat`` path gives it slices of
a tensor's flat view, the ``compiled`` path flat slices and concatenations of several tensors, the
batched race stacks k configurations along a new dimension 0 (a conv kernel ``[o, i, h, w]`` becomes
``[k, o, i, h, w]``). That is only right for a rule whose update of an element depends on that
element alone. ``elementwise=True`` is the user's word for it; :func:`shape_problem` checks it, so a
rule that reads ``param.dim()``, ``param.shape`` or ``numel()``, or looks across the tensor (a norm)
while declared elementwise, runs on the per-tensor core in those modes instead of computing other
numbers than eager (issue 26: a rule taking 10x smaller steps on 4-D kernels trained as plain SGD in
a batched race, and moved a kernel 10x further compiled than eager).

What is checked, in float64, for :data:`PROBE_STEPS` steps from the same inputs each time: the
rule's update through the core (:func:`._eager.apply_update`) on tensors of every shape in
:data:`SHAPES` (0-D to 5-D, 4-D conv kernels included) against the same update on each of them

* ``flattened`` (the tensor's 1-D view: every flat slice and compiled piece starts from it),
* ``sliced`` (the flat view cut into :data:`SLICE` element pieces, each updated alone),
* ``concatenated`` (all the tensors' flat views joined into one),
* ``stacked`` (the tensor and a twin stacked along a new dimension 0, one lr for both),

parameters and every buffer, within :data:`RTOL`. Every path that changes a tensor's shape before
the rule sees it (``flat``, ``compiled``, the batched race's stacking, a fused one-pass kernel)
asks this one function.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import is_
from typing import Any

import torch

from ._eager import apply_update
from ._outside import Screen, outside_reads, value_at
from ._trace import Program, Unsupported, flatten_hypers, membership, trace
from .rule import Rule, buffer_names

SHAPES: tuple[tuple[int, ...], ...] = ((), (7,), (3, 5), (2, 3, 4), (4, 3, 2, 2), (2, 1, 3, 2, 2))
"""The probe's tensors: every rank from 0 to 5 (a 2-D conv kernel is 4-D, a 3-D one 5-D)."""
PROBE_STEPS = 3
SLICE = 5
RTOL = 1e-9
"""float64: one form differs from another by a few ulps of reordered vector code at most; a rule that
reads a shape differs by its effect (0.1x a step, a weight decay of λ·lr)."""
ATOL = 1e-12

Tensors = list[torch.Tensor]
States = list[dict[str, torch.Tensor | None]]
Stepper = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]],
                   tuple[torch.Tensor, dict[str, torch.Tensor | None]]]
Form = Callable[[Stepper, Tensors, Tensors, States, Tensors, Tensors, States], tuple[Tensors, States]]


def shape_problem(rule: Rule, hypers: Mapping[str, Any], lr_as_given: bool = True,
                  screen: Screen | None = None) -> str | None:
    """Why ``rule`` with these hyper-parameters gives other numbers on a reshaped, sliced,
    concatenated or stacked tensor than on the tensor itself, or None when it gives the same.

    ``hypers`` is a param group (or a registry entry's defaults). Checks the declaration too: a rule
    declared ``elementwise=False`` is refused without probing. The outcome is cached, keyed on what the
    update's code depends on rather than on the values, so a schedule that sets new betas or momentum
    every step (OneCycleLR with ``cycle_momentum``) probes once, not once a step:

    * **By class**, where the rule's ``update`` can be traced with these values (:mod:`._trace`, the fused
      kernel's trace). Two sets of values share an outcome when they have the same *signature* (every flag,
      string and None exactly; each number's type and IEEE class: sign, zero, subnormal, normal, infinite,
      NaN; tuple or list; the buffers that exist) and belong to the same traced program
      (:func:`._trace.membership`): its scalar arithmetic, run in Python floats as the update runs it,
      gives every comparison the rule made (its guards: ``weight_decay != 0``, ``1 - beta < 0.3``) the
      recorded outcome and raises nowhere (a division by zero, an overflow, a complex power) at each of
      the probe's steps. Why that is sound: the trace hands the update stand-ins that record arithmetic
      and comparisons and refuse any other look at a number (``float()``, ``int()``, ``math.*``, hashing,
      an unknown attribute) or at a tensor (its shape, size or values, an op that is not elementwise).
      So every decision the update takes on a hyper-parameter is one of the recorded comparisons,
      computed by the same float operations as in the probe; values of one class run the update down the
      same branches, calling the same elementwise tensor ops with other scalars, and no scalar can make an
      elementwise op read a shape. What a stand-in does not show — a value's type, its sign of zero, NaN,
      infinity (``math.copysign`` behind ``type(x) is float``) — is in the signature. An update that tests a
      value's type (``type(b) is float and b > 0.7``: the comparison behind the test never meets a
      stand-in) is not traced at all (:mod:`._type_checks`), so it is keyed exactly. lr is a number of the
      program like the others (probed at the group's lr); a tensor lr is probed at its default.
    * **Exactly** otherwise (a tensor hyper-parameter but lr, a rule the trace refuses for these values:
      it reads a shape, branches on the step, converts a hyper-parameter to a number): keyed on
      :func:`exact_key` of every value, lr included and probed at the group's value where it is a number
      (``lr_as_given``, the default); with ``lr_as_given=False`` (the engine, before the fused path, whose
      trace refuses such a rule anyway) lr is left out of the key and probed at its default, so an lr
      schedule does not probe every step.
    """
    if not rule.elementwise:
        return f"rule {rule.name!r} is declared not elementwise"
    screen = outside_reads(rule.update) if screen is None else screen  # (the engine's, read this step)
    if screen.shape:  # whatever this probe finds on its small tensors over a few steps (numel() >= 1e6)
        return f"rule {rule.name!r} reads a tensor's shape by name ({screen.shape})"
    if screen.problem:  # reads what no lookup watches (an object changed in place): no outcome can be kept
        return _probe(rule, _probe_hypers(rule, hypers, lr_as_given))
    _forget_if_outside_changed(rule, screen)
    layout = _layout(rule)
    values = tuple(map(hypers.get, layout.names, layout.defaults))
    moving = tuple(map(hypers.get, layout.moving, layout.moving_defaults))
    last = _LAST.get(id(rule))
    if last is not None and last.rule is rule:
        if all(map(is_, values, last.values)):  # the very same immutable objects: the same values
            if (last.member is None and not lr_as_given) or (last.member is not None
                                                              and all(map(is_, moving, last.moving))):
                return last.answer  # (an exact outcome does not depend on lr)
        if last.member is not None and _still_in(rule, layout, last, values, moving):
            return last.answer
    found = _class_problem(rule, layout, values, moving)
    if found is None:
        return _exact_problem(rule, values, hypers, moving if lr_as_given else None)
    if all(map(is_immutable, values)):
        _LAST[id(rule)] = found
    return found.answer


@dataclass(frozen=True)
class _Layout:
    """A rule's hyper-parameter names and defaults, the lr-like ones (``Hyper.tensor_ok``) apart."""

    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    moving: tuple[str, ...]
    moving_defaults: tuple[Any, ...]
    probed_at: tuple[Any, ...]
    """The value each lr-like hyper-parameter is probed at when it is not a number (a tensor lr)."""


def _layout(rule: Rule) -> _Layout:
    known = _KEYED.get(id(rule))
    if known is None or known[0] is not rule:
        defaults = rule.defaults
        names = tuple(name for name in defaults if name not in rule.tensor_names)
        moving = tuple(name for name in defaults if name in rule.tensor_names)
        known = _KEYED[id(rule)] = (rule, _Layout(
            names, tuple(defaults[name] for name in names), moving, tuple(defaults[name] for name in moving),
            tuple(defaults[name] or 1e-2 for name in moving)))
    return known[1]


@dataclass
class _Class:
    """Values that share one probe outcome (see :func:`shape_problem`): the check that numbers belong
    (:func:`._trace.membership` of their traced program) and the outcome."""

    program: Program
    belongs: Callable[[Sequence[float]], bool]
    answer: str | None


@dataclass
class _Signature:
    """Per rule and signature: the classes found so far, and whether tracing failed for it."""

    rule: Rule
    classes: list[_Class] = field(default_factory=list)
    untraceable: bool = False


@dataclass
class _Last:
    """Per rule, its last outcome and what it was found from (:data:`_LAST`)."""

    rule: Rule
    values: tuple[Any, ...]
    moving: tuple[Any, ...]
    answer: str | None
    member: _Class | None = None
    """None for an exact outcome."""
    numbers: list[float] = field(default_factory=list)
    signatures: tuple[Any, ...] = ()
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Where each numeric hyper-parameter's numbers sit in ``numbers`` (start, count)."""
    buffers: tuple[str, ...] = ()


def _forget_if_outside_changed(rule: Rule, screen: Screen) -> None:
    """Drop every outcome kept for ``rule`` when a value it reads from outside the rule (a module global,
    a closure variable: :mod:`._outside`) is no longer the object it was: the update may now read a
    shape where it did not. (An object changed in place cannot be seen; docs/engine.md.)"""
    now = tuple(map(value_at, screen.locations))
    seen = _OUTSIDE.get(id(rule))
    if seen is not None and seen[0] is rule and len(seen[1]) == len(now) and all(map(is_, now, seen[1])):
        return
    if seen is not None:
        _LAST.pop(id(rule), None)
        for cache in (_CLASSES, _PROBED):
            for key in [key for key in list(cache) if key[0] == id(rule)]:  # (list(): one C call, no
                cache.pop(key, None)  # other thread's insertion in between)
    _OUTSIDE[id(rule)] = (rule, now)


def _exact_problem(rule: Rule, values: tuple[Any, ...], hypers: Mapping[str, Any],
                   moving: tuple[Any, ...] | None = None) -> str | None:
    """The probe's outcome cached per rule and :func:`exact_key` of every value but lr's."""
    if moving is not None:  # probed at the group's lr where it is a number, which is then part of the key
        values = (*values, *(value if type(value) in (float, int) else "at its default" for value in moving))
    key = exact_key(values)
    if key is None:  # a value without an exact key: probe every time
        return _probe(rule, _probe_hypers(rule, hypers, moving is not None))
    known = _PROBED.get((id(rule), key))
    if known is None or known[0] is not rule:
        known = _PROBED[id(rule), key] = (rule, _probe(rule, _probe_hypers(rule, hypers, moving is not None)))
        while len(_PROBED) > PROBED_MAX:
            del _PROBED[next(iter(_PROBED))]
    if all(map(is_immutable, values)):
        if moving is None:  # (an outcome probed at the group's lr is not one for any lr)
            _LAST[id(rule)] = _Last(rule, values, (), known[1])
    return known[1]


def _probed_values(layout: _Layout, values: tuple[Any, ...], moving: tuple[Any, ...]
                   ) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The values the probe runs at (a tensor lr replaced by its probe value), and the signatures of the
    lr-like ones."""
    full = dict(zip(layout.names, values, strict=True))
    signatures = []
    for name, value, probed_at in zip(layout.moving, moving, layout.probed_at, strict=True):
        if type(value) in (float, int):
            full[name] = value
            signatures.append(_signature(value))
        else:
            full[name] = probed_at
            signatures.append(("probed at", type(value)))
    return full, tuple(signatures)


def _class_problem(rule: Rule, layout: _Layout, values: tuple[Any, ...], moving: tuple[Any, ...]) -> _Last | None:
    """The probe's outcome by class (:func:`shape_problem`); None where the values or the rule cannot
    be traced (the caller keys exactly)."""
    try:
        full, moving_signatures = _probed_values(layout, values, moving)
        signatures = (*map(_signature, values), *moving_signatures)
        if None in signatures:
            return None
        math_hypers = {name: full[name] for name in rule.math_names}
        numbers, flat = flatten_hypers(math_hypers)
        buffers = tuple(buffer_names(rule, full))
        key = (id(rule), flat, buffers, signatures)
        entry = _CLASSES.get(key)
    except Exception:  # Unsupported (a tensor hyper-parameter), an odd value: key exactly
        return None
    if entry is None or entry.rule is not rule:
        entry = _CLASSES[key] = _Signature(rule)
        while len(_CLASSES) > PROBED_MAX:
            del _CLASSES[next(iter(_CLASSES))]
    found = next((member for member in entry.classes if member.belongs(numbers)), None)
    if found is None:
        if entry.untraceable:  # (also when the first values' own arithmetic raised: keyed exactly, as before)
            return None
        try:
            program = trace(rule.update, math_hypers, buffers, bool(full["maximize"]),
                            1.0 if rule.counts_steps else None)
        except Unsupported:
            entry.untraceable = True
            return None
        belongs = membership(program, tuple(map(float, range(1, PROBE_STEPS + 1))) if rule.counts_steps else ())
        if not belongs(numbers):  # its arithmetic raises at a later probe step: key these values exactly
            return None
        found = _Class(program, belongs, _probe(rule, full))
        entry.classes.append(found)
        del entry.classes[:-CLASSES_MAX]
    return _Last(rule, values, moving, found.answer, found, numbers, signatures, _slots(flat), buffers)


def _still_in(rule: Rule, layout: _Layout, last: _Last, values: tuple[Any, ...], moving: tuple[Any, ...]) -> bool:
    """Whether values that differ from ``last``'s only in numbers of the same signature stay in its class
    (then they replace ``last``): the class's check on the new numbers, without tracing or keying."""
    numbers = last.numbers
    for index, (new, old) in enumerate(zip((*values, *moving), (*last.values, *last.moving), strict=True)):
        if new is old:
            continue
        is_moving = index >= len(values)
        if not is_moving and not is_immutable(new):
            return False
        signature = (_signature(new) if not is_moving or type(new) in (float, int)
                     else ("probed at", type(new)))
        if signature is None or signature != last.signatures[index]:
            return False
        name = layout.moving[index - len(values)] if is_moving else layout.names[index]
        slot = last.slots.get(name)
        if slot is not None and signature[0] != "probed at":  # (a tensor lr's slot holds its probe value)
            if numbers is last.numbers:
                numbers = list(numbers)
            start, count = slot
            if count == 1:
                numbers[start] = float(new)
            else:
                numbers[start:start + count] = map(float, new)
    full, _ = _probed_values(layout, values, moving)
    if tuple(buffer_names(rule, full)) != last.buffers or not last.member.belongs(numbers):  # type: ignore[union-attr]
        return False
    _LAST[id(rule)] = replace(last, values=values, moving=moving, numbers=numbers)  # (a new entry: never half-updated)
    return True


def _slots(flat: tuple[Any, ...]) -> dict[str, tuple[int, int]]:
    """Where each numeric hyper-parameter's numbers sit in :func:`._trace.flatten_hypers`'s list."""
    slots, index = {}, 0
    for item in flat:
        if item[1] == "number":
            slots[item[0]] = (index, 1)
            index += 1
        elif item[1] == "numbers":
            slots[item[0]] = (index, item[2])
            index += item[2]
    return slots


def _signature(value: Any) -> Any:
    """What the trace's stand-ins do not show of a value (see :func:`shape_problem`): a flag, string or
    None exactly; a number's type and IEEE class; a tuple's or list's type and its items'. None for any
    other value (the caller keys it exactly)."""
    kind = type(value)
    if kind is float or (kind is int and -_INT_MAX <= value <= _INT_MAX):
        if value != value:
            return kind, "nan", math.copysign(1.0, value) < 0
        if value == 0:
            return kind, "zero", math.copysign(1.0, value) < 0
        size = abs(value)
        return kind, "inf" if size == math.inf else "subnormal" if size < _TINY else "normal", value < 0
    if kind is bool or kind is str or value is None:
        return kind, value
    if kind is tuple or kind is list:
        items = tuple(map(_signature, value))
        return None if None in items else (kind, items)
    return None


_INT_MAX = 1 << 53
_TINY = sys.float_info.min
_OUTSIDE: dict[int, tuple[Rule, tuple[Any, ...]]] = {}
"""Per rule, the values from outside it that its kept outcomes were found with."""
_CLASSES: dict[tuple[Any, ...], _Signature] = {}
CLASSES_MAX = 16
"""Classes kept per signature (the oldest dropped first); signatures kept: :data:`PROBED_MAX`."""
_PROBED: dict[tuple[int, Any], tuple[Rule, str | None]] = {}
PROBED_MAX = 256
"""Exact outcomes kept, and signatures kept (the oldest dropped first): values that cannot be traced and
move every step would otherwise keep one per step."""
_LAST: dict[int, _Last] = {}
"""Per rule, its last outcome, with the values it was found for when each is an immutable object (held,
so its identity is not reused; a tensor lr, probed at its default, may be any object): the same objects
again give it without building a key; values moved within their class, after the class's check."""
_KEYED: dict[int, tuple[Rule, _Layout]] = {}


_SIMPLE = frozenset((bool, int, str, type(None)))
_MAX_KEYED_NUMEL = 64


def exact_key(value: Any) -> Any:
    """A hashable key equal for two values exactly when they are the same value of the same type (so
    -0.0 and 0.0, True and 1, 1 and 1.0, a float and a 0-dim tensor, (0.9, 0.999) and [0.9, 0.999] all
    differ; every NaN is one), or None for a value without one (an object of another type)."""
    kind = type(value)
    if kind is float:
        return float, value.hex()
    if kind in _SIMPLE:
        return kind, value
    if kind is tuple or kind is list:
        items = tuple(map(exact_key, value))
        return None if None in items else (kind, items)
    if isinstance(value, torch.Tensor):
        if value.numel() > _MAX_KEYED_NUMEL or value.is_complex() or type(value) not in (torch.Tensor,
                                                                                        torch.nn.Parameter):
            return None
        try:
            items = tuple(map(exact_key, value.detach().cpu().reshape(-1).tolist()))
        except Exception:  # a meta tensor, ...: no values to key
            return None
        return None if None in items else (kind, value.dtype, value.device, tuple(value.shape),
                                           value.requires_grad, items)
    if isinstance(value, float):  # a subclass (numpy.float64): its type and its value
        return kind, float(value).hex()
    if isinstance(value, int):
        return kind, int(value)
    return None


def is_immutable(value: Any) -> bool:
    """Whether ``value`` can never hold another value: a plain number, flag, string or None, or a tuple
    of those."""
    kind = type(value)
    return kind is float or kind in _SIMPLE or (kind is tuple and all(map(is_immutable, value)))


def _probe_hypers(rule: Rule, hypers: Mapping[str, Any], lr_as_given: bool = False) -> dict[str, Any]:
    """The values the probe runs with: the group's, lr-like ones at their default (or, ``lr_as_given``,
    the group's where it is a number: a tensor lr is probed at its default)."""
    values = {name: hypers.get(name, default) for name, default in rule.defaults.items()}
    for name in rule.tensor_names:
        default = rule.hyper(name).default
        given = values[name]
        if not (lr_as_given and type(given) in (float, int)):
            values[name] = default if default else 1e-2
    return values


@torch.no_grad()
def _probe(rule: Rule, hypers: dict[str, Any]) -> str | None:
    names = buffer_names(rule, hypers)
    math = {name: hypers[name] for name in rule.math_names}
    generator = torch.Generator().manual_seed(0)

    def randn(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)

    def start(params: Tensors) -> States:
        return [{b.name: (b.init(p, hypers) if b.init is not None else None)
                 for b in rule.buffers if b.exists(hypers)} for p in params]

    params, twins = [randn(s) for s in SHAPES], [randn(s) for s in SHAPES]
    states, twin_states = start(params), start(twins)
    for t in range(1, PROBE_STEPS + 1):
        step = float(t) if rule.counts_steps else None

        def stepper(param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor | None],
                    step: float | None = step) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
            new_param = param.clone()
            new_state = {k: (v.clone() if v is not None else None) for k, v in state.items()}
            apply_update(rule, new_param, grad, new_state, names, math, step)
            return new_param, new_state

        grads, twin_grads = [randn(s) for s in SHAPES], [randn(s) for s in SHAPES]
        try:
            reference = [stepper(p, g, s) for p, g, s in zip(params, grads, states, strict=True)]
            twin_reference = [stepper(p, g, s) for p, g, s in zip(twins, twin_grads, twin_states, strict=True)]
        except Exception as error:
            return f"rule {rule.name!r} fails on the shape probe's float64 tensors ({type(error).__name__}: {error})"
        for form_name, form in FORMS.items():
            try:
                got, got_states = form(stepper, params, grads, states, twins, twin_grads, twin_states)
            except Exception as error:
                return (f"rule {rule.name!r} fails when its tensors are {form_name} "
                        f"({type(error).__name__}: {str(error)[:200]})")
            expected = reference + (twin_reference if form_name == "stacked" else [])
            for index, ((want, want_state), have, have_state) in enumerate(
                    zip(expected, got, got_states, strict=True)):
                bad = _differs(want, have) or any(_differs(want_state[k], have_state.get(k)) for k in want_state)
                if bad:
                    shape = SHAPES[index % len(SHAPES)]
                    return (f"rule {rule.name!r} gives other numbers on a tensor of shape {shape} when it is "
                            f"{form_name} (its update reads a tensor's shape or size, or is not elementwise)")
        params, states = [p for p, _ in reference], [s for _, s in reference]
        twins, twin_states = [p for p, _ in twin_reference], [s for _, s in twin_reference]
    return None


def _differs(want: torch.Tensor | None, have: torch.Tensor | None) -> bool:
    if want is None or have is None:
        return (want is None) != (have is None)
    return want.shape != have.shape or not torch.allclose(have, want, rtol=RTOL, atol=ATOL, equal_nan=True)


def _flat(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.reshape(-1)


def _like(value: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    return None if value is None else value.reshape(shape)


def _flattened(stepper: Stepper, params: Tensors, grads: Tensors, states: States, *twins: Any
               ) -> tuple[Tensors, States]:
    out_params, out_states = [], []
    for param, grad, state in zip(params, grads, states, strict=True):
        new_param, new_state = stepper(param.reshape(-1), grad.reshape(-1), {k: _flat(v) for k, v in state.items()})
        out_params.append(new_param.reshape(param.shape))
        out_states.append({k: _like(v, param.shape) for k, v in new_state.items()})
    return out_params, out_states


def _sliced(stepper: Stepper, params: Tensors, grads: Tensors, states: States, *twins: Any
            ) -> tuple[Tensors, States]:
    out_params, out_states = [], []
    for param, grad, state in zip(params, grads, states, strict=True):
        flat_state = {k: _flat(v) for k, v in state.items()}
        pieces = [stepper(param.reshape(-1)[a:a + SLICE], grad.reshape(-1)[a:a + SLICE],
                          {k: (None if v is None else v[a:a + SLICE]) for k, v in flat_state.items()})
                  for a in range(0, max(1, param.numel()), SLICE)]
        out_params.append(torch.cat([p for p, _ in pieces]).reshape(param.shape))
        out_states.append({k: _joined([s[k] for _, s in pieces], param.shape) for k in pieces[0][1]})
    return out_params, out_states


def _concatenated(stepper: Stepper, params: Tensors, grads: Tensors, states: States, *twins: Any
                  ) -> tuple[Tensors, States]:
    sizes = [p.numel() for p in params]
    state = {k: _joined([_flat(s[k]) for s in states], None) for k in states[0]}
    new_param, new_state = stepper(torch.cat([p.reshape(-1) for p in params]),
                                   torch.cat([g.reshape(-1) for g in grads]), state)
    out_params = [part.reshape(p.shape) for part, p in zip(new_param.split(sizes), params, strict=True)]
    out_states: States = [{} for _ in params]
    for k, v in new_state.items():
        for i, p in enumerate(params):
            out_states[i][k] = None if v is None else v.split(sizes)[i].reshape(p.shape)
    return out_params, out_states


def _stacked(stepper: Stepper, params: Tensors, grads: Tensors, states: States, twins: Tensors,
             twin_grads: Tensors, twin_states: States) -> tuple[Tensors, States]:
    ones, others = [], []
    for rows in zip(params, grads, states, twins, twin_grads, twin_states, strict=True):
        param, grad, state, twin, twin_grad, twin_state = rows
        pair = {k: (None if v is None else torch.stack([v, twin_state[k]])) for k, v in state.items()}
        new_param, new_state = stepper(torch.stack([param, twin]), torch.stack([grad, twin_grad]), pair)
        ones.append((new_param[0], {k: (None if v is None else v[0]) for k, v in new_state.items()}))
        others.append((new_param[1], {k: (None if v is None else v[1]) for k, v in new_state.items()}))
    rows = ones + others
    return [p for p, _ in rows], [s for _, s in rows]


def _joined(values: list[torch.Tensor | None], shape: torch.Size | None) -> torch.Tensor | None:
    if any(v is None for v in values):
        if not all(v is None for v in values):
            raise ValueError("a buffer came back for some pieces and not for others")
        return None
    joined = torch.cat([v.reshape(-1) for v in values if v is not None])
    return joined if shape is None else joined.reshape(shape)


FORMS: dict[str, Form] = {"flattened": _flattened, "sliced": _sliced, "concatenated": _concatenated,
                          "stacked": _stacked}
