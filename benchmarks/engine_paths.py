"""Where the flat path pays: per-step time of descentlab's core (``eager``) and flat pieces (``flat``)
against torch.optim's for-loop and foreach, over groups of N tensors of M elements.

    .venv/bin/python benchmarks/engine_paths.py [--optimizers adam,momentum] [--layouts 16x1000,2x2000000]
                                                [--repeats 30]

Prints, per (optimizer, N x M), the median step time of each variant measured in one process, in
rounds (one step of each variant per round, in a seeded random order), and the paired ratio
eager/flat (> 1: flat is faster). ``engine.FLAT_MIN_BYTES`` (the tensors the flat path takes, and
auto's choice) comes from this table (``docs/performance.md``). One thread, as the test suite and a
data-loader-heavy training loop run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch

import descentlab.optim as dl

LAYOUTS = ((4, 1_000), (16, 1_000), (16, 60_000), (64, 4_000), (256, 1_000), (1000, 1_000), (2, 2_000_000),
           (16, 250_000), (200, 100_000))
PRESETS = {"adam": ("Adam", {"lr": 1e-3}), "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
           "rmsprop": ("RMSprop", {"lr": 1e-3}), "adagrad": ("Adagrad", {"lr": 1e-2})}


def _make(cls_name: str, hypers: dict[str, Any], variant: str, count: int, numel: int) -> torch.optim.Optimizer:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(numel, generator=gen)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(numel, generator=gen)
    if variant in ("eager", "flat"):
        opt = getattr(dl, cls_name)(params, **hypers)
        dl.set_engine(opt, variant)
    else:
        opt = getattr(torch.optim, cls_name)(params, foreach=variant == "torch foreach", **hypers)
    opt.step()  # state created
    return opt


def measure(name: str, count: int, numel: int, repeats: int) -> dict[str, float]:
    cls_name, hypers = PRESETS[name]
    variants = ("eager", "flat", "torch for-loop", "torch foreach")
    opts = {v: _make(cls_name, hypers, v, count, numel) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    order = random.Random(count * 7919 + numel)
    for _ in range(repeats):
        for variant in order.sample(variants, len(variants)):
            start = time.perf_counter()
            opts[variant].step()
            times[variant].append(time.perf_counter() - start)
    row = {v: statistics.median(t) * 1e3 for v, t in times.items()}
    row["eager/flat"] = statistics.median(e / f for e, f in zip(times["eager"], times["flat"], strict=True))
    return row


def parse_layouts(text: str) -> list[tuple[int, int]]:
    """``"16x1000,2x2000000"`` -> ``[(16, 1000), (2, 2000000)]`` (N tensors x M elements)."""
    layouts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        count, _, numel = item.partition("x")
        if not (count.isdigit() and numel.isdigit() and int(count) > 0 and int(numel) > 0):
            raise SystemExit(f"--layouts: each layout must be NxM with N, M > 0 (e.g. 16x1000), got {item!r}")
        layouts.append((int(count), int(numel)))
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="adam,momentum")
    parser.add_argument("--layouts", default=",".join(f"{n}x{m}" for n, m in LAYOUTS),
                        help="comma-separated NxM: N tensors of M elements each")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    layouts = parse_layouts(args.layouts)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; ms per step (median of {args.repeats}); eager/flat paired")
    print(f"{'optimizer':10} {'layout':>14} {'eager':>9} {'flat':>9} {'for-loop':>9} {'foreach':>9} {'eager/flat':>11}")
    for name in args.optimizers.split(","):
        for count, numel in layouts:
            row = measure(name, count, numel, args.repeats)
            print(f"{name:10} {f'{count} x {numel}':>14} {row['eager']:9.3f} {row['flat']:9.3f} "
                  f"{row['torch for-loop']:9.3f} {row['torch foreach']:9.3f} {row['eager/flat']:11.2f}")


if __name__ == "__main__":
    main()
