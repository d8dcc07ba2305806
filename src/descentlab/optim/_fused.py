"""Accelerator: a rule's one declaration as one compiled pass over every tensor of a param group.

Per step, nothing kept from the last one: the group's parameters, each ``p.grad`` and ``state[p]`` are
read afresh into a table of addresses (one row per tensor), and one C call (:mod:`._codegen`) walks the
table: it increments each ``state['step']``, computes the per-step scalars (bias corrections, ...) once
per step count, and updates each tensor in one in-place loop — read p, g and the buffers once, write p
and the buffers once. Parameters the table cannot take (no dense float32/float64 contiguous CPU tensor
with every buffer already there, a tensor subclass, memory overlapping another row's) are stepped by the
core afterwards, each with its own reason counted in the route.

The kernel is the rule's own ``update``, traced (:mod:`._trace`) into a scalar and an element program.
Hyper-parameters and the step count are runtime inputs of the compiled code: one library per rule
variant (flags such as ``amsgrad``, which buffers exist, which side of each ``weight_decay != 0``) serves
every value, in every process; the disk cache is keyed by the source's digest, so it can only hold the
code it names.

Bitwise: each element op is spelled as torch's CPU kernel computes it, and square roots are torch's own
vector function (MKL's ``vmsSqrt``/``vmdSqrt`` on x86 wheels, called block by block), so results equal
the core's (and torch.optim's for-loop) bit for bit. That is checked, not assumed (:mod:`._selfcheck`):
the first time a process uses a kernel for a dtype, it runs against the core on random tensors of
every length up to 40 (every vector tail), 67 and 4099; a kernel that differs in any bit is not used
(the group runs on the core, with that reason in ``last_routes``). ``fused-ieee`` takes the IEEE root
inline instead (faster; within 1 ulp of each of torch's roots). No C++ compiler, an op the generator
does not know, or a tensor hyper-parameter: the core, with the reason.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from array import array
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, eq, is_, itemgetter
from typing import Any

import numpy as np
import torch
from torch.autograd.graph import increment_version

from . import _codegen, _native
from ._eager import eager_step
from ._gather_native import gather_native
from ._outside import changed
from ._pieces import _aliased
from ._selfcheck import BITWISE, IEEE_SQRT, check, root_problem
from ._state import init_state, needs_state
from ._trace import Program, Unsupported, flatten_hypers, guards_hold, trace
from .probe import is_immutable
from .rule import Rule, buffer_names

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp")
"""``-ffp-contract=off``: no fused multiply-add unless spelled (``std::fma``); the next two change no
result (they let ``sqrt`` and selects vectorise). ``-fopenmp``: the step's element work is split across
threads with OpenMP; the library's ``libgomp.so.1`` resolves to the one torch has already loaded (the
same soname), so the kernel runs on torch's own OpenMP thread pool (docs/engine.md)."""
LDFLAGS = ("-fopenmp",)
GRAIN = 1 << 16
"""Fewest elements per thread: a step of fewer than 2 x GRAIN elements runs on one thread (waking a
second costs more than it saves). The result does not depend on it (:func:`call`)."""
DISABLE_VAR = "DESCENTLAB_FUSED"
"""``DESCENTLAB_FUSED=0`` turns the fused path off (every group takes the other paths, with that reason)."""
DTYPES = {torch.float32: 0, torch.float64: 1}


@dataclass
class Kernel:
    """One compiled rule variant: its program, the C function (None with ``problem`` when unusable)."""

    program: Program
    function: Any = None
    problem: str | None = None
    checked: dict[tuple[torch.dtype, bool], tuple[str | None, str, Roots]] = field(default_factory=dict)
    """Per (dtype, IEEE square root asked for): the self-check's outcome (:func:`verify`)."""
    build_seconds: float = 0.0
    float_roots: Any = None
    """The library's ``dl_float_roots`` (the float32 square roots its loops compute; for the root check)."""


