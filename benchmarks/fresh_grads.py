"""What ``zero_grad(set_to_none=True)`` (torch's default) costs the flat engine, against torch fused.

``descentlab bench`` sets gradients once, as a loop with ``zero_grad(set_to_none=False)`` leaves them:
backward then accumulates into ``p.grad``, which the flat engine made a view of its gradient buffer.
After ``zero_grad()`` with torch's default, backward hands every parameter a fresh gradient tensor, and
the engine must copy those into its buffer before the one pass over it: one more read and write of
every gradient. torch's fused kernels read the fresh tensors where they are.

    .venv/bin/python benchmarks/fresh_grads.py [--params 20M] [--layouts 1,40,200] [--repeats 15] [--all-staged]

Prints, per optimizer and layout, the median ms of a step for descentlab and torch fused with kept
gradients and with a fresh gradient tensor per parameter each step (the tensors are made before the
timer starts, as backward would, and freed after it stops, as the next ``zero_grad`` would), and
descentlab's speed-up paired per round. ``--all-staged`` stages every gradient in the flat buffer
(``_flat.OWN_GRAD_NUMEL`` raised past every layout), to see what stepping big parameters on their own
gradients costs and saves. The caches are flushed (untimed) before every timed step, as
``descentlab bench`` does (:class:`descentlab.bench.CacheFlush`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import descentlab.optim as dl
from descentlab.bench import CacheFlush, parse_count
from descentlab.optim import _flat

OPTIMIZERS = {"momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}), "adam": ("Adam", {"lr": 1e-3})}


def _time(numel: int, layout: int, cls: str, hypers: dict, fresh: bool, repeats: int) -> tuple[float, float, float]:
    gen = torch.Generator().manual_seed(0)
    sizes = [numel // layout] * layout
    sides = []
    for make in (getattr(dl, cls), lambda ps, **h: getattr(torch.optim, cls)(ps, fused=True, **h)):
        params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in sizes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        sides.append((params, make(params, **hypers)))
    flush = CacheFlush()
    times: list[list[float]] = [[], []]
    for round_ in range(repeats + 2):
        for i in ((0, 1) if round_ % 2 == 0 else (1, 0)):
            params, opt = sides[i]
            if fresh:
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen) * 1e-3
            arrived = [p.grad for p in params]  # freed after the timer, as zero_grad would free them
            flush()
            start = time.perf_counter()
            opt.step()
            if round_ >= 2:  # two warm-up rounds: state creation, binding
                times[i].append(time.perf_counter() - start)
            del arrived
    paired = statistics.median(f / o for o, f in zip(times[0], times[1], strict=True))
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3, paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="20M")
    parser.add_argument("--layouts", default="1,40,200")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--all-staged", action="store_true", help="stage every gradient in the flat buffer")
    args = parser.parse_args()
    if args.all_staged:
        _flat.OWN_GRAD_NUMEL = parse_count(args.params) + 1
    numel, layouts = parse_count(args.params), [int(x) for x in args.layouts.split(",")]
    header = f"{'optimizer':<10} {'layout':>6}  {'gradients':<10} {'descentlab ms':>13} {'fused ms':>9}"
    print(f"{header} {'fused/ours':>10}")
    for name, (cls, hypers) in OPTIMIZERS.items():
        for layout in layouts:
            for fresh in (False, True):
                ours, fused, paired = _time(numel, layout, cls, hypers, fresh, args.repeats)
                print(f"{name:<10} {layout:>6}  {'fresh' if fresh else 'kept':<10} {ours:>13.2f} {fused:>9.2f} "
                      f"{paired:>9.2f}x")


if __name__ == "__main__":
    main()
