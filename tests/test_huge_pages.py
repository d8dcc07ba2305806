"""Flat buffers of 32 MiB or more are advised onto transparent huge pages (optim/_pages.py); smaller ones
are left alone, and so are the numbers the engine computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import _flat, _pages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping that holds ``address`` (``hg``: MADV_HUGEPAGE was applied)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


needs_thp = pytest.mark.skipif(not THP.exists(), reason="this kernel has no transparent huge pages")


@needs_thp
def test_a_big_flat_buffer_is_advised_onto_huge_pages_and_zeroed_when_asked() -> None:
    numel = _pages.HUGE_PAGE_BYTES // 4 + 1000
    flat = _pages.new_flat(numel, torch.float32, torch.device("cpu"), zero=True)
    assert flat.shape == (numel,) and not flat.any()
    middle = flat.data_ptr() + numel * 2
    assert "hg" in _vm_flags(middle)


@needs_thp
def test_a_small_flat_buffer_is_left_alone() -> None:
    flat = _pages.new_flat(1000, torch.float32, torch.device("cpu"))
    assert "hg" not in _vm_flags(flat.data_ptr())


@needs_thp
def test_the_engine_binds_big_buckets_on_huge_pages_with_the_same_numbers() -> None:
    torch.manual_seed(0)
    start = [torch.randn(7_000_000), torch.randn(1500, 1000)]  # 34 MiB of parameters in one bucket
    runs = []
    for mode in ("flat", "eager"):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = dl.Adam(params, lr=1e-2)
        dl.set_engine(opt, mode)
        runs.append((params, opt))
    for _ in range(3):
        grads = [torch.randn(t.shape) for t in start]
        for params, opt in runs:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for fast, ref in zip(*(params for params, _ in runs), strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)
    bucket = next(iter(_flat._engine(runs[0][1]).plans.values())).buckets[0]
    assert bucket.flat_p is not None
    for flat in (bucket.flat_p, *bucket.flat_state.values()):
        assert "hg" in _vm_flags(flat.data_ptr() + flat.numel() * flat.element_size() // 2)