@dataclass
class _Library:
    """Everything the fused path compiled or traced in this process (the compiler's cache, as
    ``torch.compile`` keeps its own): kernels by rule variant, libraries by source digest."""

    variants: dict[tuple[Any, ...], list[Kernel]] = field(default_factory=dict)
    built: dict[str, tuple[Any, str | None, float]] = field(default_factory=dict)
    last: dict[tuple[Any, ...], tuple[tuple[float, ...], Kernel]] = field(default_factory=dict)
    """Per rule variant, the hyper-parameter values of its last use and the kernel they chose."""
    lock: threading.Lock = field(default_factory=threading.Lock)


LIBRARY = _Library()


ROOTS_ARGTYPES = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulonglong]
"""``dl_float_roots(n, in, out, fn, mode)``: the float32 roots the kernel's loops compute with ``fn``, ``mode``."""
ARGTYPES = [ctypes.c_void_p, ctypes.c_double]
"""The generated ``dl_fused_call``'s arguments: the packed int64 arguments of ``dl_fused_step`` and
``fixed_t`` (:func:`call`)."""


def _build(code: str, program: Program) -> Kernel:
    """Compile ``code`` (or load it from torch's extension cache) into the kernel of ``program``."""
    library, problem, seconds = _native.build(code, "the fused kernel", FLAGS, LDFLAGS, LIBRARY.built)
    if library is None:
        return Kernel(program, None, problem, build_seconds=seconds)
    # (int64 arguments of dl_fused_step, fixed_t): see call()
    return Kernel(program, _native.function(library, "dl_fused_call", ARGTYPES, ctypes.c_int64), None,
                  build_seconds=seconds,
                  float_roots=_native.function(library, "dl_float_roots", ROOTS_ARGTYPES, None))


def kernel_for(rule: Rule, hypers: Mapping[str, Any], names: Sequence[str], maximize: bool,
               numbers: Sequence[float], key: tuple[Any, ...], step: float | None) -> Kernel:
    """The compiled kernel for this rule variant (traced and built on first use; raises Unsupported)."""
    variant = (rule.update, tuple(names), maximize, key, rule.counts_steps)
    values = tuple(numbers)
    last = LIBRARY.last.get(variant)
    if last is not None and last[0] == values:  # the same values as the last step: the same kernel
        return current(last[1])
    with LIBRARY.lock:
        kernels = LIBRARY.variants.setdefault(variant, [])
        for kernel in kernels:
            if guards_hold(kernel.program, numbers):
                LIBRARY.last[variant] = (values, kernel)
                return current(kernel)
        program = trace(rule.update, hypers, names, maximize, step)
        kernel = _build(_codegen.source(program, 2 + len(names)), program)
        kernels.append(kernel)
        return kernel


def current(kernel: Kernel) -> Kernel:
    """``kernel``, while every value its trace read from outside the rule is still in place
    (:mod:`._outside`); else Unsupported: the group steps on the core, which reads the new value."""
    moved = changed(kernel.program.outside) if kernel.program.outside else None
    if moved is not None:
        raise Unsupported(f"{moved}, which the update reads from outside the rule, changed after the kernel "
                          "was traced (pass it as a hyper-parameter to keep the fused path)")
    return kernel


def disabled() -> str | None:
    """Why the fused path is off in this process, or None."""
    return _native.switched_off(DISABLE_VAR)


VML_MODE = 0x2 | 0x140000 | 0x100
"""``VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE``: the mode torch's ``ATen/cpu/vml.h`` calls MKL's vector
square root with."""
EMULATE_ROOT, IEEE_ROOT = 1 << 40, 1 << 41
"""Bits of the mode passed to the kernel, never to MKL: compute float32 roots with the kernel's inline
emulation of MKL's (:data:`._codegen.PRELUDE`'s ``emulated_root8``), or with the IEEE root where that is
torch's; blocks with an input outside their range (subnormals among them, which a denormals-are-zero mode
would change, while MKL sets its own) by MKL's function."""
Roots = tuple[int, int, int]
"""The square roots a kernel runs with: float32 and float64 vector functions (0: the IEEE root inline)
and the mode (:func:`call`)."""


