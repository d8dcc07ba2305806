"""Worker processes that die with the process that started them, whatever ends it (SIGKILL included).

A pool's own shutdown covers a parent that exits normally, raises or gets Ctrl-C; nothing in the parent
runs when it is killed with SIGKILL (or the OOM killer), and its workers would then live on, holding
its output pipes. So each worker arranges its own end, when it starts (:func:`die_with_parent`, a pool
initializer):

1. Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` — the kernel kills the worker the moment its parent
   dies. (The parent is the *thread* that forked it; pools fork from the thread that submits work,
   which outlives its workers.)
2. Everywhere: a daemon thread that checks every :data:`POLL_S` seconds whether the parent is still
   the one it started with (``os.getppid()`` changes when a parent dies and the child is re-parented)
   and ends the worker with ``os._exit`` if not — the fallback where prctl is missing or refused.

Both check the parent *after* being set up, so a parent that died while the worker was starting is
caught too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

POLL_S = 0.5
"""How often the fallback watchdog looks at the parent: a worker outlives a killed parent by at most this."""
PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""
EXIT_STATUS = 70
"""Exit status of a worker that ended because its parent was gone."""


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; whether that was accepted."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(EXIT_STATUS)


def die_with_parent(parent_pid: int, poll_s: float = POLL_S) -> None:
    """Make this process end when ``parent_pid`` (the process that started it) is gone.

    Call it first thing in a child (e.g. a pool initializer with ``initargs=(os.getpid(),)`` evaluated
    in the parent). Returns at once; exits the process right away if the parent is already gone.
    """
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(EXIT_STATUS)
    threading.Thread(target=_watch, args=(parent_pid, poll_s), name="die-with-parent", daemon=True).start()
