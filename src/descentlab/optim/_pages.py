"""Flat buffers on transparent huge pages: fewer TLB misses in the one pass a step makes over them.

A step streams every flat buffer once; with 4 KiB pages a 20M-element float32 buffer spans 20,000
pages, each a TLB miss (and, in a virtual machine, a two-level page walk). :func:`new_flat` allocates
a CPU buffer and, when it has at least :data:`HUGE_PAGE_BYTES`, before anything touches it asks Linux to back
its 2 MiB-aligned interior with transparent huge pages (``madvise(MADV_HUGEPAGE)``, which takes effect
where ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or ``madvise``; with ``never``, or
off Linux, nothing changes). Measured here, paired in one process: a step 1-8 % faster
(benchmarks/huge_pages.py). torch can do the same for its own tensors with ``THP_MEM_ALLOC_ENABLE=1``.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import torch

HUGE_PAGE_BYTES = 32 * 2**20
"""CPU flat buffers at least this big are advised to use huge pages (2 MiB each). glibc serves every
request of 32 MiB or more (its largest mmap threshold) with a mapping of its own, so the advice never
lands on heap memory that later holds other allocations."""
_HUGE = 2 * 2**20
_MADVISE = getattr(mmap, "MADV_HUGEPAGE", None)


def new_flat(numel: int, dtype: torch.dtype, device: torch.device, zero: bool = False) -> torch.Tensor:
    """An uninitialised (or, with ``zero``, zeroed) 1-D buffer, on huge pages where that applies."""
    flat = torch.empty(numel, dtype=dtype, device=device)
    if flat.device.type == "cpu" and flat.numel() * flat.element_size() >= HUGE_PAGE_BYTES:
        advise_huge_pages(flat)
    if zero:
        flat.zero_()
    return flat


def advise_huge_pages(tensor: torch.Tensor) -> bool:
    """``madvise(MADV_HUGEPAGE)`` on the 2 MiB-aligned interior of ``tensor``'s memory; True if the
    kernel accepted it."""
    handle = libc()
    if handle is None or _MADVISE is None:
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // _HUGE) * _HUGE, end // _HUGE * _HUGE
    if last <= first:
        return False
    return handle.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADVISE) == 0


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library (Linux only; None elsewhere), for madvise here and malloc's knobs in the bench."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
