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

from collections.abc import Callable, Mapping, Sequence
from operator import is_
from typing import Any

import torch

from ._eager import apply_update
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


def shape_problem(rule: Rule, hypers: Mapping[str, Any]) -> str | None:
    """Why ``rule`` with these hyper-parameters gives other numbers on a reshaped, sliced,
    concatenated or stacked tensor than on the tensor itself, or None when it gives the same.

    ``hypers`` is a param group (or a registry entry's defaults). The hyper-parameters that move every
    step (``Hyper.tensor_ok``: lr) are probed at their declared default and are not part of the
    cache key; the result is cached per rule and the values of the others. Checks the declaration too:
    a rule declared ``elementwise=False`` is refused without probing."""
    if not rule.elementwise:
        return f"rule {rule.name!r} is declared not elementwise"
    names, defaults = _keyed(rule)
    values = tuple(map(hypers.get, names, defaults))
    last = _LAST.get(id(rule))
    if last is not None and last[0] is rule and all(map(is_, values, last[1])):
        return last[2]  # the very same immutable objects as the last call: the same values
    key = exact_key(values)
    if key is None:  # a value without an exact key: probe every time
        return _probe(rule, _probe_hypers(rule, hypers))
    known = _PROBED.get((id(rule), key))
    if known is None or known[0] is not rule:
        known = _PROBED[id(rule), key] = (rule, _probe(rule, _probe_hypers(rule, hypers)))
        while len(_PROBED) > PROBED_MAX:  # a schedule of betas (OneCycleLR) makes a new key every step
            del _PROBED[next(iter(_PROBED))]
    if all(map(is_immutable, values)):
        _LAST[id(rule)] = (rule, values, known[1])
    return known[1]


_PROBED: dict[tuple[int, Any], tuple[Rule, str | None]] = {}
PROBED_MAX = 256
"""Probe outcomes kept (the oldest dropped first): a scheduler that moves a keyed value every step
(OneCycleLR cycles Adam's betas) would otherwise keep one per step."""
_LAST: dict[int, tuple[Rule, tuple[Any, ...], str | None]] = {}
"""Per rule, the values of its last probe's key, when each is an immutable object (held, so its identity
is not reused), and the outcome: the same objects again skip building the key."""
_KEYED: dict[int, tuple[Rule, tuple[str, ...], tuple[Any, ...]]] = {}


def _keyed(rule: Rule) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The names (sorted) and defaults of the hyper-parameters in the probe's key: all but lr."""
    known = _KEYED.get(id(rule))
    if known is None or known[0] is not rule:
        defaults = rule.defaults
        names = tuple(sorted(name for name in defaults if name not in rule.tensor_names))
        known = _KEYED[id(rule)] = (rule, names, tuple(defaults[name] for name in names))
    return known[1], known[2]


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


def _probe_hypers(rule: Rule, hypers: Mapping[str, Any]) -> dict[str, Any]:
    values = {name: hypers.get(name, default) for name, default in rule.defaults.items()}
    for name in rule.tensor_names:
        default = rule.hyper(name).default
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
