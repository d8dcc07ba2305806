"""The fast engine: one flat buffer per (param group, device, dtype), one update per step.

For every elementwise rule (built-in or a user's own) the engine keeps, per bucket of a param
group's parameters that share a device and a floating dtype, contiguous 1-D buffers holding

    params | each state buffer        (each parameter a slice [offset, offset + numel))
    grads of the small parameters     (:data:`OWN_GRAD_NUMEL`; the big ones keep their own .grad)

(on CPU, from 32 MiB up, on transparent huge pages: :mod:`._pages`) and re-points ``p.data``, ``p.grad``
(small parameters) and ``optimizer.state[p][name]`` to views of them, so ``model.parameters()`` are the
same Parameter objects, ``state_dict()`` has torch's keys and per-parameter shapes, and no second copy
of parameters, gradients or state is kept. A step is the
rule's own pure ``update`` applied once to the small parameters' run of the flat buffers and once to
each big parameter's slice (elementwise rules give the same numbers per element whatever the
tensor's shape), then written back in place:

* compiled: ``torch.compile(dynamic=True, fullgraph=True)`` of that update, one compilation per
  (rule, static hyper-parameters, buffers present, maximize, dtype, device) — ``lr``-like
  hyper-parameters (``Hyper.tensor_ok``) and the step count go in as 0-dim float64 tensors, so a
  scheduler changing ``lr`` every step never recompiles; the backend (:mod:`._compile`) splits off
  the math on those scalars alone (Adam's bias corrections, the step size) and runs it once per
  step, so Inductor's element loop does only per-element work; once dynamo has served a bucket size,
  the engine calls that graph directly (:mod:`._direct`), skipping dynamo's per-call guards;
* uncompiled: the same update run by torch's eager kernels over cache-sized chunks of the flat
  buffer (a handful of big ops instead of one set per tensor; chunking keeps the temporaries small).

Which one (``set_engine`` or the ``DESCENTLAB_COMPILE`` environment variable, default ``auto``):
``auto`` compiles a bucket of at least :data:`AUTO_COMPILE_NUMEL` elements (compilation costs
seconds to tens of seconds on a 2-core CPU, repaid only by big models or long runs; see
benchmarks/flat_engine.py), otherwise runs uncompiled; ``compiled`` / ``flat`` force one; ``eager``
forces the per-tensor reference path. Half-precision parameters stay on the per-tensor path: torch's
own bfloat16/float16 kernels round differently (FMA or not) on long and short tensors, so a flat
buffer would change results by one unit in the last place.

Whatever the engine cannot take this step falls back to the per-tensor path (:func:`eager_step`),
which works on the same views: a group with ``fused=False``, ``foreach=False`` or
``differentiable=True`` (the torch switches that ask for the per-tensor path), a non-elementwise rule,
complex/sparse/half-precision/odd-device parameters, a step where some gradient is None, state not yet
created (the first step, lazy buffers such as SGD's momentum) and parameters whose step counts
differ. Gradients: a parameter of :data:`OWN_GRAD_NUMEL` elements or more is stepped on its own
``.grad`` wherever autograd left it (one more update call); smaller ones are staged in the flat
gradient buffer, so a fresh gradient tensor (after ``zero_grad(set_to_none=True)``) is copied into it
and ``p.grad`` re-pointed at its view. ``load_state_dict``, a replaced ``p.data`` and
hyper-parameter changes that add or remove buffers are detected and re-bound.
"""

from __future__ import annotations

import itertools
import operator
import os
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _native
from ._compile import hoisting_backend
from ._direct import Captured, capture, direct_call
from ._eager import check_result, eager_step
from ._native import NATIVE_CHECK_PARAMS
from ._pages import new_flat
from ._state import needs_state
from .rule import Rule, buffer_names

