"""Step-time benchmark: descentlab's engine modes against torch.optim's for-loop, foreach and fused kernels.

Method (all in one process, same data for every variant):

* ``params`` float32 elements split into ``layout`` equal tensors, gradients set once (a training loop
  with ``zero_grad(set_to_none=False)``).
* Variants: one ``descentlab <mode>`` per engine mode asked for (``set_engine``: ``auto``, ``eager``,
  ``flat``, ``compiled``), then torch's for-loop, foreach and fused (where torch has them).
* Compilation is paid before anything is timed: each variant first runs two steps on a small problem
  (:data:`WARM_NUMEL` elements) in its engine mode; each descentlab mode's time there is reported as
  ``compile_s`` (for ``compiled``: ``torch.compile`` of the rule's update, which has dynamic shapes,
  so the real run reuses it).
* Per layout, each variant first runs alone for its memory: two warm-up steps (the first creates the
  state; the second's time is ``setup_s``), then two measured steps. Then all variants are built side by
  side and stepped in rounds, ``repeats`` steps each, one step of every variant per round in a seeded
  random order (a burst of load from elsewhere on the machine hits every variant alike, and no variant
  always follows the same one); ``ms`` is the median. Before each timed step :class:`CacheFlush` reads,
  untimed, a buffer of 1.25x the CPU's last-level cache, so every step starts with cold caches, as in
  training where forward and backward run between steps, and clean ones: a read leaves no dirty lines,
  so no step pays for writing back what the variant before it wrote. Without a flush, torch's three
  variants (one Python class) warmed each other's code while descentlab's ran cold after them; with the
  earlier flush (64 MiB copied, written into the cache) and a fixed cyclic order, on a machine with a
  260 MB L3 each variant always followed the same one and inherited its dirty lines. The timed steps run
  with glibc's mmap threshold where a long-running process settles (:func:`fix_malloc`), not the 64 KiB
  the memory count needs: at 64 KiB every temporary of torch's for-loop and foreach variants would be
  page-faulted in fresh at every step. Speed-ups (``x for-loop``, ``x foreach``, ``x fused`` on each
  descentlab row, and the targets) are paired: each round's time of the torch variant over that
  descentlab mode's time in the same round, median over rounds. On a shared 2-core machine whose memory
  speed drifts by up to 2x (torch fused momentum at one tensor took 5.5-9.0 ms across runs of this
  bench), the paired ratio cancels the drift that both steps of a round see alike.
* ``GB/s``: the bytes a step must move — read param, grad and every state buffer, write param and every
  state buffer — over its time, next to this machine's measured copy bandwidth (``b.copy_(a)``).
* ``peak MB`` = held + transient. *Held*: bytes malloc has handed out and not taken back (glibc
  ``mallinfo2``: every arena plus mmapped blocks) after the warm-up steps, minus the same count before
  the variant's tensors were made — so freed-but-cached heap is not counted, and any copy of params,
  grads or state an engine kept would be. *Transient*: growth of the resident set's high-water mark
  (``VmHWM``, reset first) during the two measured steps, with glibc's mmap threshold fixed at 64 KiB
  so temporaries of that size or more are fresh pages (smaller ones reusing cached heap are missed).
  Code (Inductor, compiled kernels) was loaded by the warm-up before any baseline. ``data MB`` is the
  floor: param, grad and state bytes.
* ``engine`` names the path descentlab's last timed step took (``last_routes``: eager = the core,
  flat, compiled).

:func:`training_step` times a full MNIST-1D MLP training step (forward, backward, step) with
descentlab's Adam and ``torch.optim.Adam()`` defaults, alternating, in the same process.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import inspect
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_text
from .optim import RuleOptimizer, last_routes, resolve, set_engine
from .optim.engine import MODES
from .resources import check_fits

DEFAULT_OPTIMIZERS = ("momentum", "adagrad", "rmsprop", "adam")
DEFAULT_ENGINES = ("auto", "fused-ieee")
TORCH_VARIANTS = ("torch for-loop", "torch foreach", "torch fused")
OURS = "descentlab "
"""Prefix of descentlab's variants: ``descentlab auto``, ``descentlab compiled``, ..."""
AS_GIVEN = "as given (not a rule)"
"""The one row of an optimizer that is not a descentlab rule (``torch.optim:Adam``, a factory)."""
WARM_NUMEL = 1 << 16
"""Elements of the small problem each variant runs first (compiles and loads code before timing)."""
FLUSH_MIN_BYTES = 64 * 2**20
"""The least :class:`CacheFlush` reads, where the cache size is unknown or small."""
MMAP_THRESHOLD = 64 * 1024
TIMING_MMAP_THRESHOLD = 32 * 2**20


