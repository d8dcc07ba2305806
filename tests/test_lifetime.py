"""Workers die with their parent (descentlab.lifetime), by the kernel's signal and by the fallback watchdog."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from descentlab import lifetime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /proc")


def _running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def _orphan_worker(use_kernel_signal: bool) -> int:
    """Fork a parent that forks a worker (die_with_parent, then sleep 60 s) and is SIGKILLed half a second
    later, as a killed race is (nothing of it runs after the signal); the worker's pid."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the parent-to-be-killed
        os.close(read_end)
        worker = os.fork()
        if worker == 0:
            os.close(write_end)
            if not use_kernel_signal:  # the fallback alone: no parent-death signal asked for
                lifetime._set_parent_death_signal = lambda sig: False
            lifetime.die_with_parent(os.getppid(), poll_s=0.05)
            time.sleep(60)
            os._exit(0)
        os.write(write_end, f"{worker}\n".encode())
        time.sleep(0.5)  # the worker is set up
        os.kill(os.getpid(), signal.SIGKILL)
    os.close(write_end)
    data = b""
    while b"\n" not in data:
        chunk = os.read(read_end, 64)
        assert chunk, "the parent died before naming its worker"
        data += chunk
    os.close(read_end)
    os.waitpid(middle, 0)
    return int(data.split(b"\n")[0])


@pytest.mark.parametrize("use_kernel_signal", [True, False], ids=["pdeathsig", "watchdog"])
def test_a_worker_ends_within_a_second_of_its_parents_sigkill(use_kernel_signal):
    worker = _orphan_worker(use_kernel_signal)
    try:
        deadline = time.monotonic() + 3
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _running(worker)
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    pid = os.fork()
    if pid == 0:
        lifetime.die_with_parent(os.getppid() + 10**6)  # not our parent: as if it had died meanwhile
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == lifetime.EXIT_STATUS