AUTO_COMPILE_NUMEL = 4_000_000
"""``auto`` compiles buckets at least this big (elements)."""
OWN_GRAD_NUMEL = 1 << 18
"""Parameters at least this big (elements) are stepped on their own gradient tensor, wherever autograd
left it; smaller ones have their gradients staged in the bucket's flat gradient buffer and are
stepped together in one pass. After ``zero_grad()`` (``set_to_none=True``, torch's default) every
gradient is a fresh tensor, and staging it means a copy: 4-7 ms for 20M float32 elements (0.2-0.37
ns each), where one more update call costs 9-37 us (benchmarks/step_overheads.py), so staging costs
more above about 50K elements. With gradients kept between steps (``set_to_none=False``) staging is
free and the extra call is not: 40 tensors of 500K elements step at 0.90x torch fused on their own
gradients and 0.98-1.05x staged (benchmarks/fresh_grads.py, and with ``--all-staged``). Hence the
threshold sits above the break-even: 256K elements (1 MiB of float32)."""
CHUNK_BYTES = 256 * 1024
"""Uncompiled path on CPU: chunk size of the flat update, small enough for the allocator to reuse."""
MODES = ("auto", "compiled", "flat", "eager")
FLAT_DTYPES = (torch.float32, torch.float64)
STATS: dict[str, int] = {"compiles": 0, "hoisted": 0, "compiled_steps": 0, "direct_steps": 0, "flat_steps": 0}
"""Counters: ``compiles`` grows by one per graph the compiler builds (the recompilation check),
``hoisted`` by one per graph whose per-step scalar math was split off (see :mod:`._compile`),
``direct_steps`` by one per compiled step that skipped dynamo (see :mod:`._direct`)."""

_ATTR = "_descentlab_flat_engine"


def set_engine(optimizer: torch.optim.Optimizer, mode: str) -> None:
    """Choose the engine of ``optimizer``: ``auto``, ``compiled``, ``flat`` or ``eager``."""
    if mode not in MODES:
        raise ValueError(f"engine mode must be one of {', '.join(MODES)}, got {mode!r}")
    _engine(optimizer).mode = mode


def engine_mode(optimizer: torch.optim.Optimizer) -> str:
    return _engine(optimizer).mode


def flat_step(optimizer: Any, group: MutableMapping[str, Any]) -> bool:
    """Step ``group`` on the flat engine; False when the caller must use the per-tensor path."""
    rule: Rule = optimizer.rule
    engine = _engine(optimizer)
    if engine.mode == "eager" or not rule.elementwise or _asks_for_per_tensor(group):
        return False
    plan = engine.plans.get(id(group))
    if plan is None or plan.params_list is not group["params"] or len(plan.params) != len(group["params"]):
        plan = engine.plans[id(group)] = _Plan.build(group)
        engine.plans = {k: v for k, v in engine.plans.items() if any(id(g) == k for g in optimizer.param_groups)}
    # the common case (zero_grad(set_to_none=False) loops): every .grad already is our view and every
    # parameter still lives in its slice, checked in one pass; otherwise look for missing or sparse
    # gradients before binding anything
    bound = [bucket.bound_as_before(native=bucket._compile(engine.mode)) for bucket in plan.buckets]
    parts: list[list[torch.Tensor | None]] = [[] for _ in plan.buckets]
    fresh = [False] * len(plan.buckets)
    if not all(bound):
        grads = [p.grad for p in plan.params]
        start = 0
        for i, bucket in enumerate(plan.buckets):
            parts[i] = grads[start:start + len(bucket.params)]
            start += len(bucket.params)
            fresh[i] = not bucket.grads_in_place(parts[i])
        if any(fresh):
            if any(g is None for g in grads):
                return False
            if any(g.layout != torch.strided for g in grads if g is not None):
                return False  # the per-tensor path raises its clear sparse-gradient error
    names = tuple(buffer_names(rule, group))
    stateful = needs_state(rule, group)
    for bucket, params_bound in zip(plan.buckets, bound, strict=True):
        if not bucket.ready(optimizer.state, rule, names, stateful, params_bound):
            return False
    for bucket, part, is_fresh in zip(plan.buckets, parts, fresh, strict=True):
        if is_fresh:
            bucket.sync_grads(part)
    if rule.counts_steps and not all(b.uniform_steps() for b in plan.buckets):
        return False
    for bucket in plan.buckets:
        bucket.update(rule, group, names, engine)
    if plan.leftover:
        eager_step(rule, {**group, "params": plan.leftover}, optimizer.state, type(optimizer).__name__)
    return True


