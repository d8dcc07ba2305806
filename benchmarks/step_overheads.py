"""The small costs around a flat-engine step that the README and the engine's docstrings quote.

    .venv/bin/python benchmarks/step_overheads.py [--params 20M]

Each line is a median. "Cold" means the caches were flushed just before (as ``descentlab bench`` does,
:class:`descentlab.bench.CacheFlush`), so the Python and torch code the measured call runs is out of
cache, as after a pass over a big model.

* dynamo layer: the compiled SGD-momentum update called through ``torch.compile`` (guards, input
  rebuilding, AOTAutograd's wrapper) against the engine's direct call of the same graph, paired.
* first torch op, cold: one ``torch.tensor`` after the flush.
* grad mode, cold: ``with torch.no_grad()`` against the two ``torch._C._set_grad_enabled`` calls.
* copy of the gradients: ``copy_`` of ``--params`` float32 elements (what staging fresh gradients costs).
* per-parameter checks: the flat engine's one-pass check at 5000 parameters, in Python and in C++
  (:mod:`descentlab.optim._native`, built first if not cached), cold and warm.
* one more update call: 40 direct calls on 40 slices against one call on the whole buffer.
* step Python, cold: ``optimizer.step()`` at one tensor with the compiled loop replaced by a no-op,
  next to torch's fused SGD stepping 16 elements (its Python plus a negligible kernel).
* float64 square roots: the share of inputs where ``torch.sqrt`` differs from ``math.sqrt``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

import torch

import descentlab.optim as dl
from descentlab.bench import CacheFlush, parse_count
from descentlab.optim import _flat, _native

FLUSH = CacheFlush()


def cold(fn: Callable[[], object], repeats: int = 25, flush: bool = True) -> float:
    """Median seconds of ``fn``, each call after a cache flush (``flush=False``: warm, back to back)."""
    times = []
    for _ in range(repeats):
        if flush:
            FLUSH()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(a: Callable[[], object], b: Callable[[], object], rounds: int = 30) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b`` stepped alternately."""
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def momentum(params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, _flat._Bucket, _flat._Kernel]:
    opt = dl.SGD(params, lr=0.01, momentum=0.9)
    dl.set_engine(opt, "compiled")
    for _ in range(4):
        opt.step()
    bucket = next(iter(_flat._engine(opt).plans.values())).buckets[0]
    assert bucket.memo is not None
    return opt, bucket, bucket.memo[2]


def one_tensor(numel: int) -> None:
    param = torch.nn.Parameter(torch.zeros(numel))
    param.grad = torch.rand(numel) * 1e-3
    opt, bucket, kernel = momentum([param])
    assert bucket.flat_p is not None
    grad, buffer = param.grad.view(-1), opt.state[param]["momentum_buffer"].view(-1)
    lr = torch.tensor(0.01, dtype=torch.float64)
    args = (bucket.flat_p, grad, [buffer], None, [lr])
    direct = kernel.direct[(param.device, numel)]
    assert direct is not None and kernel.compiled is not None
    through, skipped = paired(lambda: kernel.compiled(*args), lambda: direct(args))
    print(f"dynamo layer: through torch.compile {through:.2f} ms, direct {skipped:.2f} ms "
          f"(saves {through - skipped:.2f} ms)")

    print(f"first torch op, cold: {cold(lambda: torch.tensor(0.5)) * 1e6:.0f} us")

    def no_grad() -> None:
        with torch.no_grad():
            pass

    def switch() -> None:
        was = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        torch._C._set_grad_enabled(was)

    print(f"grad mode, cold: torch.no_grad() {cold(no_grad) * 1e6:.0f} us, "
          f"_set_grad_enabled {cold(switch) * 1e6:.0f} us")

    target = torch.empty(numel)
    copy_ms = cold(lambda: target.copy_(grad), 9) * 1e3
    print(f"copy of {numel:,} float32 gradients: {copy_ms:.2f} ms ({copy_ms * 1e6 / numel:.2f} ns per element)")

    pieces, size = 40, numel // 40
    slices = [(bucket.flat_p[i * size:(i + 1) * size], grad[i * size:(i + 1) * size],
               [buffer[i * size:(i + 1) * size]]) for i in range(pieces)]
    for _ in range(2):
        for p, g, b in slices:
            kernel.run_compiled((p, g, b, None, [lr]))
    piece = kernel.direct[(param.device, size)]
    assert piece is not None
    whole, split = paired(lambda: direct(args), lambda: [piece((p, g, b, None, [lr])) for p, g, b in slices])
    print(f"one more update call: {pieces} calls {split:.2f} ms against 1 call {whole:.2f} ms "
          f"({(split - whole) * 1e3 / (pieces - 1):.0f} us per extra call)")

    kernel.direct[(param.device, numel)] = lambda _args: None
    ours = cold(opt.step)
    kernel.direct[(param.device, numel)] = direct
    small = torch.nn.Parameter(torch.zeros(16))
    small.grad = torch.zeros(16)
    fused = torch.optim.SGD([small], lr=0.01, momentum=0.9, fused=True)
    fused.step()
    print(f"step Python, cold: descentlab {ours * 1e3:.3f} ms (loop stubbed), "
          f"torch fused on 16 elements {cold(fused.step) * 1e3:.3f} ms")


def many_tensors(numel: int) -> None:
    many = [torch.nn.Parameter(torch.zeros(numel // 5000)) for _ in range(5000)]
    for p in many:
        p.grad = torch.rand(p.shape)
    _, bucket, _ = momentum(many)
    assert bucket.bound_as_before()
    assert _native.wait() is not None, "the C++ check did not build"
    assert bucket.bound_as_before(native=True)
    for label, native in (("Python", False), ("C++", True)):
        check = cold(lambda native=native: bucket.bound_as_before(native=native))
        warm = cold(lambda native=native: bucket.bound_as_before(native=native), flush=False)
        print(f"per-parameter checks in {label}, 5000 parameters: cold {check * 1e3:.2f} ms "
              f"({check * 1e6 / 5000:.2f} us each), warm {warm * 1e3:.2f} ms")


def square_roots() -> None:
    rng = random.Random(0)
    values = [rng.uniform(1e-6, 1.0) for _ in range(20_000)]
    differ = sum(torch.sqrt(torch.tensor(v, dtype=torch.float64)).item() != math.sqrt(v) for v in values)
    print(f"float64 square roots: torch.sqrt differs from math.sqrt on {100 * differ / len(values):.1f} % of inputs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="20M")
    numel = parse_count(parser.parse_args().params)
    one_tensor(numel)
    many_tensors(numel)
    square_roots()


if __name__ == "__main__":
    main()