@functools.cache
def torch_sqrt() -> tuple[int, int]:
    """Addresses of the vector square roots torch's CPU ``sqrt`` runs on this build (MKL VM's
    ``vmsSqrt``/``vmdSqrt``, in torch's own library), or (0, 0) where torch has none (the kernel then takes
    the IEEE ``sqrt``). Only an address: the self-check (:mod:`._selfcheck`) decides whether the kernel
    matches torch with it."""
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        library = ctypes.CDLL(path)
        return (ctypes.cast(library.vmsSqrt, ctypes.c_void_p).value or 0,
                ctypes.cast(library.vmdSqrt, ctypes.c_void_p).value or 0)
    except (OSError, AttributeError):
        return (0, 0)


def call(kernel: Kernel, dtype: torch.dtype, meta: array, rows: int, stride: int, hyper_rows: array, nh: int,
         fixed_t: float, check_overlap: bool, roots: Roots, threads: int | None = None,
         grain: int | None = None) -> array:
    """Run the kernel over a table of ``rows`` rows with these square roots; the rejected-row flags.

    ``threads`` (default ``torch.get_num_threads()``, so ``torch.set_num_threads`` and ``OMP_NUM_THREADS``
    are honoured) split the elements, at most one thread per ``grain`` elements (default :data:`GRAIN`):
    each thread takes a run of whole blocks of the rows, so the numbers are the same for any count."""
    reject = array("b", bytes(rows))
    if rows == 0:
        return reject
    arguments = array("q", (rows, stride, meta.buffer_info()[0], hyper_rows.buffer_info()[0] if len(hyper_rows) else 0,
                            nh, DTYPES[dtype], reject.buffer_info()[0], 1 if check_overlap else 0, roots[0] or 0,
                            roots[1] or 0, roots[2], torch.get_num_threads() if threads is None else threads,
                            GRAIN if grain is None else grain))
    kernel.function(arguments.buffer_info()[0], fixed_t)  # dl_fused_step's 13 integers in one array
    return reject


def _torch_roots(kernel: Kernel, dtype: torch.dtype) -> list[Roots]:
    """The ways this kernel can compute torch's own square roots for ``dtype``, fastest first: in float32,
    the IEEE root inline where torch's root is it (MKL's AVX2 path; blocks with an input outside the
    normal range by MKL's function, as with the emulation), else the kernel's emulation of MKL's root where
    it equals torch's over every float32 of [1, 4) and the rest of the root check
    (:func:`._selfcheck.root_problem`, run once per process); always, torch's own vector function."""
    functions = torch_sqrt()
    tries: list[Roots] = []
    if dtype == torch.float32 and kernel.float_roots is not None:
        def emulated(values: np.ndarray) -> np.ndarray:
            out = np.empty_like(values)
            kernel.float_roots(values.size, values.ctypes.data, out.ctypes.data, functions[0],
                               VML_MODE | EMULATE_ROOT)
            return out

        if root_problem("ieee", np.sqrt) is None:
            tries.append((*functions, VML_MODE | IEEE_ROOT) if functions[0] else (0, 0, VML_MODE))
        elif functions[0] and root_problem("emulated", emulated) is None:
            tries.append((*functions, VML_MODE | EMULATE_ROOT))
    return [*tries, (*functions, VML_MODE)]


def verify(kernel: Kernel, rule: Rule, names: Sequence[str], hypers: Mapping[str, Any], maximize: bool,
           numbers: Sequence[float], dtype: torch.dtype, ieee: bool) -> tuple[str | None, str, Roots]:
    """The kernel's self-check for ``dtype`` (:mod:`._selfcheck`), once per kernel, dtype and ``ieee`` per
    process: (None, what it promises, the square roots to run it with) or (why it is not used, "", no roots).
    ``ieee``: the IEEE square root (fast), bitwise only for rules without one, else within 1 ulp of each
    root; otherwise torch's own (:func:`_torch_roots`), and bitwise or not used at all."""
    if (dtype, ieee) not in kernel.checked:
        hyper_row = array("d", numbers)
        outcome: tuple[str | None, str, Roots] = ("", "", (0, 0, VML_MODE))
        # fused (what auto takes) promises torch's bits or is not used: a build whose square root the kernel
        # cannot reproduce steps on the core; only fused-ieee, asked for by name, accepts the IEEE root
        tries = ([(BITWISE, (0, 0, VML_MODE)), (IEEE_SQRT, (0, 0, VML_MODE))] if ieee
                 else [(BITWISE, roots) for roots in _torch_roots(kernel, dtype)])
        for promise, roots in tries:
            def run(meta: array, roots: Roots = roots) -> None:
                call(kernel, dtype, meta, 1, len(meta), hyper_row, len(numbers), 0.0, True, roots)

            problem = check(run, rule, names, hypers, maximize, dtype, promise)
            outcome = (problem, "", (0, 0, VML_MODE)) if problem else (None, promise, roots)
            if not problem:
                break
        kernel.checked[dtype, ieee] = outcome
    return kernel.checked[dtype, ieee]