# -- internals -------------------------------------------------------------------------------
@dataclass
class _Engine:
    mode: str = field(default_factory=lambda: os.environ.get("DESCENTLAB_COMPILE", "auto"))
    plans: dict[int, _Plan] = field(default_factory=dict)
    variants: dict[tuple[Any, ...], set[tuple[Any, ...]]] = field(default_factory=dict)
    """Per kernel family, the static hyper-parameter sets this optimizer has compiled."""
    warned: set[tuple[Any, ...]] = field(default_factory=set)
    """Kernel families whose further variants this optimizer has said it runs uncompiled."""

    def may_compile(self, kernel: _Kernel) -> bool:
        """Compile at most :data:`MAX_COMPILED_VARIANTS` variants per family; beyond that a scheduler
        is moving a static hyper-parameter (OneCycleLR cycles momentum / betas) and compiling each
        new value would cost seconds per step: run those uncompiled, and say so once."""
        seen = self.variants.setdefault(kernel.family, set())
        if kernel.key in seen:
            return True
        if len(seen) < MAX_COMPILED_VARIANTS:
            seen.add(kernel.key)
            return True
        if kernel.family not in self.warned:
            self.warned.add(kernel.family)
            warnings.warn(f"descentlab: rule {kernel.rule_name!r} has seen more than {MAX_COMPILED_VARIANTS} sets "
                          "of values of its static hyper-parameters (all but lr): a scheduler is moving one of "
                          "them, so new values run on the uncompiled flat engine instead of recompiling at each "
                          "step", RuntimeWarning, stacklevel=5)
        return False

    def __post_init__(self) -> None:
        aliases = {"1": "compiled", "0": "flat", "": "auto"}
        self.mode = aliases.get(self.mode, self.mode)
        if self.mode not in MODES:
            raise ValueError(f"DESCENTLAB_COMPILE must be one of {', '.join(MODES)}, 1 or 0, got {self.mode!r}")


def _engine(optimizer: Any) -> _Engine:
    engine = optimizer.__dict__.get(_ATTR)
    if engine is None:
        engine = _Engine()
        setattr(optimizer, _ATTR, engine)
    return engine


def _asks_for_per_tensor(group: Mapping[str, Any]) -> bool:
    return group.get("fused") is False or group.get("foreach") is False or bool(group.get("differentiable"))


@dataclass
class _Plan:
    params_list: list[torch.Tensor]
    params: list[torch.Tensor]
    buckets: list[_Bucket]
    leftover: list[torch.Tensor]

    @classmethod
    def build(cls, group: Mapping[str, Any]) -> _Plan:
        by_key: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        leftover = []
        for p in group["params"]:
            if p.dtype in FLAT_DTYPES and p.layout == torch.strided and p.device.type in ("cpu", "cuda"):
                by_key.setdefault((p.device, p.dtype), []).append(p)
            else:
                leftover.append(p)
        buckets = [_Bucket(ps) for ps in by_key.values()]
        return cls(group["params"], [p for b in buckets for p in b.params], buckets, leftover)


