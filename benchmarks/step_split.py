"""Where a descentlab step's time goes: the per-parameter check, the compiled loop, and the rest.

    .venv/bin/python benchmarks/step_split.py [--optimizer momentum] [--layout 5000] [--beside-torch]

Builds the bench's problem (20M float32 parameters in ``--layout`` tensors, gradients kept), steps
descentlab's optimizer on the compiled engine (the C++ check built first) and times, per step, the
engine's check (``_Bucket.bound_as_before``) and its direct call of the compiled loop inside the whole
``step()``. Caches are flushed before every step (:class:`descentlab.bench.CacheFlush`). With
``--beside-torch`` torch's for-loop, foreach and fused variants of the same optimizer are built in the
same process and stepped in the same random rounds, as ``descentlab bench`` does. Run it a few times:
each run allocates its buffers afresh, and where they land in memory moves the loop's time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from descentlab import bench
from descentlab.optim import _flat, _native


def _timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="momentum")
    parser.add_argument("--layout", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--beside-torch", action="store_true")
    args = parser.parse_args()
    assert _native.wait() is not None, "the C++ check did not build"
    bench.fix_malloc(bench.TIMING_MMAP_THRESHOLD)
    variants = bench._variants(args.optimizer)
    if not args.beside_torch:
        variants = variants[:1]
    runs = []
    for _, cls, hypers in variants:
        opt = bench._make(cls, hypers, bench._tensors(20_000_000, args.layout, seed=0), "compiled")
        opt.step()
        opt.step()
        runs.append(opt)
    bucket = next(iter(_flat._engine(runs[0]).plans.values())).buckets[0]
    assert bucket.memo is not None
    kernel = bucket.memo[2]
    (size, direct), = kernel.direct.items()
    assert direct is not None
    check: list[float] = []
    loop: list[float] = []
    bucket.bound_as_before = _timed(bucket.bound_as_before, check)  # type: ignore[method-assign]
    kernel.direct[size] = _timed(direct, loop)
    totals: list[list[float]] = [[] for _ in runs]
    flush, order = bench.CacheFlush(), random.Random(0)
    for _ in range(args.rounds):
        for index in order.sample(range(len(runs)), len(runs)):
            flush()
            start = time.perf_counter()
            runs[index].step()
            totals[index].append(time.perf_counter() - start)

    def ms(times: list[float]) -> str:
        return f"{statistics.median(times) * 1e3:.2f}"

    others = ", ".join(f"{name} {ms(t)}" for (name, _, _), t in zip(variants[1:], totals[1:], strict=True))
    print(f"{args.optimizer} @{args.layout}: descentlab step {ms(totals[0])} ms = check {ms(check)} + compiled "
          f"loop {ms(loop)} + rest" + (f"; beside it: {others} ms" if others else ""))


if __name__ == "__main__":
    main()
