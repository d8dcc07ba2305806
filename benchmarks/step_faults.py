"""Where a step's time goes at scale: per engine path, step time and the minor page faults one step takes.

    .venv/bin/python benchmarks/step_faults.py [--optimizers SGD,Adam] [--layouts 1x20000000,200x100000]

A temporary of 32 MiB or more is a fresh ``mmap`` every step (glibc's mmap threshold tops out at
32 MiB), so each of its 4 KiB pages faults in and is zeroed again: a full-size temporary of a 20M-element
float32 tensor is about 19,500 faults. Paths that make none (torch fused, in-place pieces) show 0.
One thread, malloc as in ``descentlab bench``'s timed steps; median of 5 steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

import descentlab.optim as dl
from descentlab import bench

VARIANTS = ("eager", "flat", "compiled", "torch fused")


def _make(cls_name: str, variant: str, count: int, numel: int) -> torch.optim.Optimizer:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(numel, generator=gen)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(numel, generator=gen)
    hypers = {"lr": 1e-3, **({"momentum": 0.9} if cls_name == "SGD" else {})}
    if variant == "torch fused":
        return getattr(torch.optim, cls_name)(params, fused=True, **hypers)
    opt = getattr(dl, cls_name)(params, **hypers)
    dl.set_engine(opt, variant)
    return opt


def measure(cls_name: str, variant: str, count: int, numel: int, steps: int = 5) -> tuple[float, float]:
    """``(median ms, median minor page faults)`` of one step."""
    opt = _make(cls_name, variant, count, numel)
    opt.step()
    opt.step()
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(times) * 1e3, statistics.median(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="SGD,Adam", help="torch.optim class names descentlab also has")
    parser.add_argument("--layouts", default="1x20000000,200x100000", help="comma-separated NxM: N tensors of M")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench.fix_malloc(bench.TIMING_MMAP_THRESHOLD)
    print(f"{'optimizer':9} {'layout':>13} {'path':12} {'ms':>8} {'faults/step':>12}")
    for cls_name in args.optimizers.split(","):
        for item in args.layouts.split(","):
            count, _, numel = item.partition("x")
            for variant in VARIANTS:
                ms, faults = measure(cls_name, variant, int(count), int(numel))
                print(f"{cls_name:9} {item:>13} {variant:12} {ms:8.1f} {faults:12.0f}", flush=True)


if __name__ == "__main__":
    main()