@dataclass
class Table:
    """The rows of one dtype: addresses for the C call, column by column (:data:`._codegen.META_FIXED`),
    and the parameters they belong to."""

    meta: array = field(default_factory=lambda: array("q"))
    params: list[torch.Tensor] = field(default_factory=list)


def columns_of(rows: Sequence[Sequence[int]], stride: int) -> array:
    """A column-major table from rows of ``stride`` numbers."""
    return array("q", [row[c] for c in range(stride) for row in rows])


_grad, _dtype, _shape = attrgetter("grad"), attrgetter("dtype"), attrgetter("shape")
_is_cpu, _step = attrgetter("is_cpu"), itemgetter("step")
_contiguous, _address = torch.Tensor.is_contiguous, torch.Tensor.data_ptr
_numel, _dim = torch.Tensor.numel, torch.Tensor.dim
_PLAIN = frozenset((torch.Tensor, torch.nn.Parameter))
_TENSOR = frozenset((torch.Tensor,))
_STEP_KINDS = {torch.float32: 1, torch.float64: 2}
_is_neg = torch.Tensor.is_neg


def _as_stored(tensor: torch.Tensor) -> bool:
    """Whether the tensor's memory holds its values, as the kernel reads them: no negative bit (its memory
    holds minus its values: ``z.conj().imag``) and an address where it has elements (an efficient zero
    tensor has none)."""
    return not _is_neg(tensor) and (_address(tensor) != 0 or _numel(tensor) == 0)


_is_inference = torch.Tensor.is_inference


def _writable(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether the step may write every one of ``tensors``: not an inference tensor outside InferenceMode
    (torch's in-place op raises there; the core, stepping it, raises torch's error)."""
    return torch.is_inference_mode_enabled() or not any(map(_is_inference, tensors))


def gather(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
           names: Sequence[str]) -> tuple[dict[torch.dtype, Table], list[torch.Tensor]]:
    """Read the group afresh: one table per dtype of the rows the kernel can take (dense contiguous
    float32/float64 CPU tensors of the parameter's shape and dtype, plain ``torch.Tensor``s, every buffer
    there, none an inference tensor outside InferenceMode), and the rest. The usual group (each parameter
    without a gradient or with one the kernel takes, one dtype, every buffer made) is read in C where the
    native reader is built (:mod:`._gather_native`); otherwise, a group of at least :data:`COLUMNS_FROM`
    parameters that all have a gradient a column at a time (:func:`_gather_uniform`: each check and
    address one C-level ``map`` over the group); anything else, row by row (:func:`_gather_rows`)."""
    native = gather_native(group, states if needs_state(rule, group) else None, names, rule.counts_steps)
    if native is not None:
        dtype, meta, taken = native
        return ({dtype: Table(meta, taken)} if taken else {}), []
    tables: dict[torch.dtype, Table] | None = None
    leftover: list[torch.Tensor] = []
    if len(group["params"]) >= COLUMNS_FROM:
        tables = _gather_uniform(rule, group, states, names)
    if tables is None:
        tables, leftover = _gather_rows(rule, group, states, names)
    _mark_written(rule, tables, states, names)
    return tables, leftover


def _mark_written(rule: Rule, tables: Mapping[torch.dtype, Table], states: MutableMapping[torch.Tensor, Any],
                  names: Sequence[str]) -> None:
    """Bump the version counter of every tensor the kernel will write (the parameter, its buffers and
    step), as torch's in-place ops do (``torch.autograd.graph.increment_version``, the documented call for
    a kernel that writes through ``data_ptr``): a graph that saved one of them refuses ``backward`` after
    the step. (Inference tensors outside InferenceMode, which it would skip, are never in a table:
    :func:`_writable`. The native reader bumps in C.)"""
    keys = [*names, "step"] if rule.counts_steps else list(names)
    for table in tables.values():
        for param in table.params:
            increment_version(param)
            state = states[param] if keys else {}
            for key in keys:
                increment_version(state[key])


COLUMNS_FROM = 16
"""Groups of fewer parameters are read row by row: the column-wise checks cost a fixed ~30 us of calls
(6 Adam tensors: 25 us row by row, 34 us by columns; equal at 16)."""
CHUNK = 128
"""Parameters read together by :func:`_gather_uniform`: few enough that their tensors' metadata stays in
the core's cache across the dozen passes over them (5000 parameters in one pass each missed it, and
cost more than reading row by row), many enough that each ``map`` call's overhead is spread."""


