"""How much memory this process may use, and the up-front refusal of a job that cannot fit in it.

The limit is the smaller of the machine's physical memory and the cgroup's ``memory.max`` (a
container's limit), read once per call; a job whose estimate exceeds it is refused with one line
naming what was asked for, the estimate and the limit, before anything is allocated.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_bytes() -> int | None:
    """Bytes of memory this process can have at most (None where the system does not say)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        pass
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def format_bytes(count: float) -> str:
    """``1.5 GB``-style (powers of 1000), with no float overflow for astronomic counts."""
    if count >= 10**21:
        return "over 1000 EB"
    count = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} EB"


def check_fits(what: str, needed_bytes: int, limit: int | None = None) -> None:
    """Raise ValueError (``what`` names the option and value) when ``needed_bytes`` exceed the limit."""
    limit = memory_limit_bytes() if limit is None else limit
    if limit is not None and needed_bytes > limit:
        amount = format_bytes(needed_bytes)
        amount = amount if amount.startswith("over") else f"about {amount}"
        raise ValueError(f"{what} needs {amount} of memory, more than the "
                         f"{format_bytes(limit)} this machine has")
