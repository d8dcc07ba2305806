"""The batched race's optimizer update: the fused stacked step against the rule's update on the stacks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stacked_update.py

k = 23 copies of MNIST-1D's MLP (40-100-100-10) stacked, as the default race's tuning batch holds them;
each configuration its own lr. Prints the median ms of one update of all k, both ways, paired per round.
"""

from __future__ import annotations

import statistics
import time

import torch

import descentlab.optim as dl
from descentlab.optim.stacked import StackedRule

K = 23
SHAPES = [(K, 40, 100), (K, 100), (K, 100, 100), (K, 100), (K, 10, 100), (K, 10)]


def main(rounds: int = 50) -> None:
    torch.set_num_threads(1)
    for name, extra in [("Adam", {}), ("SGD", {"momentum": 0.9}), ("RMSprop", {})]:
        cls = getattr(dl, name)
        hypers = {**cls([torch.zeros(1, requires_grad=True)]).defaults, **extra}
        lr = torch.logspace(-4, -1, K, dtype=torch.float64)
        ways = {}
        for fused in (True, False):
            params = [torch.randn(s) for s in SHAPES]
            ways[fused] = (StackedRule(cls.rule, hypers, params, fused=fused), params, [torch.randn(s) for s in SHAPES])
        for rule, params, grads in ways.values():
            for _ in range(3):
                rule.step(params, grads, lr)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for fused, (rule, params, grads) in ways.items():
                start = time.perf_counter()
                rule.step(params, grads, lr)
                times[fused].append(time.perf_counter() - start)
        ratio = statistics.median(b / a for a, b in zip(times[True], times[False], strict=True))
        print(f"{name:8s} fused stacked step {statistics.median(times[True]) * 1e3:7.3f} ms   rule's update on the "
              f"stacks {statistics.median(times[False]) * 1e3:7.3f} ms   {ratio:.2f}x (paired)")


if __name__ == "__main__":
    main()
