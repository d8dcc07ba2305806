"""What the Ray backend's tests share: the quick race as a command, its rows, the comparison with a local
race, the start files that :mod:`ray_race_tasks` leaves, and stopping what a test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import descentlab

psutil = pytest.importorskip("psutil")

TESTS = Path(__file__).resolve().parent
SRC = Path(descentlab.__file__).resolve().parent.parent
DESCENTLAB = str(Path(sys.executable).with_name("descentlab"))
QUICK = ["--task", "lstsq", "--quick", "--optimizers", "sgd,adam", "--quiet"]
EXPECTED_ROWS = 18
"""A quick lstsq race of two optimizers (v3): 2 x 3 lrs on the first seed, the lrs its winners' edges added,
the best of each optimizer's settings on the second tuning seed, then each optimizer's selected setting on 2
seeds. The same count batched and per-run (measured on main). Two optimizers keep the Ray tests short: they
test where runs train, not what the optimizers do."""
DEADLINE_S = 120.0
METRICS = ("val_loss", "best_val_loss", "test_loss", "end_test_loss", "best_epoch")


def env(**extra: str) -> dict[str, str]:
    """This environment with the tree under test and ``tests/`` importable (the Ray nodes import the tasks)."""
    path = os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def race_command(out: Path, *args: str) -> list[str]:
    return [DESCENTLAB, "race", *QUICK, "--out", str(out), *args]


def race(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(race_command(out, *args), env=env, capture_output=True, text=True, timeout=DEADLINE_S)


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["phase"], row["optimizer"], row["schedule"], row["lr"], row["seed"], row["batch_size"],
            tuple(sorted(row["hypers"].items())))


def selected_lrs(stdout: str) -> list[list[str]]:
    """The summary table's optimizer and selected-setting columns (v3: ``lr 0.1, batch 64``)."""
    return [line.split()[:5] for line in stdout.splitlines() if "±" in line]


def assert_complete(out: Path) -> None:
    """The race in ``out`` is finished: its stages want no more runs."""
    from descentlab.racing.protocol import RaceConfig
    from descentlab.racing.record import RunRecord
    from descentlab.racing.stages import plan_arm

    config = RaceConfig.from_json(json.loads((out / "race.json").read_text()))
    records = [RunRecord.from_json(row) for row in rows(out)]
    assert all(plan_arm(config, arm, records).next_runs == [] for arm in config.arms())


def assert_same_as_local(local_out: Path, local_stdout: str, ray_out: Path, ray_stdout: str) -> None:
    """The Ray race has every run of the local one exactly once, none failed, with the same metrics (within
    float32 rounding), the same selections, and the same summary's selected lrs."""
    local_rows, ray_rows = rows(local_out), rows(ray_out)
    assert len(local_rows) == EXPECTED_ROWS
    assert_complete(local_out)
    assert_complete(ray_out)
    assert sorted(map(key, ray_rows)) == sorted(map(key, local_rows))  # every run once, nothing extra
    # v3: an lr an edge extension adds may diverge (that bounds the extension); no run fails with an error
    assert all(row["status"] in ("ok", "diverged") for row in ray_rows), [r["error"] for r in ray_rows if r["error"]]
    by_key = {key(row): row for row in local_rows}
    for row in ray_rows:
        expected = by_key[key(row)]
        assert row["status"] == expected["status"], key(row)
        for field in METRICS:
            want = expected[field]
            assert row[field] == (want if want is None else pytest.approx(want, rel=1e-6, abs=1e-7)), (field, key(row))
        assert row["selected"] == expected["selected"]
    assert len(selected_lrs(local_stdout)) == 2  # the two optimizers of QUICK
    assert selected_lrs(ray_stdout) == selected_lrs(local_stdout)


def starts(folder: Path) -> dict[str, tuple[int, str]]:
    """The runs started so far, by start file, as (worker pid, node name): see
    :func:`ray_race_tasks.lstsq_reports_starts`."""
    return {path.name: (int(path.name.split("-")[1]), path.read_text()) for path in folder.glob("[0-9]*-[0-9]*")}


def wait_for_start(folder: Path, node: str, driver: subprocess.Popen[str]) -> int:
    """The pid of the first worker on ``node`` to start a run (the held one), once there is one."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        pids = [pid for pid, name in starts(folder).values() if name == node]
        if pids:
            return pids[0]
        assert driver.poll() is None, f"the race ended before a run started on {node}: {driver.communicate()}"
        time.sleep(0.05)
    raise AssertionError(f"no run started on {node} in time")


def ended(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (is gone, or a zombie), waiting at most ``timeout`` seconds."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return not psutil.wait_procs([process], timeout=timeout)[1]


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGKILL ``process``'s group (it was started in a session of its own) and reap it."""
    kill_group(process.pid)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # not expected: SIGKILL cannot be caught
        pass
