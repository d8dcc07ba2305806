"""The flat buffers on transparent huge pages against the same buffers on 4 KiB pages, paired.

    .venv/bin/python benchmarks/huge_pages.py [--cases momentum:5000,adam:1] [--rounds 40]

Per case (optimizer : number of tensors, 20M float32 parameters in all, gradients kept), builds two
descentlab optimizers on the compiled engine over identical parameters: one whose flat buffers were
bound with huge pages advised (the default, :mod:`descentlab.optim._pages`), one with the advice turned
off. They step alternately in a seeded random order, caches flushed before every step
(:class:`descentlab.bench.CacheFlush`); prints both medians and the paired ratio 4K / huge (median of
each round's ratio; above 1 means huge pages are faster). Also prints how much of the process is on
huge pages (``AnonHugePages``), so a machine whose kernel ignores the advice shows it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from descentlab import bench
from descentlab.optim import _native, _pages


def _huge_kb() -> str:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return line.split(":")[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="momentum:5000,adam:1")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    _native.wait()
    bench.fix_malloc(bench.TIMING_MMAP_THRESHOLD)
    for case in args.cases.split(","):
        name, layout = case.split(":")
        _, cls, hypers = bench._variants(name)[0]
        runs = []
        for huge in (False, True):
            threshold = _pages.HUGE_PAGE_BYTES
            _pages.HUGE_PAGE_BYTES = threshold if huge else 2**62
            try:
                opt = bench._make(cls, hypers, bench._tensors(20_000_000, int(layout), seed=0), "compiled")
                opt.step()
                opt.step()  # binds the flat buffers
            finally:
                _pages.HUGE_PAGE_BYTES = threshold
            runs.append(opt)
        times: list[list[float]] = [[], []]
        flush, order = bench.CacheFlush(), random.Random(0)
        for _ in range(args.rounds):
            for index in order.sample(range(2), 2):
                flush()
                start = time.perf_counter()
                runs[index].step()
                times[index].append(time.perf_counter() - start)
        paired = statistics.median(a / b for a, b in zip(*times, strict=True))
        print(f"{name} @{layout}: 4K pages {statistics.median(times[0]) * 1e3:.2f} ms, huge pages "
              f"{statistics.median(times[1]) * 1e3:.2f} ms, 4K/huge paired {paired:.3f} "
              f"(AnonHugePages {_huge_kb()})")
        del runs


if __name__ == "__main__":
    main()
