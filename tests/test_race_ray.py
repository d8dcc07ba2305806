"""``race --backend ray``: on a real one-node Ray cluster (``ray start --head`` as separate processes, on
loopback only), the same records as the local backend, a worker killed mid-run retried, a SIGKILLed
driver resumed, and every Ray process the race started gone whatever ended it.

One cluster for the module (about 15 s to start on 2 busy cores); every race is the tiny lstsq race.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import descentlab
from descentlab.cli import main as cli_main
from descentlab.racing import ray_backend
from descentlab.racing.local_ray import ENV, LOOPBACK, auth_env, free_loopback_port, new_token
from ray_race_checks import (
    DEADLINE_S,
    EXPECTED_ROWS,
    QUICK,
    assert_complete,
    assert_same_as_local,
    ended,
    env,
    key,
    race,
    race_command,
    rows,
    starts,
    stop,
    wait_for_start,
)
from ray_race_tasks import HOLD_MARKER, NODE_NAME, STARTS_DIR

psutil = pytest.importorskip("psutil")
LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1"}

needs_ray = pytest.mark.skipif(ray_backend.importlib.util.find_spec("ray") is None, reason="ray not installed")


class Cluster:
    """A Ray head started by ``ray start --head --block`` in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_loopback_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.starts = tmp / "starts"
        self.starts.mkdir()
        self.held = tmp / "held"
        self.temp_dir = tempfile.mkdtemp(prefix="dl-ray-")  # short: Ray's socket paths must fit 107 bytes
        token = new_token()
        self.driver_env = env(**auth_env(token))
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                   f"--node-ip-address={LOOPBACK}", f"--port={self.port}", "--num-cpus=2", "--include-dashboard=false",
                   "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        node_env = env(**ENV, **auth_env(token), **{STARTS_DIR: str(self.starts), HOLD_MARKER: str(self.held),
                                                    NODE_NAME: "head"})
        self.log = open(tmp / "head.log", "w+")  # closed in stop()
        self.process = subprocess.Popen(command, env=node_env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            self.log.seek(0)
            if "Ray runtime started" in self.log.read():
                return
            assert self.process.poll() is None, f"ray start --head exited: {self.log.read()[-2000:]}"
            time.sleep(0.5)
        raise AssertionError("the Ray head did not start in time")

    def processes(self) -> list[Any]:
        """The head's processes: its process group, and the Ray workers (in groups of their own) under it."""
        group = [p for p in psutil.process_iter() if _pgid(p.pid) == self.process.pid]
        return list({p.pid: p for p in group + _descendants(self.process.pid)}.values())

    def stop(self) -> list[Any]:
        """Kill the head's group; wait for its Ray workers (in groups of their own) to end with their raylet;
        then remove the temp dir (not before: a worker still starting would make it again). The processes
        that outlived the group by 10 s, SIGKILLed then."""
        processes = self.processes()
        stop(self.process)
        self.log.close()
        left = _wait_gone(processes, timeout=10.0)
        for process in left:  # not expected; never leave one behind
            process.kill()
        _wait_gone(left, timeout=10.0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if ray_backend.importlib.util.find_spec("ray") is None:
        pytest.skip("ray not installed")
    head = Cluster(tmp_path_factory.mktemp("ray-cluster"))
    left: list[Any] = []
    try:
        head.wait_ready()
        yield head
    finally:
        left = head.stop()
    assert not left, f"a process of the test's Ray cluster outlived it: {left}"


def _listening(pids: set[int]) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _descendants(pid: int) -> list[Any]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _command(process: Any) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended (or a zombie) meanwhile
        return ""


def _temp_dirs(processes: list[Any]) -> set[str]:
    """The ``--temp-dir`` of the ``ray start`` among ``processes``."""
    return {arg.split("=", 1)[1] for p in processes for arg in _command(p).split() if arg.startswith("--temp-dir=")}


def _wait_gone(processes: list[Any], timeout: float = 20.0) -> list[Any]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


@needs_ray
def test_cluster_is_on_loopback_only(cluster: Cluster) -> None:
    """Every socket the head's processes listen on, and every node's address, is 127.0.0.1."""
    pids = {p.pid for p in cluster.processes()}
    assert len(pids) > 3  # gcs, raylet, agents ...
    listening = _listening(pids)
    assert listening and listening <= LOOPBACK_IPS, listening
    probe = "import json, ray; ray.init(address=%r); print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes()]))"
    probe_env = {**cluster.driver_env, **ENV}
    nodes = subprocess.run([sys.executable, "-c", probe % cluster.address], env=probe_env, capture_output=True,
                           text=True, timeout=DEADLINE_S)
    assert json.loads(nodes.stdout.strip().splitlines()[-1]) == [LOOPBACK], nodes.stderr[-2000:]


@needs_ray
def test_ray_race_matches_local_and_survives_a_killed_worker(cluster: Cluster, tmp_path: Path) -> None:
    """The test SIGKILLs the Ray worker process running the race's first run (held there until then):
    Ray reruns the run, the race finishes with every row once, and the records equal a local race's
    (same runs, same metrics, same selected lrs)."""
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
                             "start_new_session": True}
    local = subprocess.Popen(race_command(tmp_path / "local", "--jobs", "2"), env=env(), **pipes)  # meanwhile
    command = race_command(tmp_path / "ray", "--task", "ray_race_tasks:lstsq_reports_starts", "--backend", "ray",
                           "--address", cluster.address)
    driver = subprocess.Popen(command, env=cluster.driver_env, **pipes)
    try:
        held_pid = wait_for_start(cluster.starts, "head", driver)
        worker = psutil.Process(held_pid)
        assert worker in cluster.processes() and _command(worker).startswith("ray::"), _command(worker)
        worker.send_signal(signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=DEADLINE_S)
        local_stdout, local_stderr = local.communicate(timeout=DEADLINE_S)
    finally:
        stop(driver)
        stop(local)
    assert driver.returncode == 0, stderr[-3000:]
    assert local.returncode == 0, local_stderr[-2000:]
    assert cluster.held.exists() and ended(held_pid)
    assert_same_as_local(tmp_path / "local", local_stdout, tmp_path / "ray", stdout)
    started = starts(cluster.starts)
    assert len(started) == EXPECTED_ROWS + 1, started  # the killed run started twice: Ray retried it
    assert held_pid in {pid for pid, _ in started.values()}


@needs_ray
def test_sigkilled_driver_leaves_no_ray_and_resumes(cluster: Cluster, tmp_path: Path) -> None:
    """A race that started its own Ray is SIGKILLed mid-race: every process of that Ray ends with it;
    rerunning (here on the cluster) keeps the finished runs and adds each missing one once."""
    out = tmp_path / "race"
    command = race_command(out, "--task", "ray_race_tasks:lstsq_slow", "--backend", "ray", "--address", "local",
                           "--jobs", "2")
    driver = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not ((out / "results.jsonl").exists() and len(rows(out)) >= 2):
            assert driver.poll() is None and time.monotonic() < deadline, "the race ended before it could be killed"
            time.sleep(0.2)
        ray_processes = _descendants(driver.pid)
        assert "raylet" in " ".join(_command(p) for p in ray_processes)
        temp_dirs = _temp_dirs(ray_processes)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    left = _wait_gone(ray_processes)
    assert not left, [p.pid for p in left]
    assert len(temp_dirs) == 1 and not any(map(os.path.exists, temp_dirs)), temp_dirs  # nothing left on disk
    before = rows(out)
    assert 2 <= len(before) < EXPECTED_ROWS
    resumed = race(out, "--task", "ray_race_tasks:lstsq_slow", "--backend", "ray", "--address", cluster.address,
                    env=cluster.driver_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = rows(out)
    assert after[:len(before)] == before  # nothing finished is lost or rewritten
    assert len(after) == EXPECTED_ROWS and len(set(map(key, after))) == EXPECTED_ROWS
    assert_complete(out)
    assert f"({EXPECTED_ROWS - len(before)} trained now" in resumed.stdout


@needs_ray
def test_race_that_fails_stops_the_ray_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver fails mid-race (writing a result raises): the private Ray it started is stopped on the
    way out, and while it ran its node was on 127.0.0.1 and listened on loopback only."""
    from descentlab.racing import ResultsStore

    seen: dict[str, Any] = {}
    append = ResultsStore.append

    def failing_append(store: ResultsStore, record: Any) -> None:
        import ray

        seen["nodes"] = [node["NodeManagerAddress"] for node in ray.nodes()]
        seen["processes"] = [p for p in _descendants(os.getpid()) if _pgid(p.pid) not in groups_before]
        seen["commands"] = " ".join(_command(p) for p in seen["processes"])
        seen["temp_dirs"] = _temp_dirs(seen["processes"])
        seen["listening"] = _listening({p.pid for p in seen["processes"]})
        append(store, record)
        raise RuntimeError("the disk is gone")

    groups_before = {_pgid(p.pid) for p in _descendants(os.getpid())}  # the module's cluster, if it runs
    monkeypatch.setattr(ResultsStore, "append", failing_append)
    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    with pytest.raises(RuntimeError, match="the disk is gone"):
        descentlab.racing.run_race("lstsq", quick=True, out=tmp_path / "race", backend="ray", address="local", jobs=2,
                                   progress=False)
    assert seen["nodes"] == [LOOPBACK]
    assert seen["listening"] and seen["listening"] <= LOOPBACK_IPS, seen["listening"]
    assert "raylet" in seen["commands"]
    assert not _wait_gone(seen["processes"], timeout=10.0)
    assert len(seen["temp_dirs"]) == 1 and not any(map(os.path.exists, seen["temp_dirs"])), seen["temp_dirs"]
    assert len(rows(tmp_path / "race")) == 1  # the one result written is kept


def test_backend_ray_without_ray_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ray_backend.importlib.util, "find_spec", lambda name: None)
    code = cli_main(["race", *QUICK, "--backend", "ray", "--out", str(tmp_path / "race")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"descentlab race: error: {ray_backend.INSTALL_HINT}"]
    assert not (tmp_path / "race").exists()  # refused before anything was written


@pytest.mark.parametrize(("args", "message"), [
    (["--address", "127.0.0.1:6379"], "address '127.0.0.1:6379' is for --backend ray"),
    (["--backend", "ray", "--address", " "], "address must be a Ray address"),
])
def test_bad_backend_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                    message: str) -> None:
    code = cli_main(["race", *QUICK, *args, "--out", str(tmp_path / "race")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "race").exists()


def test_ray_needs_the_task_by_name(tmp_path: Path) -> None:
    from descentlab.tasks import get_task

    with pytest.raises(ValueError, match="not a Task object"):
        descentlab.racing.run_race(get_task("lstsq"), quick=True, out=tmp_path / "race", backend="ray")


def test_keeper_ends_the_processes_that_left_the_heads_group(tmp_path: Path) -> None:
    """Like Ray's workers, a process of the head's session moves to a process group of its own: the keeper
    ends it too (killing only ``ray start``'s group would not), and removes the temp dir after it."""
    temp_dir, pid_file = tmp_path / "head-temp", tmp_path / "moved.pid"
    temp_dir.mkdir()
    moved = f"import os, time; os.setpgid(0, 0); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    head = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {moved!r}]); time.sleep(60)"
    keeper = subprocess.Popen([sys.executable, "-m", "descentlab.racing.local_ray", str(os.getpid()), str(temp_dir),
                               "--", sys.executable, "-c", head], env=env(), start_new_session=True)
    pid = None
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (pid_file.exists() and pid_file.read_text()):
            assert keeper.poll() is None and time.monotonic() < deadline, "the head's process did not start"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        assert _pgid(pid) == pid and os.getsid(pid) != os.getsid(0)  # its own group, in the head's session
        keeper.terminate()  # what LocalRay.stop does
        assert keeper.wait(timeout=20) == 0
        assert ended(pid, timeout=5.0), "a process of the head's session outlived the keeper"
        assert not temp_dir.exists()
    finally:
        stop(keeper)
        if pid is not None and not ended(pid, timeout=0):
            os.kill(pid, signal.SIGKILL)
