"""Keep freed memory in the process's heap, so that a training step's temporaries reuse it.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at start, raised as blocks are
freed) with fresh pages from the kernel and returns freed memory above its trim threshold, so a
step that allocates the same temporaries every time can page-fault on every one of them. A stacked
model's tensors are k times a model's (about 1 MB for MNIST-1D's MLP at k = 23): measured there,
page faults were 70 % of Adam's stacked update (1315 minor faults per step; 5.2 ms per step before,
1.5 ms after). :func:`keep_freed_memory` sets both thresholds as ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` would at start-up (``mallopt(3)``), for the worker processes a race
starts; blocks above 32 MiB (glibc's largest threshold) still come from the kernel. On a system
without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap (glibc's maximum on 64-bit systems)."""
TRIM_THRESHOLD = 128 << 20
"""Freed memory at the top of the heap is returned to the kernel only above this much."""
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when glibc took them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
