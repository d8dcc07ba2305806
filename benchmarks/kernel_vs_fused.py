"""The compiled SGD-momentum update against torch's fused kernel on the same buffers, without the
optimizer around either: is the element loop itself as fast as torch's hand-written one?

    .venv/bin/python benchmarks/kernel_vs_fused.py [--params 20M] [--rounds 60]

Builds descentlab's SGD(momentum=0.9) on one tensor, steps it until the engine calls its compiled graph
directly, then times that direct call (the Inductor loop, plus the few microseconds of building its
inputs) and ``torch._fused_sgd_`` on the same parameter, gradient and momentum buffers, one after the
other in each round. Prints both medians and the paired ratio fused/ours (median of each round's ratio).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import descentlab.optim as dl
from descentlab.bench import parse_count
from descentlab.optim import _flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="20M")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    numel = parse_count(args.params)
    param = torch.nn.Parameter(torch.zeros(numel))
    param.grad = torch.rand(numel) * 1e-3
    opt = dl.SGD([param], lr=0.01, momentum=0.9)
    dl.set_engine(opt, "compiled")
    for _ in range(4):
        opt.step()
    bucket = next(iter(_flat._engine(opt).plans.values())).buckets[0]
    kernel = bucket.memo[2] if bucket.memo else None
    direct = None if kernel is None else kernel.direct.get((param.device, numel))
    if direct is None:
        raise SystemExit("the engine did not map a direct call for this bucket; nothing to compare")
    grad, buffer = param.grad.view(-1), opt.state[param]["momentum_buffer"].view(-1)
    assert bucket.flat_p is not None
    scalars = (torch.tensor(0.01, dtype=torch.float64),)

    def ours() -> None:
        direct((bucket.flat_p, grad, [buffer], None, list(scalars)))

    def fused() -> None:
        torch._fused_sgd_([bucket.flat_p], [grad], [buffer], weight_decay=0.0, momentum=0.9, lr=0.01,
                          dampening=0.0, nesterov=False, maximize=False, is_first_step=False)

    times: dict[str, list[float]] = {"ours": [], "fused": []}
    for round_ in range(args.rounds):
        for name, run in (("ours", ours), ("fused", fused)) if round_ % 2 == 0 else (("fused", fused), ("ours", ours)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    paired = statistics.median(f / o for o, f in zip(times["ours"], times["fused"], strict=True))
    print(f"{numel:,} float32: compiled loop {statistics.median(times['ours']) * 1e3:.2f} ms, "
          f"torch fused {statistics.median(times['fused']) * 1e3:.2f} ms, fused/ours paired {paired:.3f}")


if __name__ == "__main__":
    main()
