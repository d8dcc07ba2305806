"""One rule stepping k configurations at once: every tensor carries them along dimension 0.

A batched race trains k copies of a model that differ in learning rate and seed. Their parameters
are stacked (``w`` of shape ``[k, *shape]``), and so are their gradients and the rule's buffers; the
rule's own ``update`` runs once on the stacks, with ``lr`` the column ``γ`` of shape
``[k, 1, ..., 1]`` (γ_i is configuration i's lr) and every other hyper-parameter shared. For an
elementwise rule written with :mod:`.ops` (``add_scaled``, ``add_ratio``) or plain broadcasting
arithmetic, row i of the result is exactly what the rule computes for configuration i alone:

    w_i ← update(w_i, g_i, state_i; γ_i, β, ...)   for every i, in one call

There is no second copy of any rule's math: the stacked step calls :func:`._eager.apply_update`,
the core's own call-check-write-back. :func:`stacking_problem` checks a rule against its
one-at-a-time core before a race relies on it, so a rule that is not elementwise, reads ``lr`` as
one number, or raises on a tensor ``lr`` is found out (and trained one run at a time) instead of
computing updates torch.optim would not.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._eager import apply_update
from ._fused_stacked import StepCache, stacked_step
from ._outside import outside_reads, value_at, values_now
from .probe import shape_problem
from .rule import Rule, buffer_names

PROBE_STEPS = 3
PROBE_TOLERANCE = 1e-6
"""Relative tolerance of :func:`stacking_problem` (float64 probe: a stacked rule differs from its core
by a few ulps of reordered products at most; a rule that mixes configurations differs by O(1))."""


class StackedRule:
    """The state and the step of ``rule`` for stacked parameters (see the module docstring).

    ``hypers`` holds every hyper-parameter of one param group (the registry entry's defaults and
    preset); its ``lr`` is ignored (each step is given the k learning rates). ``state[j]`` holds
    the buffers of ``params[j]``, stacked like it; the step count t is shared (the k configurations
    start together and step together).
    """

    def __init__(self, rule: Rule, hypers: Mapping[str, Any], params: Sequence[torch.Tensor],
                 fused: bool = True) -> None:
        self.rule, self.hypers, self.fused = rule, dict(hypers), fused
        self.math = {name: self.hypers[name] for name in rule.math_names}
        self.names = buffer_names(rule, self.hypers)
        self.step_count = 0
        self.outside: tuple[Any, ...] | None = values_now(rule.update)
        """What the rule read from outside it when stacked (:mod:`._outside`); None once that moved."""
        self.cache = StepCache()
        """What the fused step reads again at the next step (:class:`._fused_stacked.StepCache`)."""
        self.state: list[dict[str, torch.Tensor]] = []
        for param in params:
            state = {}
            for buffer in rule.buffers:
                if buffer.init is not None and buffer.exists(self.hypers):
                    state[buffer.name] = buffer.init(param.detach(), self.hypers)
            self.state.append(state)

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
             lr: torch.Tensor | float) -> None:
        """One update of every configuration: ``params[j][i]`` with gradient ``grads[j][i]`` and
        learning rate ``lr[i]`` (a 1-d tensor of k values). ``params[j]`` is updated in place (it
        may be a view, e.g. the rows of one optimizer in a stack holding several). A number ``lr``
        is the core's own step of one configuration on unstacked tensors, as a param group gives it."""
        step = None
        if self.rule.counts_steps:
            self.step_count += 1
            step = float(self.step_count)
        if isinstance(lr, torch.Tensor) and lr.dim() == 1 and self._outside_moved():
            self._step_rows(params, grads, lr.tolist(), step)
            return
        left = None
        if self.fused and isinstance(lr, torch.Tensor) and lr.dim() == 1:  # one pass, each row its own lr
            left = stacked_step(self.rule, self.math, self.names, bool(self.hypers.get("maximize")), params, grads,
                                self.state, lr.tolist(), step, self.cache)
        for j, (param, grad, state) in enumerate(zip(params, grads, self.state, strict=True)):
            if grad is None or (left is not None and j not in left):
                continue
            if self.hypers.get("maximize"):
                grad = -grad
            column = lr
            if isinstance(lr, torch.Tensor):
                extra = 1 if torch.is_complex(param) else 0  # the core views a complex tensor as real pairs
                column = lr.to(param.real.dtype).view(-1, *([1] * (param.dim() - 1 + extra)))
            apply_update(self.rule, param, grad, state, self.names, {**self.math, "lr": column}, step)

    def _outside_moved(self) -> bool:
        """Whether a value the rule reads from outside it changed since it was stacked: the stacking check
        (:func:`stacking_problem`) was made with the old one (a rule that reads ``param.dim()`` only when a
        global flag is set), so from then on every configuration steps alone."""
        if self.outside is not None:
            now = values_now(self.rule.update)
            if len(now) != len(self.outside) or not all(map(operator.is_, now, self.outside)):
                self.outside = None
        return self.outside is None

    def _step_rows(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], lrs: list[float],
                   step: float | None) -> None:
        """Each configuration's core step on its own rows, its lr a number: its per-run twin's update."""
        for param, grad, state in zip(params, grads, self.state, strict=True):
            if grad is None:
                continue
            if self.hypers.get("maximize"):
                grad = -grad
            rows = []
            for i, lr in enumerate(lrs):
                row = {name: value[i] for name, value in state.items()}
                apply_update(self.rule, param[i], grad[i], row, self.names, {**self.math, "lr": lr}, step)
                rows.append(row)
            for name in self.names:  # a buffer made at this step (lazy): the rows' own, stacked
                if name not in state and all(name in row for row in rows):
                    state[name] = torch.stack([row[name] for row in rows])

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the configurations at ``index`` (a 1-d index tensor), in that order, each buffer in
        the layout it had (:func:`rows_in_layout`)."""
        self.cache = StepCache()
        for state in self.state:
            for name, value in state.items():
                state[name] = rows_in_layout(value, index)


def rows_in_layout(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``value``'s rows at ``index`` (no more than it has), stored in ``value``'s own layout.

    ``index_select`` returns the default layout, while a buffer is made like its parameter
    (``zeros_like``), which for a batched-matmul weight is transposed inside each configuration's block.
    A buffer whose layout is not its parameter's cannot be stepped by the fused kernel
    (:func:`._fused_stacked.blocks_of`), so once a run left the stack its batchmates' weights would be
    stepped by the rule's update on the stacks instead: other bits than before it left, so a run's
    numbers would depend on when its batchmates stop (docs/batched.md, "Run-to-run variation")."""
    rows = value.index_select(0, index.to(value.device))
    if rows.stride() == value.stride() or value.dim() < 2 or len(rows) == 0:
        return rows
    kept = torch.empty_like(value.narrow(0, 0, len(rows)), memory_format=torch.preserve_format)
    return kept.copy_(rows)


