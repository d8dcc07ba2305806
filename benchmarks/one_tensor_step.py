"""One optimizer step on one big tensor: descentlab ``auto`` and ``fused-ieee`` against torch's fused
Adam, stepped in turn in one process, the median of the per-round ratios.

    .venv/bin/python benchmarks/one_tensor_step.py                 # torch's thread count
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/one_tensor_step.py --rounds 21

A narrower, quicker look than ``descentlab bench`` at the case the square root decides (docs/engine.md,
"Bitwise, checked"): which root ``auto`` took (the mode bits of its kernel) and torch fused / ours per
round (> 1: descentlab faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import descentlab.optim as dl
from descentlab.optim import _fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=20_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    runs: dict[str, tuple[torch.Tensor, torch.optim.Optimizer]] = {}
    for name in ("auto", "fused-ieee", "torch fused"):
        param = torch.nn.Parameter(torch.rand(args.params))
        param.grad = torch.randn(args.params)
        if name == "torch fused":
            optimizer: torch.optim.Optimizer = torch.optim.Adam([param], lr=1e-3, fused=True)
        else:
            optimizer = dl.Adam([param], lr=1e-3)
            dl.set_engine(optimizer, name)
        optimizer.step()  # builds and checks the kernel before anything is timed
        runs[name] = (param, optimizer)
    modes = {mode for variant in _fused.LIBRARY.variants.values() for kernel in variant
             for _, _, (_, _, mode) in kernel.checked.values()}
    roots = sorted("emulated MKL root" if m & _fused.EMULATE_ROOT else "IEEE root" if m & _fused.IEEE_ROOT
                   else "MKL's function or inline IEEE" for m in modes)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (_, optimizer) in runs.items():
            start = time.perf_counter()
            optimizer.step()
            times[name].append(time.perf_counter() - start)
    print(f"{args.params:,} float32 in one tensor, {torch.get_num_threads()} thread(s), {args.rounds} rounds; "
          f"kernel roots: {', '.join(roots)}")
    theirs = times["torch fused"]
    for name in ("auto", "fused-ieee"):
        ratio = statistics.median(t / o for o, t in zip(times[name], theirs, strict=True))
        print(f"{name:11s} {1e3 * statistics.median(times[name]):7.2f} ms   torch fused / ours {ratio:.3f}")
    print(f"torch fused {1e3 * statistics.median(theirs):7.2f} ms")


if __name__ == "__main__":
    main()
