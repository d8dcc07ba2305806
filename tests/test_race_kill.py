"""SIGKILL of a race's main process: no worker outlives it, and the rerun resumes at once.

The race runs as ``python -m descentlab race``, which also shows that form of the command works.

A real race (``python -m descentlab race``, two worker processes) is killed with SIGKILL while its
workers train; whatever it had started must be gone within a few seconds (the kernel's parent-death
signal, :mod:`descentlab.lifetime`), the directory's lock must be free, and rerunning the same command
must finish the race without losing or repeating a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from descentlab.cli import main
from descentlab.racing.protocol import RaceConfig
from descentlab.racing.record import RunRecord
from descentlab.racing.stages import plan_arm
from descentlab.racing.store import CONFIG, RESULTS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

RACE = ["race", "--task", "lstsq", "--optimizers", "sgd,momentum", "--lrs", "0.001,0.01,0.1", "--seeds", "1",
        "--epochs", "40", "--jobs", "2", "--quiet"]


def _still_to_run(out: Path) -> int:
    """How many runs the race's stages want next, given the complete lines of its results (v3 decides its runs
    as it goes — edge extension, divergence — so the total is not a formula of the options any more)."""
    config = RaceConfig.from_json(json.loads((out / CONFIG).read_text()))
    data = (out / RESULTS).read_bytes()
    records = [RunRecord.from_json(json.loads(line)) for line in data[:data.rfind(b"\n") + 1].splitlines()]
    return sum(len(plan_arm(config, arm, records).next_runs) for arm in config.arms())


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every living process below ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] != "Z":
                children.setdefault(stat[0], []).append(int(entry.name))
                starts[int(entry.name)] = stat[2]
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def _alive(processes: dict[int, int]) -> list[int]:
    """The processes of ``processes`` still running (same pid *and* start time, not a zombie)."""
    alive = []
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == start and stat[1] != "Z":
            alive.append(pid)
    return alive


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["batched", "per-run"])
def test_sigkill_of_the_race_leaves_no_process_and_the_rerun_resumes(tmp_path, capsys, engine):
    """Batched (the default): the 6 tuning runs train as two batches of 3, so the kill lands while a
    batch is midway; that batch is redone whole on the rerun, and no finished row is repeated."""
    out = tmp_path / "race"
    race_args = [*RACE, "--engine", engine]
    if engine == "batched":  # a batch of 3 runs finishes in about the time of one: a longer budget leaves the
        race_args += ["--epochs", "200"]  # kill time to land while the remaining runs train
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    race = subprocess.Popen([sys.executable, "-m", "descentlab", *race_args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    started: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while _lines(out / RESULTS) < 1:  # some runs done, the workers busy with the next ones
            assert race.poll() is None, race.communicate()[1].decode()
            assert time.monotonic() < deadline, "the race wrote no result in 120 s"
            started.update(_descendants(race.pid))
            time.sleep(0.05)
        started.update(_descendants(race.pid))
        assert started, "the race started no worker process"

        race.send_signal(signal.SIGKILL)
        race.wait(timeout=10)
        done_before = _lines(out / RESULTS)  # complete lines; a partial last one is redone
        assert _still_to_run(out) > 0, "the race finished before it could be killed"
        deadline = time.monotonic() + 5
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(started), f"processes left behind by the killed race: {_alive(started)}"
        race.communicate(timeout=5)  # a harness reading its output sees the end: no worker holds the pipes
    finally:
        for pid in _alive(started):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        if race.poll() is None:
            os.killpg(race.pid, signal.SIGKILL)
            race.wait()
        for pipe in (race.stdout, race.stderr):
            if pipe:
                pipe.close()

    rerun_started = time.monotonic()
    assert main([*race_args, "--out", str(out)]) == 0  # the lock died with the killed race: no "in use"
    rerun_s = time.monotonic() - rerun_started
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    keys = [(r["phase"], r["optimizer"], r["lr"], r["seed"], r["batch_size"]) for r in rows]
    assert _still_to_run(out) == 0 and len(set(keys)) == len(keys)  # nothing lost, nothing done twice
    assert len(keys) >= 2 * 3 + 2  # at least the grid (2 optimizers x 3 lrs) and one confirmation each
    # the rows written before the kill came from batches of 3 (batched) or single runs (per-run); a rerun
    # left with one run of a kind trains it alone, as the per-run engine does
    assert {r["engine"] for r in rows[:done_before]} == {engine}
    assert {r["engine"] for r in rows} <= {engine, "per-run"}
    assert f"({len(rows) - done_before} trained now" in printed
    assert rerun_s < 60