class _Bucket:
    """Parameters of one group sharing a device and dtype, with their flat buffers."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        # small parameters first, so their staged gradients form one run (see OWN_GRAD_NUMEL)
        small = [p for p in params if p.numel() < OWN_GRAD_NUMEL]
        self.params = small + [p for p in params if p.numel() >= OWN_GRAD_NUMEL]
        self.staged = len(small)
        """Parameters ``[0, staged)`` have their gradients staged in ``flat_g``; the rest own theirs."""
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.total = self.offsets[-1]
        self.staged_total = self.offsets[self.staged]
        self.dtype, self.device = params[0].dtype, params[0].device
        self.flat_p: torch.Tensor | None = None
        self.flat_g: torch.Tensor | None = None
        self.ptrs: list[int] = []
        self.g_views: list[torch.Tensor] = []
        self.expected: tuple[list[int], bytes, np.ndarray] | None = None
        """For the C++ check: (the ``ptrs`` list it was made from, gradient view addresses, data pointers)."""
        self.flat_state: dict[str, torch.Tensor] = {}
        self.steps: torch.Tensor | None = None
        self.step_counts: np.ndarray | None = None
        """``steps`` seen from NumPy (same memory): counting and reading a step is no torch op."""
        self.scalars: _ScalarInputs | None = None
        self.memo: tuple[Rule, tuple[Any, ...], _Kernel] | None = None
        self.state_obj: Any = None
        self.names: tuple[str, ...] | None = None

    # binding ------------------------------------------------------------------------------
    def _views(self, flat: torch.Tensor, count: int | None = None) -> list[torch.Tensor]:
        """Views of ``flat`` shaped as the first ``count`` parameters (all by default)."""
        params = self.params if count is None else self.params[:count]
        return [flat[a:b].view(p.shape) for p, a, b in zip(params, self.offsets, self.offsets[1:], strict=False)]

    def _bind_params(self) -> None:
        if self.flat_p is None:
            self.flat_p = new_flat(self.total, self.dtype, self.device)
            self.flat_g = new_flat(self.staged_total, self.dtype, self.device, zero=True)
            self.g_views = self._views(self.flat_g, self.staged)
            self.p_views = self._views(self.flat_p)
        for p, view in zip(self.params, self.p_views, strict=False):
            if p.data_ptr() != view.data_ptr() or p.shape != view.shape or p.stride() != view.stride():
                view.copy_(p.detach())
                p.data = view
        self.ptrs = [p.data_ptr() for p in self.params]

    def bound_as_before(self, native: bool = False) -> bool:
        """Whether every staged ``p.grad`` still is its view, every own gradient can be read in place
        and every parameter still lives in its slice: the checks of :meth:`grads_in_place` and
        :meth:`ready` in one pass over the parameters, so each parameter is fetched into cache once.
        ``native`` (a compiled bucket): with :data:`~._native.NATIVE_CHECK_PARAMS` parameters or more,
        the pass runs in C++ once :mod:`._native` has built it (at 5000 parameters, cold caches: about
        2.0-3.8 ms in Python, 0.4-0.8 ms in C++; benchmarks/step_overheads.py)."""
        if self.flat_p is None or len(self.g_views) != self.staged or len(self.ptrs) != len(self.params):
            return False
        if native and len(self.params) >= NATIVE_CHECK_PARAMS:
            module = _native.checker()
            if module is not None:
                return bool(module.bound(self.params, *self._native_expected(module)))
        staged = zip(self.params, self.g_views, self.ptrs, strict=False)  # stops after the staged ones
        if not all(p.grad is g and p.data_ptr() == q for p, g, q in staged):
            return False
        owners = zip(self.params[self.staged:], self.ptrs[self.staged:], strict=True)
        return all(p.data_ptr() == q and _readable(p.grad) for p, q in owners)

    def _native_expected(self, module: Any) -> tuple[bytes, np.ndarray]:
        """What the C++ check compares against: the staged gradient views' TensorImpl addresses and the
        parameters' data pointers, as int64 arrays (remade whenever the parameters are re-bound)."""
        if self.expected is None or self.expected[0] is not self.ptrs:
            self.expected = (self.ptrs, module.impl_addresses(self.g_views), np.array(self.ptrs, dtype=np.int64))
        return self.expected[1], self.expected[2]

    def ready(self, states: MutableMapping[Any, Any], rule: Rule, names: tuple[str, ...], stateful: bool,
              params_bound: bool = False) -> bool:
        """Bind (or re-bind) what changed since the last step; False when state is incomplete.
        ``params_bound``: :meth:`bound_as_before` said every parameter still lives in its slice."""
        if not params_bound and (self.flat_p is None or list(map(torch.Tensor.data_ptr, self.params)) != self.ptrs):
            self._bind_params()
        if not stateful:
            self.names, self.state_obj = names, states
            return True
        if states is self.state_obj and names == self.names:
            return True
        per_param = [states.get(p) for p in self.params]
        wanted = (*names, "step") if rule.counts_steps else names
        if any(not st or any(n not in st for n in wanted) for st in per_param):
            self.names = None
            return False
        for name in names:
            flat = self.flat_state.get(name)
            if flat is None:
                flat = self.flat_state[name] = new_flat(self.total, self.dtype, self.device)
            for st, view in zip(per_param, self._views(flat), strict=False):
                if st[name] is not view:
                    view.copy_(st[name])
                    st[name] = view
        for name in set(self.flat_state) - set(names):
            del self.flat_state[name]
        if rule.counts_steps:
            old = [st["step"] for st in per_param]
            self.steps = torch.tensor([float(s) for s in old], dtype=old[0].dtype)
            self.step_counts = self.steps.numpy()
            for i, st in enumerate(per_param):
                st["step"] = self.steps[i]
        self.names, self.state_obj = names, states
        return True

    def grads_in_place(self, grads: list[torch.Tensor | None]) -> bool:
        """Whether every staged gradient already is its view of the flat gradient buffer and every
        own gradient can be read where it is."""
        staged = grads[:self.staged]
        return (len(self.g_views) == len(staged) and all(map(operator.is_, staged, self.g_views))
                and all(_readable(g) for g in grads[self.staged:]))

    def sync_grads(self, grads: list[torch.Tensor]) -> None:
        """Copy fresh staged gradient tensors into the flat gradient buffer; point ``p.grad`` at its view."""
        fresh = [(p, g, v) for p, g, v in zip(self.params, grads, self.g_views, strict=False) if g is not v]
        if fresh:
            torch._foreach_copy_([v for _, _, v in fresh], [g for _, g, _ in fresh])
            for p, _, v in fresh:
                p.grad = v

    def uniform_steps(self) -> bool:
        counts = self.step_counts
        return counts is None or len(counts) < 2 or bool(counts.min() == counts.max())

    # stepping -----------------------------------------------------------------------------
    def update(self, rule: Rule, group: Mapping[str, Any], names: tuple[str, ...], engine: _Engine) -> None:
        step: Any = None
        counts = self.step_counts
        if rule.counts_steps and counts is not None:
            # the state's step tensors, each 1 further: the sum is exact in a double, so rounding it
            # to their dtype gives torch's add_(1) (the one-element form skips a NumPy ufunc call)
            if len(counts) == 1:
                counts[0] = counts.item(0) + 1.0
            else:
                np.add(counts, 1, out=counts)
            step = counts.item(0)
        maximize = bool(group["maximize"])
        hypers = {name: group[name] for name in rule.math_names}
        buffers = [self.flat_state[n] for n in names]
        assert self.flat_p is not None and self.flat_g is not None
        kernel = self._kernel(rule, names, hypers, maximize)
        compiled = self._compile(engine.mode) and engine.may_compile(kernel) and kernel.compiled is not None
        if compiled:
            if self.scalars is None or self.scalars.count != len(kernel.tensor_names) + 1:
                self.scalars = _ScalarInputs(len(kernel.tensor_names) + 1)
            step_t, *dynamic = self.scalars.fill((step or 0.0, *(hypers[n] for n in kernel.tensor_names)))
        ran_compiled = ran_flat = False
        for start, end, grad in self._segments():
            whole = start == 0 and end == self.total
            param = self.flat_p if whole else self.flat_p[start:end]
            parts = buffers if whole else [b[start:end] for b in buffers]
            if compiled:
                try:
                    kernel.run_compiled((param, grad, parts, None if step is None else step_t, dynamic))
                    ran_compiled = True
                    continue
                except Exception as error:  # compiler missing or unsupported op: run uncompiled from now on
                    warnings.warn(f"descentlab: compiling rule {rule.name!r} failed ({type(error).__name__}: "
                                  f"{error}); using the uncompiled flat engine", RuntimeWarning, stacklevel=4)
                    kernel.compiled, compiled = None, False
            self._run_uncompiled(kernel, param, grad, parts, step, hypers)
            ran_flat = True
        STATS["compiled_steps"] += ran_compiled
        STATS["flat_steps"] += ran_flat

    def _segments(self) -> list[tuple[int, int, torch.Tensor]]:
        """(start, end, gradient) runs of the flat buffers one update call covers: the staged
        parameters together, then each parameter that owns its gradient."""
        assert self.flat_g is not None
        runs = [(0, self.staged_total, self.flat_g)] if self.staged_total else []
        for i in range(self.staged, len(self.params)):
            grad = self.params[i].grad
            assert grad is not None  # flat_step checked every gradient before binding
            # a 1-D view made per step, never kept: holding it would keep a replaced gradient alive
            runs.append((self.offsets[i], self.offsets[i + 1], grad.contiguous().view(-1)))
        return runs

    def _run_uncompiled(self, kernel: _Kernel, param: torch.Tensor, grad: torch.Tensor,
                        buffers: list[torch.Tensor], step: Any, hypers: Mapping[str, Any]) -> None:
        """The update by torch's eager kernels over cache-sized chunks (:data:`CHUNK_BYTES`)."""
        size = param.numel()
        chunk = max(1, CHUNK_BYTES // param.element_size()) if self.device.type == "cpu" else size
        for start in range(0, size, chunk):
            end = min(start + chunk, size)
            kernel.eager(param[start:end], grad[start:end], [b[start:end] for b in buffers],
                         step, hypers, not kernel.checked)
            kernel.checked = True

    def _kernel(self, rule: Rule, names: tuple[str, ...], hypers: Mapping[str, Any], maximize: bool) -> _Kernel:
        """:func:`_kernel`, remembered for the last static hyper-parameter values this bucket used."""
        tensor_names = rule.tensor_names
        memo_key = (names, maximize, *(v for n, v in hypers.items() if n not in tensor_names))
        memo = self.memo
        if memo is not None and memo[0] is rule and memo[1] == memo_key:
            return memo[2]
        kernel = _kernel(rule, names, hypers, maximize, self.dtype, self.device)
        self.memo = (rule, memo_key, kernel) if all(_is_plain(v) for v in memo_key[2:]) else None
        return kernel

    def _compile(self, mode: str) -> bool:
        if mode == "flat":
            return False
        return mode == "compiled" or (mode == "auto" and self.total >= AUTO_COMPILE_NUMEL)


class _ScalarInputs:
    """0-dim float64 CPU tensors for the compiled update's per-step scalars (step, lr, ...), reused
    every step and written through NumPy: fresh tensors would cost a torch op each, and the first
    torch op after a pass over the flat buffers costs 30-100 us of cold caches
    (benchmarks/step_overheads.py)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.values = np.zeros(count, dtype=np.float64)
        self.tensors = [torch.from_numpy(self.values[i:i + 1].reshape(())) for i in range(count)]

    def fill(self, values: tuple[Any, ...]) -> list[torch.Tensor]:
        array = self.values
        for i, value in enumerate(values):  # item by item: no list built and converted
            array[i] = float(value)
        return self.tensors


def _readable(grad: torch.Tensor | None) -> bool:
    """Whether the update can read ``grad`` where it is (a dense gradient)."""
    return grad is not None and grad.layout == torch.strided


def _is_plain(value: Any) -> bool:
    """Whether ``==`` on ``value`` is a plain Python comparison (no tensors)."""
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass
class _Kernel:
    """One variant of a rule's flat update: its uncompiled form, and its compiled form built on first
    use (``compilable`` False once compiling failed)."""

    eager: Callable[..., None]
    make_compiled: Callable[[], Callable[..., None]]
    tensor_names: tuple[str, ...]
    compilable: bool = True
    compiled_fn: Callable[..., None] | None = None
    checked: bool = False
    rule_name: str = ""
    family: tuple[Any, ...] = ()
    """(rule, buffers, maximize, dtype, device): the variants of one update, which ``key`` tells apart."""
    key: tuple[Any, ...] = ()
    static: Mapping[str, Any] = field(default_factory=dict)
    served: Captured | None = None
    """The compiled graph that ran the last call made through dynamo (set by the backend's wrapper)."""
    direct: dict[tuple[Any, ...], Callable[..., Any] | None] = field(default_factory=dict)
    """Per (device, size): the compiled graph called without dynamo (:mod:`._direct`), None if unmapped."""

    def run_compiled(self, args: tuple[Any, ...]) -> None:
        """Run the compiled update on ``(param, grad, buffers, step, dynamic)``: through dynamo until
        dynamo has served this size with a compiled graph, then straight to that graph."""
        size = (args[0].device, args[0].numel())
        direct = self.direct.get(size)
        if direct is not None:
            direct(args)
            STATS["direct_steps"] += 1
            return
        compiled = self.compiled
        assert compiled is not None
        self.served = None
        compiled(*args)
        if self.served is not None and size not in self.direct:
            self.direct[size] = direct_call(self.served, self.static, args)

    @property
    def compiled(self) -> Callable[..., None] | None:
        if not self.compilable:
            return None
        if self.compiled_fn is None:
            self.compiled_fn = self.make_compiled()
        return self.compiled_fn

    @compiled.setter
    def compiled(self, value: Callable[..., None] | None) -> None:
        self.compiled_fn, self.compilable = value, value is not None


MAX_KERNELS = 64
"""Kernels kept (least recently used dropped): a scheduler that moves a static hyper-parameter every
step (OneCycleLR cycles momentum / betas) would otherwise add one per step."""
MAX_COMPILED_VARIANTS = 4
"""Distinct static hyper-parameter sets one optimizer compiles per kernel family (see _Engine.may_compile)."""
_KERNELS: OrderedDict[tuple[Any, ...], _Kernel] = OrderedDict()
_SERIAL = itertools.count()


def _static(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value)
    if isinstance(value, (tuple, list)):
        return tuple(_static(v) for v in value)
    return value


def _kernel(rule: Rule, names: tuple[str, ...], hypers: Mapping[str, Any], maximize: bool,
            dtype: torch.dtype, device: torch.device) -> _Kernel:
    tensor_names = tuple(h.name for h in rule.hypers if h.name in rule.tensor_names and h.name in hypers)
    static = {n: _static(v) for n, v in hypers.items() if n not in tensor_names}
    family: tuple[Any, ...] = (id(rule.update), rule.name, names, maximize, dtype, device.type)
    key = (*family, repr(sorted(static.items())))
    kernel = _KERNELS.get(key)
    if kernel is not None:
        _KERNELS.move_to_end(key)
        return kernel
    kernel = _KERNELS[key] = _Kernel(
        _make_eager(rule, names, maximize),
        lambda: _make_compiled(rule, names, static, tensor_names, maximize, next(_SERIAL), kernel),
        tensor_names, rule_name=rule.name, family=family, key=key, static=static)
    while len(_KERNELS) > MAX_KERNELS:
        _KERNELS.popitem(last=False)
    return kernel


def _make_eager(rule: Rule, names: tuple[str, ...], maximize: bool) -> Callable[..., None]:
    def run(param: torch.Tensor, grad: torch.Tensor, buffers: list[torch.Tensor], step: Any,
            hypers: Mapping[str, Any], check: bool) -> None:
        if maximize:
            grad = -grad
        state = dict(zip(names, buffers, strict=False))
        new_param, new_state = rule.update(param, grad, state, step=step, **hypers)
        if check:
            check_result(rule, param, new_param, new_state, state)
        _write_back(param, new_param, buffers, names, new_state)

    return run


def _write_back(param: torch.Tensor, new_param: torch.Tensor, buffers: list[torch.Tensor],
                names: tuple[str, ...], new_state: Mapping[str, torch.Tensor]) -> None:
    if new_param is not param:
        param.copy_(new_param)
    for name, buf in zip(names, buffers, strict=False):
        value = new_state.get(name)
        if value is not None and value is not buf:
            buf.copy_(value)


def _make_compiled(rule: Rule, names: tuple[str, ...], static: Mapping[str, Any], tensor_names: tuple[str, ...],
                   maximize: bool, index: int, kernel: _Kernel) -> Callable[..., None]:
    update = rule.update
    static = dict(static)  # the name _direct.CLOSURE: dynamo passes its floats as graph inputs

    def flat_update(param: torch.Tensor, grad: torch.Tensor, buffers: list[torch.Tensor], step: Any,
                    dynamic: list[torch.Tensor]) -> None:
        if maximize:
            grad = -grad
        hypers = dict(static)
        for name, value in zip(tensor_names, dynamic, strict=False):
            hypers[name] = value
        new_param, new_state = update(param, grad, dict(zip(names, buffers, strict=False)), step=step, **hypers)
        _write_back(param, new_param, buffers, names, new_state)

    # A code object of its own: torch.compile caches per code object, so each variant gets its
    # own cache (and recompile budget) instead of all rules sharing one.
    code = flat_update.__code__.replace(co_name=f"descentlab_flat_{index}")
    fresh = types.FunctionType(code, flat_update.__globals__, code.co_name, None, flat_update.__closure__)

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        """Inductor with the per-step scalar math hoisted out of the element loop (:mod:`._compile`),
        counting each compilation in :data:`STATS` (tests check scheduler steps add none); each call
        dynamo makes to the graph tells ``kernel`` which graph served it (:mod:`._direct`)."""
        STATS["compiles"] += 1
        compiled = hoisting_backend(gm, example_inputs)
        STATS["hoisted"] += hasattr(compiled, "hoisted")
        captured = capture(gm, compiled)

        def run(*args: Any) -> Any:
            kernel.served = captured
            return compiled(*args)

        return run

    return torch.compile(fresh, backend=backend, dynamic=True, fullgraph=True)