def _gather_uniform(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
                    names: Sequence[str]) -> dict[torch.dtype, Table] | None:
    """The table of a group whose every parameter the kernel takes, checked a column at a time (per
    :data:`CHUNK` parameters) with the same tests as :func:`_gather_rows`; None (nothing decided, the
    row-by-row reading follows) as soon as one test fails for any parameter."""
    params = group["params"]
    if not params:
        return None
    dtype = params[0].dtype
    if dtype not in DTYPES:
        return None
    stateful = needs_state(rule, group)
    complete = len(names) + rule.counts_steps
    columns: list[list[int]] = [[] for _ in range(_codegen.META_FIXED + 2 + len(names))]
    getters = [itemgetter(name) for name in names]
    for start in range(0, len(params), CHUNK):
        chunk = params[start:start + CHUNK]
        if not _uniform_chunk(chunk, dtype, states if stateful else None, complete, rule.counts_steps, getters,
                              columns):
            return None
    meta = array("q", columns[0])
    for column in columns[1:]:
        meta.extend(array("q", column))
    return {dtype: Table(meta, list(params))}


def _uniform_chunk(params: list[torch.Tensor], dtype: torch.dtype, states: MutableMapping[torch.Tensor, Any] | None,
                   complete: int, counts: bool, getters: list[itemgetter], columns: list[list[int]]) -> bool:
    """Check ``params`` and append their rows to ``columns``; False when one fails a test."""
    count = len(params)
    grads = list(map(_grad, params))
    if set(map(type, grads)) != _TENSOR or not set(map(type, params)) <= _PLAIN:
        return False  # a parameter without a gradient, a subclass: row by row
    dtypes = {dtype}
    if (set(map(_dtype, params)) != dtypes or set(map(_dtype, grads)) != dtypes
            or not all(map(_is_cpu, params)) or not all(map(_is_cpu, grads))
            or not all(map(_contiguous, params)) or not all(map(_contiguous, grads))
            or not all(map(eq, map(_shape, params), map(_shape, grads)))
            or not all(map(_as_stored, params)) or not all(map(_as_stored, grads)) or not _writable(params)):
        return False
    states_of: list[Any] = []
    if states is not None:
        states_of = list(map(states.__getitem__, params))
        if set(map(len, states_of)) != {complete}:
            return False  # a state still to make (the first step), or another set of keys
    try:
        if counts:
            steps = list(map(_step, states_of))
            kinds = set(map(_dtype, steps)) if set(map(type, steps)) == _TENSOR else set()
            if (len(kinds) != 1 or not all(map(_is_cpu, steps)) or any(map(_dim, steps))
                    or not all(map(_as_stored, steps)) or not _writable(steps)):
                return False
            kind = _STEP_KINDS.get(kinds.pop(), 0)
            if kind == 0:
                return False
            columns[1] += map(_address, steps)
            columns[2] += [kind] * count
        else:
            columns[1] += [0] * count
            columns[2] += [0] * count
        buffers = [list(map(getter, states_of)) for getter in getters]
    except KeyError:
        return False
    for column in buffers:
        if (set(map(type, column)) != _TENSOR or set(map(_dtype, column)) != dtypes
                or not all(map(_is_cpu, column)) or not all(map(_contiguous, column))
                or not all(map(eq, map(_shape, params), map(_shape, column))) or not all(map(_as_stored, column))
                or not _writable(column)):
            return False
    columns[0] += map(_numel, params)
    columns[3] += [0] * count  # hyper-parameter row 0
    columns[4] += map(_address, params)
    columns[5] += map(_address, grads)
    for index, column in enumerate(buffers):
        columns[6 + index] += map(_address, column)
    return True


