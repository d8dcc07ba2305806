"""Step-time benchmark: descentlab's engine against torch.optim's for-loop, foreach and fused kernels.

Same process, same data: ``params`` float32 elements split into ``layout`` equal tensors, gradients
set once (a training loop with ``zero_grad(set_to_none=False)``), two warm-up steps (the first
creates the state per-tensor, the second binds the flat buffers and compiles; its time is reported
as ``setup_s``), then the median of ``repeats`` steps. Achieved bandwidth is the bytes a step must
move — read param, grad and every state buffer, write param and every state buffer — over its time,
next to this machine's measured copy bandwidth. ``peak_mb`` is the peak resident memory during the
timed steps above the process's resident memory before the tensors were made.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .optim import RuleOptimizer, resolve
from .optim._flat import set_engine

DEFAULT_OPTIMIZERS = ("momentum", "adagrad", "rmsprop", "adam")


@dataclass
class Row:
    optimizer: str
    layout: int
    variant: str
    ms: float
    setup_s: float
    gbps: float
    peak_mb: float


def parse_count(text: str) -> int:
    """``20M`` -> 20_000_000, ``500k`` -> 500_000, ``1e6`` -> 1_000_000."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise ValueError(f"--params must be a count like 20M or 500k, got {text!r}") from None
    if value < 1:
        raise ValueError(f"--params must be at least 1, got {text!r}")
    return int(value)


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


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


def _variants(name: str) -> list[tuple[str, Any, dict[str, Any]]]:
    entry = resolve(name)
    hypers = dict(entry.preset)
    out: list[tuple[str, Any, dict[str, Any]]] = [("descentlab", entry.cls, hypers)]
    torch_cls = getattr(torch.optim, entry.cls.__name__, None) if issubclass(entry.cls, RuleOptimizer) else None
    if torch_cls is not None:
        accepted = inspect.signature(torch_cls).parameters
        out.append(("torch for-loop", torch_cls, {**hypers, "foreach": False}))
        out.append(("torch foreach", torch_cls, {**hypers, "foreach": True}))
        if "fused" in accepted:
            out.append(("torch fused", torch_cls, {**hypers, "fused": True}))
    return out


def _time(name: str, variant: str, cls: Any, hypers: dict[str, Any], numel: int, layout: int,
          repeats: int, engine: str) -> Row:
    _reset_peak()
    base = _rss_mb("VmRSS")
    params = _tensors(numel, layout, seed=0)
    opt = cls(params, **hypers)
    if isinstance(opt, RuleOptimizer):
        set_engine(opt, engine)
    opt.step()
    start = time.perf_counter()
    opt.step()
    setup = time.perf_counter() - start
    _reset_peak()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    peak = _rss_mb("VmHWM") - base
    buffers = sum(isinstance(v, torch.Tensor) and v.dim() > 0 for v in opt.state[params[0]].values())
    seconds = statistics.median(times)
    moved = numel * 4 * (3 + 2 * buffers)
    del opt, params
    return Row(name, layout, variant, seconds * 1e3, max(setup - seconds, 0.0), moved / seconds / 1e9, peak)


def run(optimizers: Sequence[str] = DEFAULT_OPTIMIZERS, layouts: Sequence[int] = (1, 200, 5000),
        numel: int = 20_000_000, repeats: int = 7, engine: str = "auto") -> dict[str, Any]:
    """Time every optimizer × layout × variant; returns ``{"rows": [...], "copy_gbps": ..., ...}``."""
    for layout in layouts:
        if layout < 1 or layout > numel:
            raise ValueError(f"--layouts: each layout must be between 1 and the parameter count, got {layout}")
    entries = [(name, _variants(name)) for name in optimizers]
    rows = []
    for name, variants in entries:
        for layout in layouts:
            for variant, cls, hypers in variants:
                rows.append(_time(name, variant, cls, hypers, numel, layout, repeats, engine))
    return {"params": numel, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "copy_gbps": copy_bandwidth(numel), "engine": engine, "rows": [asdict(r) for r in rows]}


def table(result: dict[str, Any]) -> str:
    """The result as a text table, with speed-ups of descentlab over each torch variant."""
    lines = [f"params={result['params']:,}  threads={result['threads']}  torch {result['torch']}  "
             f"copy bandwidth {result['copy_gbps']:.1f} GB/s  engine={result['engine']}",
             f"{'optimizer':<10} {'layout':>6}  {'variant':<15} {'ms':>8} {'ours x':>7} {'GB/s':>6} "
             f"{'%copy':>6} {'peak MB':>8} {'setup s':>8}"]
    rows = result["rows"]
    for row in rows:
        ours = next(r for r in rows if r["optimizer"] == row["optimizer"] and r["layout"] == row["layout"]
                    and r["variant"] == "descentlab")
        speedup = row["ms"] / ours["ms"]
        lines.append(f"{row['optimizer']:<10} {row['layout']:>6}  {row['variant']:<15} {row['ms']:>8.2f} "
                     f"{speedup:>7.2f} {row['gbps']:>6.1f} {100 * row['gbps'] / result['copy_gbps']:>6.0f} "
                     f"{row['peak_mb']:>8.0f} {row['setup_s']:>8.2f}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str) -> None:
    """Write atomically: temp file in the same folder, fsync, rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
