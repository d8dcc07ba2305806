"""The float32 square roots a fused kernel can take, timed in cache, one thread.

    .venv/bin/python benchmarks/square_roots.py

Calls a kernel's ``dl_float_roots`` (the roots its loops compute, block by block) on 32,768 float32 in
[0.01, 10) (256 KiB in and out, in L2) with each mode: torch's vector function (MKL's ``vmsSqrt`` on x86
wheels), the kernel's emulation of it (``EMULATE_ROOT``) and the IEEE root (``IEEE_ROOT``); prints ns per
element (median of 7 rounds of 2,000 calls) and whether each gives ``torch.sqrt``'s bits here.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import descentlab.optim as dl
from descentlab.optim import _fused


def main() -> None:
    torch.set_num_threads(1)
    param = torch.nn.Parameter(torch.rand(64))
    optimizer = dl.Adam([param])
    param.grad = torch.randn(64)
    optimizer.step()  # builds (or loads) Adam's kernel
    kernel = next(k for v in _fused.LIBRARY.variants.values() for k in v if k.float_roots is not None)
    mkl = _fused.torch_sqrt()[0]
    values = np.random.default_rng(0).random(32_768).astype(np.float32) * 10 + 0.01
    out = np.empty_like(values)
    theirs = torch.sqrt(torch.from_numpy(values)).numpy()
    modes = {"torch's function (MKL)": (mkl, _fused.VML_MODE), "emulated": (mkl, _fused.VML_MODE | _fused.EMULATE_ROOT),
             "IEEE": (mkl, _fused.VML_MODE | _fused.IEEE_ROOT)}
    for name, (function, mode) in modes.items():
        rounds = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(2_000):
                kernel.float_roots(values.size, values.ctypes.data, out.ctypes.data, function, mode)
            rounds.append((time.perf_counter() - start) / 2_000 / values.size * 1e9)
        same = bool(np.array_equal(out.view(np.uint32), theirs.view(np.uint32)))
        print(f"{name:24s} {statistics.median(rounds):.3f} ns/element   torch.sqrt's bits: {same}")


if __name__ == "__main__":
    main()