def _gather_rows(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
                 names: Sequence[str]) -> tuple[dict[torch.dtype, Table], list[torch.Tensor]]:
    """:func:`gather` one row at a time: any group (parameters without a gradient, mixed dtypes, state to
    make, tensors the kernel cannot take)."""
    stateful = needs_state(rule, group)
    counts = rule.counts_steps
    complete = len(names) + counts
    rows: dict[torch.dtype, list[list[int]]] = {}
    taken: dict[torch.dtype, list[torch.Tensor]] = {}
    leftover: list[torch.Tensor] = []
    tensor, parameter = torch.Tensor, torch.nn.Parameter
    contiguous, address = torch.Tensor.is_contiguous, torch.Tensor.data_ptr
    no_state: dict[str, Any] = {}
    for param in group["params"]:
        grad = param.grad
        if grad is None:
            continue
        dtype = param.dtype
        shape = param.shape
        if (dtype not in DTYPES or type(grad) is not tensor
                or (type(param) is not parameter and type(param) is not tensor) or grad.dtype is not dtype
                or not param.is_cpu or not grad.is_cpu or not contiguous(param) or not contiguous(grad)
                or grad.shape != shape or not _as_stored(param) or not _as_stored(grad) or not _writable((param,))):
            leftover.append(param)
            continue
        state = states[param] if stateful else no_state
        if len(state) != complete:
            init_state(rule, param, group, state)
        row = [param.numel(), 0, 0, 0, address(param), address(grad)]
        if counts:
            step = state["step"]
            kind = _STEP_KINDS.get(step.dtype, 0) if type(step) is tensor else 0
            if kind == 0 or not step.is_cpu or step.dim() != 0 or not _as_stored(step) or not _writable((step,)):
                leftover.append(param)
                continue
            row[1], row[2] = address(step), kind
        for name in names:
            buffer = state.get(name)
            if (type(buffer) is not tensor or buffer.dtype is not dtype or not buffer.is_cpu or not contiguous(buffer)
                    or buffer.shape != shape or not _as_stored(buffer) or not _writable((buffer,))):
                break
            row.append(address(buffer))
        else:
            rows.setdefault(dtype, []).append(row)
            taken.setdefault(dtype, []).append(param)
            continue
        leftover.append(param)
    stride = _codegen.META_FIXED + 2 + len(names)
    tables = {dtype: Table(columns_of(rows[dtype], stride), taken[dtype]) for dtype in rows}
    if leftover and tables:
        _keep_apart(tables, leftover, group["params"])
    return tables, leftover


def _keep_apart(tables: dict[torch.dtype, Table], leftover: list[torch.Tensor],
                params: Sequence[torch.Tensor]) -> None:
    """Move to ``leftover`` every row whose memory overlaps a parameter the core will step (or its
    gradient): the core then steps them all, in the group's order, as torch does. (Overlaps among rows
    the kernel finds itself.)"""
    aliased = _aliased(params)
    if not aliased:
        return
    for dtype, table in list(tables.items()):
        count = len(table.params)
        stride = len(table.meta) // count
        kept = [index for index, param in enumerate(table.params) if id(param) not in aliased]
        leftover.extend(param for param in table.params if id(param) in aliased)
        tables[dtype] = Table(array("q", [table.meta[c * count + index] for c in range(stride) for index in kept]),
                              [table.params[index] for index in kept])