@dataclass
class Row:
    optimizer: str
    layout: int
    variant: str
    engine: str
    ms: float
    setup_s: float
    gbps: float
    peak_mb: float
    data_mb: float
    speedup: dict[str, float]
    """For a descentlab row: per torch variant, that variant's time over this row's, per round (adjacent
    steps), median over rounds (> 1: descentlab is faster). Empty for torch's rows."""


def parse_count(text: str) -> int:
    """``20M`` -> 20_000_000, ``500k`` -> 500_000, ``1e6`` -> 1_000_000."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise ValueError(f"--params must be a count like 20M or 500k, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"--params must be a count of at least 1, got {text!r}")
    return int(value)


BYTES_PER_PARAM_PER_VARIANT = 4 * (2 + 2)
"""Memory per parameter of one variant while a layout is timed: float32 param, grad and up to two state
buffers; every variant (descentlab per engine mode, torch's three) is built side by side."""


def check_options(optimizers: Sequence[str], layouts: Sequence[int], numel: int,
                  engines: Sequence[str] = DEFAULT_ENGINES) -> None:
    """Refuse, before anything is allocated, options the benchmark cannot run: a repeated optimizer or
    layout, unknown optimizers, layouts outside [1, params], and a parameter count whose tensors would
    not fit in memory."""
    for option, values in (("--optimizers", list(optimizers)), ("--layouts", list(layouts))):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            given = ",".join(str(v) for v in values)
            raise ValueError(f"{option} {given!r}: {', '.join(repeated)} given twice (each is one benchmark: give it "
                             "once)")
    for name in optimizers:
        resolve(name)  # unknown names raise ValueError listing the known ones
    for layout in layouts:
        if layout < 1 or layout > numel:
            raise ValueError(f"--layouts: each layout must be between 1 and the parameter count, got {layout}")
    variants = len(engines) + len(TORCH_VARIANTS)
    check_fits(f"--params {numel:.3g} (param, grad and state of {variants} variants at once)",
               numel * BYTES_PER_PARAM_PER_VARIANT * variants)


# -- memory --------------------------------------------------------------------------------------
@functools.cache
def c_library() -> ctypes.CDLL | None:
    """The C library (Linux only; None elsewhere), for malloc's knobs and counters."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def fix_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (no dynamic raise) and its trim threshold at twice
    that. For the memory count, :data:`MMAP_THRESHOLD`: freed large tensors leave the resident set. For
    timing, :data:`TIMING_MMAP_THRESHOLD`: where glibc's dynamic threshold settles in a long-running
    process (it rises to each freed mmapped block's size, up to 32 MiB), so temporaries under 32 MiB are
    reused from the heap rather than page-faulted in fresh at every step, as in training."""
    libc = c_library()
    # -3 = M_MMAP_THRESHOLD, -1 = M_TRIM_THRESHOLD
    return bool(libc is not None and libc.mallopt(-3, threshold) and libc.mallopt(-1, 2 * threshold))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _live_bytes() -> float:
    """Bytes malloc has handed out and not taken back (every arena + mmapped blocks); RSS as a fallback."""
    libc = c_library()
    try:
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        return float(info.uordblks + info.hblkhd)
    except (AttributeError, TypeError):
        return _rss_mb("VmRSS") * 2**20


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _release() -> None:
    gc.collect()
    libc = c_library()
    if libc is not None:
        libc.malloc_trim(0)


def _reset_peak() -> None:
    _release()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
    except OSError:
        pass


# -- timing --------------------------------------------------------------------------------------
def copy_bandwidth(numel: int, repeats: int = 5) -> float:
    """GB/s of ``b.copy_(a)`` over ``numel`` float32 elements (bytes read + written)."""
    a, b = torch.randn(numel), torch.empty(numel)
    b.copy_(a)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - start)
    return 8 * numel / statistics.median(times) / 1e9


CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def last_level_cache_bytes(caches: Path = CPU_CACHES) -> int | None:
    """Size of the CPU's largest cache as Linux reports it (sysfs), or None where it cannot be read."""
    sizes = []
    for entry in caches.glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=None)


class CacheFlush:
    """Calling it reads (sums) a buffer of 1.25x the last-level cache (at least :data:`FLUSH_MIN_BYTES`):
    what a timed step touches afterwards comes from memory, and no dirty line of an earlier step is
    left for it to write back."""

    def __init__(self) -> None:
        size = max(FLUSH_MIN_BYTES, int(1.25 * (last_level_cache_bytes() or 0)))
        self.buffer = torch.ones(size // 4)

    def __call__(self) -> None:
        self.buffer.sum()


def _tensors(numel: int, layout: int, seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    sizes = [numel // layout] * layout
    sizes[0] += numel - sum(sizes)
    params = []
    for size in sizes:
        p = torch.nn.Parameter(torch.randn(size, generator=gen))
        p.grad = torch.randn(size, generator=gen)
        params.append(p)
    return params


Variant = tuple[str, Any, dict[str, Any], str]
"""``(name, optimizer class, hyper-parameters, engine mode)``; the mode is descentlab's only."""


def parse_engines(text: str) -> list[str]:
    """``"auto,compiled"`` -> ``["auto", "compiled"]``; each an engine mode, none twice."""
    engines = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in engines if e not in MODES]
    if not engines or bad or len(set(engines)) != len(engines):
        raise ValueError(f"--engine must be a comma-separated list of distinct modes from {', '.join(MODES)}, "
                         f"got {text!r}")
    return engines


def _variants(name: str, engines: Sequence[str]) -> list[Variant]:
    entry = resolve(name)
    hypers = dict(entry.preset)
    ours = isinstance(entry.cls, type) and issubclass(entry.cls, RuleOptimizer)
    if not ours:  # a torch.optim class or a factory: descentlab's engine modes do not apply, one row as given
        return [(AS_GIVEN, entry.cls, hypers, "-")]
    out: list[Variant] = [(OURS + mode, entry.cls, hypers, mode) for mode in engines]
    torch_cls = getattr(torch.optim, entry.cls.__name__, None) if ours else None
    if torch_cls is not None:
        accepted = inspect.signature(torch_cls).parameters
        out.append(("torch for-loop", torch_cls, {**hypers, "foreach": False}, "-"))
        out.append(("torch foreach", torch_cls, {**hypers, "foreach": True}, "-"))
        if "fused" in accepted:
            out.append(("torch fused", torch_cls, {**hypers, "fused": True}, "-"))
    return out


def _make(cls: Any, hypers: dict[str, Any], params: list[torch.nn.Parameter], mode: str) -> Any:
    opt = cls(params, **hypers)
    if isinstance(opt, RuleOptimizer):
        set_engine(opt, mode)
    return opt


def _warm_up(cls: Any, hypers: dict[str, Any], mode: str) -> float:
    """Two steps on a small problem with ``mode``; seconds taken (the compile time, for descentlab)."""
    start = time.perf_counter()
    opt = _make(cls, hypers, _tensors(WARM_NUMEL, 1, seed=1), mode)
    opt.step()
    opt.step()
    return time.perf_counter() - start


def _engine_ran(opt: RuleOptimizer) -> str:
    """The path descentlab's last timed step took (``eager`` is the per-tensor core)."""
    return "/".join(sorted({route.path for route in last_routes(opt)}))


def _memory(cls: Any, hypers: dict[str, Any], numel: int, layout: int, mode: str) -> tuple[float, float]:
    """``(peak MB, setup s)`` of one variant, alone: bytes it holds after warm-up plus the transient
    growth of the resident set during two more steps (see the module docstring)."""
    _release()
    base = _live_bytes()
    params = _tensors(numel, layout, seed=0)
    opt = _make(cls, hypers, params, mode)
    opt.step()
    start = time.perf_counter()
    opt.step()
    setup = time.perf_counter() - start
    _reset_peak()
    held, rss = _live_bytes() - base, _rss_mb("VmRSS")
    for _ in range(2):
        opt.step()
    transient = max(_rss_mb("VmHWM") - rss, 0.0)
    del opt, params
    return held / 2**20 + transient, setup


def _time_layout(name: str, variants: list[Variant], numel: int, layout: int, repeats: int) -> list[Row]:
    """Memory of each variant alone, then the steps timed in rounds (one step of each variant per round,
    in a seeded random order, so a burst of load on the machine hits every variant alike and none always
    runs after the same one)."""
    fix_malloc(MMAP_THRESHOLD)
    memory = [_memory(cls, hypers, numel, layout, mode) for _, cls, hypers, mode in variants]
    fix_malloc(TIMING_MMAP_THRESHOLD)
    _release()
    runs = []
    for _, cls, hypers, mode in variants:
        params = _tensors(numel, layout, seed=0)
        opt = _make(cls, hypers, params, mode)
        opt.step()
        opt.step()
        runs.append((opt, params))
    times: list[list[float]] = [[] for _ in variants]
    flush, order = CacheFlush(), random.Random(layout)
    for _ in range(repeats):
        for index in order.sample(range(len(runs)), len(runs)):  # no variant always follows the same one
            flush()  # as forward and backward would: no variant finds another's code or data in cache
            start = time.perf_counter()
            runs[index][0].step()
            times[index].append(time.perf_counter() - start)
    rows = []
    by_name = {variant[0]: spent for variant, spent in zip(variants, times, strict=True)}
    for (variant, _, _, _), (opt, params), spent, (peak, setup) in zip(variants, runs, times, memory, strict=True):
        engine = _engine_ran(opt) if isinstance(opt, RuleOptimizer) else "-"
        buffers = sum(isinstance(v, torch.Tensor) and v.dim() > 0 for v in opt.state[params[0]].values())
        seconds = statistics.median(spent)
        moved = numel * 4 * (3 + 2 * buffers)
        speedup = {other: statistics.median(t / o for t, o in zip(by_name[other], spent, strict=True))
                   for other in TORCH_VARIANTS if other in by_name} if variant.startswith(OURS) else {}
        rows.append(Row(name, layout, variant, engine, seconds * 1e3, setup, moved / seconds / 1e9, peak,
                        numel * 4 * (2 + buffers) / 2**20, speedup))
    del runs
    return rows


def run(optimizers: Sequence[str] = DEFAULT_OPTIMIZERS, layouts: Sequence[int] = (1, 200, 5000),
        numel: int = 20_000_000, repeats: int = 25, engines: Sequence[str] = DEFAULT_ENGINES, train: bool = True,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every optimizer × layout × variant; returns ``{"rows": [...], "copy_gbps": ..., ...}``."""
    check_options(optimizers, layouts, numel, engines)
    entries = [(name, _variants(name, engines)) for name in optimizers]
    load_before = _load_average()
    malloc_fixed = fix_malloc()
    rows, compile_s = [], {}
    for name, variants in entries:
        if progress:
            progress(f"{name}: warm-up / compile")
        for variant, cls, hypers, mode in variants:
            seconds = _warm_up(cls, hypers, mode)
            if variant.startswith(OURS):
                compile_s[f"{name} {mode}"] = seconds
        gc.collect()
        gc.freeze()  # the long-lived objects (compiled code, modules) leave the collector: later collects are quick
        for layout in layouts:
            if progress:
                progress(f"{name}: {layout} tensors")
            rows.extend(_time_layout(name, variants, numel, layout, repeats))
    result: dict[str, Any] = {
        "params": numel, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "copy_gbps": copy_bandwidth(numel), "engines": list(engines), "compile_s": compile_s,
        "memory_method": "peak = malloc bytes held after warm-up (mallinfo2, minus before) + VmHWM growth "
        f"during 2 steps; glibc mmap threshold {'fixed at 64 KiB' if malloc_fixed else 'NOT fixed'}",
        "rows": [asdict(r) for r in rows]}
    result["load"] = {"before": load_before, "after": _load_average()}
    if train:
        if progress:
            progress("MNIST-1D MLP training step")
        result["training_step"] = training_step()
    gc.unfreeze()
    return result


def _load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none): other work that slowed the run."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def training_step(steps: int = 300, batch_size: int = 128, seed: int = 0) -> dict[str, Any]:
    """Median ms of one MNIST-1D MLP training step (zero_grad, forward, loss, backward, step) with
    descentlab's Adam (default engine, and ``fused-ieee``), ``torch.optim.Adam`` with torch's defaults and with
    ``fused=True``, in turn."""
    from .optim import Adam
    from .tasks import get_task

    task = get_task("mnist1d")
    x, y = task.x_train[:batch_size], task.y_train[:batch_size]
    setups = {"descentlab Adam": (Adam, {}), "descentlab Adam fused-ieee": (Adam, {}),
              "torch.optim.Adam": (torch.optim.Adam, {}), "torch.optim.Adam fused": (torch.optim.Adam, {"fused": True})}
    runs = {}
    for label, (cls, extra) in setups.items():
        model = task.make_model("mlp", seed=seed)
        runs[label] = (model, cls(model.parameters(), lr=1e-3, **extra))
        if label.endswith("fused-ieee"):
            set_engine(runs[label][1], "fused-ieee")
    times: dict[str, list[float]] = {label: [] for label in setups}

    def one(label: str) -> float:
        model, opt = runs[label]
        start = time.perf_counter()
        opt.zero_grad()
        task.loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    for _ in range(20):
        for label in setups:
            one(label)
    for _ in range(steps):
        for label in setups:
            times[label].append(one(label))
    params = sum(p.numel() for p in runs["torch.optim.Adam"][0].parameters())
    tensors = len(list(runs["torch.optim.Adam"][0].parameters()))
    return {"params": params, "tensors": tensors, "batch_size": batch_size, "steps": steps,
            "ms": {label: statistics.median(t) * 1e3 for label, t in times.items()}}


# -- report --------------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> str:
    """The result as a text table; each descentlab row with its paired speed-up over each torch variant."""
    compile_s = ", ".join(f"{k} {v:.1f}" for k, v in result.get("compile_s", {}).items())
    load = result.get("load")
    lines = [f"params={result['params']:,}  threads={result['threads']}  torch {result['torch']}  "
             f"copy bandwidth {result['copy_gbps']:.1f} GB/s  engines={','.join(result['engines'])}"
             + (f"  load average {load['before']:.1f} before, {load['after']:.1f} after" if load else ""),
             f"compile + warm-up s ({WARM_NUMEL:,} params, before timing): {compile_s}",
             f"memory: {result['memory_method']}",
             f"{'optimizer':<10} {'layout':>6}  {'variant':<20} {'engine':<8} {'ms':>8} {'x loop':>7} "
             f"{'x forea':>7} {'x fused':>7} {'GB/s':>6} {'%copy':>6} {'peak MB':>8} {'data MB':>8} {'setup s':>8}"]
    for row in result["rows"]:
        ratios = " ".join(f"{row['speedup'][v]:>7.2f}" if v in row["speedup"] else f"{'':>7}"
                          for v in TORCH_VARIANTS)
        lines.append(f"{row['optimizer']:<10} {row['layout']:>6}  {row['variant']:<20} {row['engine']:<8} "
                     f"{row['ms']:>8.2f} {ratios} {row['gbps']:>6.1f} "
                     f"{100 * row['gbps'] / result['copy_gbps']:>6.0f} {row['peak_mb']:>8.0f} "
                     f"{row['data_mb']:>8.0f} {row['setup_s']:>8.2f}")
    lines.append("x loop / x forea / x fused: the torch variant's step time over this descentlab row's, "
                 "paired per round, median (> 1: descentlab faster)")
    step = result.get("training_step")
    if step:
        ms = step["ms"]
        lines.append(f"MNIST-1D MLP training step ({step['params']:,} params in {step['tensors']} tensors, batch "
                     f"{step['batch_size']}, median of {step['steps']}): "
                     + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))
    return "\n".join(lines)


ONE_TENSOR_FACTOR = 1.0
"""At 1 tensor: at least this times torch fused's speed (torch's best where it has no fused kernel)."""
MANY_TENSORS = 5000
MANY_TENSOR_FACTORS = {"adam": 1.5, "adagrad": 1.5, "rmsprop": 1.5, "momentum": 1.5}
"""At :data:`MANY_TENSORS` tensors (issue 26): against torch fused, RMSprop against torch's best."""
AGAINST_ADAM = "descentlab.examples.lion:lion"
"""A user rule judged against torch fused *Adam* at :data:`MANY_TENSORS` tensors (no slower)."""


def targets(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Issue 26's targets that this result can judge, for each descentlab engine mode:
    ``(target, met, numbers)``."""
    rows = result["rows"]
    fastest = max(r["gbps"] for r in rows)
    out = []
    for ours in (r for r in rows if r["variant"].startswith(OURS)):
        name, layout, mode = ours["optimizer"], ours["layout"], ours["variant"][len(OURS):]
        speedup = ours["speedup"]
        adam = next((r for r in rows if (r["optimizer"], r["layout"], r["variant"])
                     == ("adam", layout, "torch fused")), None)
        if name == AGAINST_ADAM and layout == MANY_TENSORS and adam is not None:
            x = adam["ms"] / ours["ms"]
            out.append((f"lion @{layout} {mode}: no slower than torch fused adam", x >= 1.0,
                        f"{x:.2f}x (torch fused adam {adam['ms']:.2f} ms, ours {ours['ms']:.2f} ms; unpaired)"))
        if not speedup:
            continue
        best = min(speedup, key=speedup.__getitem__)  # the torch variant this mode beats by the least
        where = f"{name} @{layout} {mode}"
        if layout == 1:
            against = "torch fused" if "torch fused" in speedup else best
            label = "torch fused" if against == "torch fused" else "torch's best (no fused)"
            out.append(_speed(ours, f"{where}: >= {ONE_TENSOR_FACTOR}x {label}", rows, against,
                              ONE_TENSOR_FACTOR, fastest))
        factor = MANY_TENSOR_FACTORS.get(name)
        if layout == MANY_TENSORS and factor is not None:
            against = "torch fused" if name != "rmsprop" and "torch fused" in speedup else best
            label = "torch fused" if against == "torch fused" else "torch's best"
            out.append(_speed(ours, f"{where}: >= {factor}x {label}", rows, against, factor, fastest))
    return out


def _speed(ours: dict[str, Any], target: str, rows: Sequence[dict[str, Any]], against: str, factor: float,
           fastest_gbps: float) -> tuple[str, bool, str]:
    """A speed target: met when the paired speed-up of ``ours`` over the torch variant ``against`` is at least
    ``factor``. A missed one also says what it needs — the step time, and the rate at which that moves the
    step's bytes — next to the fastest rate any step of this run moved its bytes (torch's or ours): a need
    above that is not a few microseconds of Python but more memory bandwidth than this machine gave any
    kernel in the run."""
    x = ours["speedup"][against]
    reference = next(r for r in rows if (r["optimizer"], r["layout"], r["variant"])
                     == (ours["optimizer"], ours["layout"], against))
    numbers = f"{x:.2f}x ({against} {reference['ms']:.2f} ms, ours {ours['ms']:.2f} ms)"
    if x < factor:
        needed_ms = reference["ms"] / factor
        needed_gbps = ours["gbps"] * ours["ms"] / needed_ms
        numbers += (f"; needs <= {needed_ms:.2f} ms a step, {needed_gbps:.1f} GB/s; the fastest step of this run "
                    f"moved {fastest_gbps:.1f} GB/s")
    return target, x >= factor, numbers


def targets_text(result: dict[str, Any]) -> str:
    lines = ["targets (issue 26), per descentlab engine mode:"]
    if result["params"] != 20_000_000:
        lines[0] += (f" defined for 20M params; this run has {result['params']:,}, so read them as indicative "
                     "(small buffers fit in cache: copy bandwidth and per-step overheads differ)")
    judged = targets(result)
    if not judged:
        lines.append(f"  none judged: they need layouts 1 and {MANY_TENSORS} of adam, adagrad or rmsprop "
                     "(and momentum at 1)")
    for name, met, numbers in judged:
        lines.append(f"  {'met   ' if met else 'MISSED'}  {name:<46} {numbers}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str) -> None:
    """Write atomically (temp file in the same folder, fsync, rename), creating the folder if needed."""
    atomic_write_text(path, json.dumps(result, indent=1))