def stacking_problem(rule: Rule, hypers: Mapping[str, Any]) -> str | None:
    """Why ``rule`` with these hyper-parameters cannot be stacked, or None when it can.

    The rule is run for :data:`PROBE_STEPS` steps on random float64 tensors, once stacked (two
    configurations with different lrs) and once per configuration through the core, on the unstacked
    tensors with its lr as a number (in the hypers its buffers start from too); parameters and buffers
    must agree within :data:`PROBE_TOLERANCE`. So a rule that starts a buffer from lr is found out too.
    Then :func:`.probe.shape_problem` (stacking turns a conv kernel ``[o, i, h, w]`` into
    ``[k, o, i, h, w]``): a rule that reads a tensor's shape (``param.dim()``) on any rank from 0 to 5
    is found out. Cached per rule and hyper-parameters while the places the rule reads from outside it
    hold the same objects (:mod:`._outside`); a rule that reads what no place watches (an object changed
    in place) is probed at every call (once per race plan)."""
    if not rule.elementwise:
        return f"rule {rule.name!r} is declared not elementwise"
    try:
        key = (id(rule), tuple(sorted((k, repr(v)) for k, v in hypers.items())))
    except Exception:  # an unprintable value: probe every time
        return _probe(rule, dict(hypers)) or shape_problem(rule, hypers)
    screen = outside_reads(rule.update)
    if screen.problem:  # reads what no lookup watches (an object changed in place): no outcome can be kept
        return _probe(rule, dict(hypers)) or shape_problem(rule, hypers)
    now = tuple(value_at(location) for location in screen.locations)
    known = _PROBED.get(key)
    if known is None or known[0] is not rule or len(known[1]) != len(now) or not all(map(operator.is_, now, known[1])):
        known = _PROBED[key] = (rule, now, _probe(rule, dict(hypers)) or shape_problem(rule, hypers))
    return known[2]


_PROBED: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Rule, tuple[Any, ...], str | None]] = {}
"""Per rule and hyper-parameters: the values it read from outside it (:mod:`._outside`) and the outcome."""


def _probe(rule: Rule, hypers: dict[str, Any]) -> str | None:
    generator = torch.Generator().manual_seed(0)
    lrs = (3e-2, 1e-3)
    shapes = ((3, 4), (5,))

    def tensor(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    alone = [[tensor(s) for s in shapes] for _ in lrs]
    stacked = [torch.stack([alone[i][j] for i in range(len(lrs))]) for j in range(len(shapes))]
    try:
        # the core one configuration at a time: unstacked tensors, and the group's hypers with its own lr
        # the rule's own update on the stacks (what runs whenever the fused kernel does not, _fused_stacked)
        reference = [StackedRule(rule, {**hypers, "lr": lr}, alone[i], fused=False) for i, lr in enumerate(lrs)]
        together = StackedRule(rule, hypers, stacked, fused=False)
        for _ in range(PROBE_STEPS):
            grads = [[tensor(s) for s in shapes] for _ in lrs]
            for i, lr in enumerate(lrs):
                reference[i].step(alone[i], grads[i], lr)
            together.step(stacked, [torch.stack([grads[i][j] for i in range(len(lrs))]) for j in range(len(shapes))],
                          torch.tensor(lrs, dtype=torch.float64))
    except Exception as error:  # a rule that cannot take a tensor lr (alpha=lr, float(lr), ...)
        return f"rule {rule.name!r} fails on stacked tensors ({type(error).__name__}: {error})"
    for j, param in enumerate(stacked):
        for i in range(len(lrs)):
            if not torch.allclose(param[i], alone[i][j], rtol=PROBE_TOLERANCE, atol=1e-12):
                return (f"rule {rule.name!r} gives other numbers on stacked tensors than one configuration at a "
                        "time (it is not elementwise, or reads lr as one number)")
            for name, value in together.state[j].items():
                single = reference[i].state[j].get(name)
                if single is None or not torch.allclose(value[i], single, rtol=PROBE_TOLERANCE, atol=1e-12):
                    return f"rule {rule.name!r}: its buffer {name!r} differs when configurations are stacked"
    return None