def fused_route(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any], owner: str,
                reason: str, ieee: bool = False) -> tuple[str | None, str]:
    """Step ``group`` on the fused path: (the route's reason, "") when it did, and the parameters it
    could not take on the core; (None, why) when it took nothing, before anything moved. ``ieee``:
    the ``fused-ieee`` mode (IEEE square root: torch's numbers within 1 ulp of each root)."""
    names = buffer_names(rule, group)
    try:
        leftover, done, notes = _fused_group(rule, group, states, names, ieee)
    except Unsupported as error:
        return None, str(error)
    if done == 0 and leftover and notes:
        # nothing taken (the self-check refused the kernel): the caller's path steps the group whole
        return None, "; ".join(notes)
    if leftover:
        eager_step(rule, group, states, owner, params=leftover)
        reason += f"; {len(leftover)} parameter(s) on the core"
    for note in notes:
        reason += f"; {note}"
    return reason, ""


def _fused_group(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
                 names: Sequence[str], ieee: bool) -> tuple[list[torch.Tensor], int, list[str]]:
    """Step what the fused kernel can take of ``group``: (the parameters left to the core, rows stepped,
    notes). Raises Unsupported before touching anything when the rule or its hyper-parameters cannot be
    traced or built."""
    off = disabled()
    if off:
        raise Unsupported(off)
    params = group["params"]
    if params and not params[0].is_cpu:  # GPU: no fused kernel (docs/engine.md); the other paths take it
        raise Unsupported(f"the fused kernel is CPU-only (parameters on {params[0].device.type})")
    values = tuple(map(group.__getitem__, rule.math_names))
    hypers = dict(zip(rule.math_names, values, strict=True))
    maximize = bool(group["maximize"])
    numbers, hyper_row, kernel = _plan(rule, values, hypers, names, maximize)
    if kernel.function is None:
        raise Unsupported(kernel.problem or "no fused kernel")
    tables, leftover = gather(rule, group, states, names)
    stride = _codegen.META_FIXED + 2 + len(names)
    done = 0
    notes: list[str] = []
    for dtype, table in tables.items():
        problem, promise, roots = verify(kernel, rule, names, hypers, maximize, numbers, dtype, ieee)
        if problem:
            leftover.extend(table.params)
            notes.append(problem)
            continue
        if promise != BITWISE:
            notes.append(f"{str(dtype).removeprefix('torch.')}: IEEE sqrt, within 1 ulp of each of torch's roots")
        rows = len(table.params)
        reject = call(kernel, dtype, table.meta, rows, stride, hyper_row, len(numbers), 0.0, True, roots)
        rejected = rows - reject.count(0)
        if rejected:
            leftover.extend(p for p, flag in zip(table.params, reject, strict=True) if flag)
        done += rows - rejected
    return leftover, done, notes


def _plan(rule: Rule, values: tuple[Any, ...], hypers: Mapping[str, Any], names: Sequence[str],
          maximize: bool) -> tuple[list[float], array, Kernel]:
    """The hyper-parameters as the kernel's numbers (and their row for the C call), and the kernel.
    Per rule, the last answer is kept with the values it was made from when each is an immutable
    object (a float, int, bool, str, None or a tuple of those; held, so no other object takes its
    identity): the very same objects, buffers and ``maximize`` again give the same answer, without
    flattening and looking up again (a few us a step). Anything else is worked out afresh."""
    last = _PLANS.get(id(rule))
    if (last is not None and last[0] is rule and last[2] is maximize and last[3] == names
            and all(map(is_, values, last[1]))):
        current(last[4][2])
        return last[4]
    numbers, key = flatten_hypers(hypers)
    kernel = kernel_for(rule, hypers, names, maximize, numbers, key, 1.0 if rule.counts_steps else None)
    plan = (numbers, array("d", numbers), kernel)
    if all(map(is_immutable, values)):
        _PLANS[id(rule)] = (rule, values, maximize, list(names), plan)
    return plan


_PLANS: dict[int, tuple[Rule, tuple[Any, ...], bool, list[str], tuple[list[float], array, Kernel]]] = {}
