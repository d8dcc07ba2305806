"""How long the command line takes to answer, measured in one run of this script (docs/cli.md has the numbers):

* ``python -c "import torch"``, ``descentlab --help`` and ``descentlab race --help``, each run ``--repeats``
  times in rounds (one of each per round, the order rotated, so a burst of load from elsewhere on the machine
  hits all three alike); medians, and the median over rounds of each help's time over import torch's;
* the time from starting ``descentlab race --quick --out TMP`` to its first progress line: the race's progress
  bar, which it draws on a terminal only, so its stderr is a pseudo-terminal here. The race is stopped there
  (its process group terminated; its workers die with it) and TMP removed.

    .venv/bin/python benchmarks/cli_startup.py               # 7 rounds, 3 race starts
    .venv/bin/python benchmarks/cli_startup.py --repeats 10 --races 5

``descentlab`` runs as ``python -m descentlab`` with this interpreter (the console script does the same import).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

PYTHON = sys.executable
COMMANDS = {
    "import torch": [PYTHON, "-c", "import torch"],
    "descentlab --help": [PYTHON, "-m", "descentlab", "--help"],
    "descentlab race --help": [PYTHON, "-m", "descentlab", "race", "--help"],
}
FIRST_LINE_TIMEOUT_S = 300.0


def timed(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv`` to its exit (stdout and stderr discarded); it must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def rounds(repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds of every command in :data:`COMMANDS`, the order rotated each round."""
    names = list(COMMANDS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(timed(COMMANDS[name]))
    return times


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the race's process group (SIGKILL after 10 s) and reap it."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def first_progress_s() -> float:
    """Seconds from starting ``descentlab race --quick`` to the first progress output on its stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # tqdm draws nothing 0 wide
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        started = time.perf_counter()
        process = subprocess.Popen([PYTHON, "-m", "descentlab", "race", "--quick", "--out", os.path.join(tmp, "r")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                                   start_new_session=True)
        os.close(slave)
        seen = b""
        try:
            while b"race" not in seen:  # the bar: "race:   0%| ... | 0/N"
                left = FIRST_LINE_TIMEOUT_S - (time.perf_counter() - started)
                ready, _, _ = select.select([master], [], [], max(left, 0.0))
                if not ready:
                    raise TimeoutError(f"no progress line in {FIRST_LINE_TIMEOUT_S:g} s; stderr so far: {seen!r}")
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the race exited (EIO on the closed terminal)
                    chunk = b""
                if not chunk:
                    raise RuntimeError(f"the race ended before a progress line; stderr: {seen!r}")
                seen += chunk
            return time.perf_counter() - started
        finally:
            _stop(process)
            os.close(master)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the three short commands (default 7)")
    parser.add_argument("--races", type=int, default=3, help="race starts timed (default 3)")
    args = parser.parse_args()

    times = rounds(args.repeats)
    torch_s = times["import torch"]
    print(f"{args.repeats} rounds, medians (min-max):")
    for name, values in times.items():
        print(f"  {name:<24} {statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    for name in ("descentlab --help", "descentlab race --help"):
        ratio = statistics.median(h / t for h, t in zip(times[name], torch_s, strict=True))
        print(f"  {name} / import torch: {ratio:.2f} (median over rounds)")
    starts = [first_progress_s() for _ in range(args.races)]
    print(f"descentlab race --quick, start to first progress line: {statistics.median(starts):.2f} s median "
          f"({', '.join(f'{s:.2f}' for s in starts)})")


if __name__ == "__main__":
    main()
