"""A private single-node Ray for one race, on loopback only, that ends with the race however the race ends.

``ray.init()`` can start a local Ray inside the driver, but (Ray 2.60, measured) it then binds the
machine's outside address, and a driver killed with SIGKILL leaves two of its agents running. So a
race that has no cluster to join starts its own head as a separate process tree instead:

    python -m descentlab.racing.local_ray PARENT_PID TEMP_DIR -- ray start --head --block ...

This module's ``main`` (the *keeper*, in a session of its own) runs ``ray start --block`` in a new
session and waits. When the race's process is gone (it polls ``os.getppid()``) or the keeper gets
SIGTERM, it kills every process of that session — ``ray start``'s group (GCS, raylet, agents) and
Ray's worker processes, which each make a group of their own — and then removes the head's temp dir. The head gets
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``--node-ip-address 127.0.0.1``: with both, every
socket it listens on is on 127.0.0.1; dashboard and usage stats are off. Only a process holding the
head's token (made afresh for each race, handed to the driver) may join it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from queue import Empty, Queue
from types import FrameType

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 180.0
"""The longest a race waits for its Ray head to come up (about 15 s on a busy 2-core machine)."""
STOP_TIMEOUT_S = 10.0
"""How long :meth:`LocalRay.stop` waits for the keeper to end."""
END_TIMEOUT_S = 5.0
"""How long the keeper goes on killing what is left of the head's processes (SIGKILLed: normally 0.1 s)."""
POLL_S = 0.5
"""How often the keeper looks at its parent: Ray outlives a killed race by at most about this."""
READY = "Ray runtime started"
"""What ``ray start`` prints once the head is up."""
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0 (before ``ray`` is imported), Ray takes 127.0.0.1 as this node's address."""
ENV = {LOOPBACK_ONLY: "0", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
"""Loopback as the node's own address (without it Ray swaps 127.0.0.1 for the outside one); no usage stats."""


def new_token() -> str:
    return secrets.token_hex(32)


def auth_env(token: str) -> dict[str, str]:
    """Ray's token authentication with ``token``: for the head and for the driver (before ``import ray``)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def head_command(port: int, cpus: int, temp_dir: str) -> list[str]:
    """``ray start`` for a one-node head on loopback with ``cpus`` CPUs (and the GPUs Ray finds)."""
    return [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            f"--node-ip-address={LOOPBACK}", f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={temp_dir}"]


class LocalRay:
    """A running private head: ``address`` to pass to ``ray.init``; :meth:`stop` ends every process of it."""

    def __init__(self, keeper: subprocess.Popen[str], address: str, temp_dir: str) -> None:
        self.keeper = keeper
        self.address = address
        self.temp_dir = temp_dir

    @classmethod
    def start(cls, cpus: int, token: str) -> LocalRay:
        """Start the head with ``cpus`` CPUs; only a driver with ``token`` in :func:`auth_env` may join."""
        temp_dir = tempfile.mkdtemp(prefix="descentlab-ray-")
        port = free_loopback_port()
        env = {**os.environ, **ENV, **auth_env(token)}
        command = [sys.executable, "-m", __name__, str(os.getpid()), temp_dir, "--",
                   *head_command(port, cpus, temp_dir)]
        keeper = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        local = cls(keeper, f"{LOOPBACK}:{port}", temp_dir)
        try:
            local._wait_ready()
        except BaseException:
            local.stop()
            raise
        return local

    def _wait_ready(self) -> None:
        """Read the keeper's output (on a thread, for as long as it runs, so a full pipe never blocks
        Ray) until ``ray start`` says the head is up; RuntimeError with its last lines if it does not."""
        lines: Queue[str | None] = Queue()
        threading.Thread(target=_pump, args=(self.keeper, lines), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except Empty:
                break
            if line is None:  # the keeper ended: the head failed to start
                break
            if READY in line:
                return
            seen.append(line.rstrip())
        tail = " | ".join(seen[-5:])
        raise RuntimeError(f"backend ray: the local Ray head did not start ({tail or 'no output'})")

    def stop(self) -> None:
        """End the keeper, which ends every Ray process of this head; remove its temp dir. Idempotent."""
        if self.keeper.poll() is None:
            self.keeper.terminate()
            try:
                self.keeper.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # not expected: the keeper only sleeps between looks
                _kill_group(self.keeper.pid)
                self.keeper.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _pump(process: subprocess.Popen[str], lines: Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``, read from ``/proc`` (none found without it)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    members = []
    for entry in filter(str.isdigit, entries):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
            if state != "Z" and os.getsid(int(entry)) == sid:
                members.append(int(entry))
        except (OSError, IndexError):  # ended meanwhile
            continue
    return members


def _end_session(sid: int) -> None:
    """SIGKILL the process group ``sid`` and then every process left in session ``sid`` (Ray's worker
    processes each make a group of their own), until none is left or :data:`END_TIMEOUT_S` has passed."""
    _kill_group(sid)
    deadline = time.monotonic() + END_TIMEOUT_S
    while (left := _session(sid)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def keep(parent_pid: int, temp_dir: str, command: list[str]) -> int:
    """Run ``command`` in a session of its own until it ends, ``parent_pid`` is gone or SIGTERM comes;
    then kill every process of that session and remove ``temp_dir``."""
    child = subprocess.Popen(command, start_new_session=True)
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the race, which stops us in order
    while not stopping and child.poll() is None and os.getppid() == parent_pid:
        time.sleep(POLL_S)
    _end_session(child.pid)  # every Ray process (a throwaway head: nothing to save), workers included
    child.wait()
    shutil.rmtree(temp_dir, ignore_errors=True)  # after them: a worker still starting would recreate its folders
    return 0


def main(argv: list[str]) -> int:
    parent, temp_dir, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m descentlab.racing.local_ray PARENT_PID TEMP_DIR -- COMMAND...")
    return keep(int(parent), temp_dir, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
