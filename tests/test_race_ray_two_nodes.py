"""``race --backend ray`` on a two-node Ray cluster, each node in a network namespace of the test's own
(linked by a veth pair, nothing else): the worker node's raylet is killed mid-race, with a run of the
race held there, and the race still ends with the local backend's records.

Needs root (``ip netns``) and Ray; skipped otherwise. Every Ray process runs inside the two namespaces,
whose only interfaces are their loopback and the veth pair, so no Ray traffic can leave them; the test
also checks that every node of the cluster is on one of the two addresses it chose.
"""

from __future__ import annotations

import json
import os
import secrets
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

from descentlab.racing import ray_backend
from descentlab.racing.local_ray import READY, auth_env, new_token
from ray_race_checks import (
    DEADLINE_S,
    EXPECTED_ROWS,
    assert_same_as_local,
    ended,
    env,
    race_command,
    starts,
    stop,
    wait_for_start,
)
from ray_race_tasks import AFTER_NODE, HOLD_MARKER, NODE_NAME, STARTS_DIR

psutil = pytest.importorskip("psutil")
SUBNET = "10.213.77"
"""The veth pair's /24: inside the test's namespaces only, so it cannot clash with the machine's routes."""
HEAD_IP, WORKER_IP = f"{SUBNET}.1", f"{SUBNET}.2"
PORT = 6379  # free: the namespace is new
TASK = "ray_race_tasks:lstsq_reports_starts"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:  # the process ended meanwhile
        return None


class Namespaces:
    """Two new network namespaces, ``head`` and ``worker``, with ``lo`` up and a veth pair between them
    (``HEAD_IP``, ``WORKER_IP``); :meth:`remove` ends every process left in them and deletes them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.head, self.worker = f"dl-ray-{tag}-head", f"dl-ray-{tag}-worker"
        self.made: list[str] = []
        self.veth = f"dlv{tag}h", f"dlv{tag}w"  # at most 15 characters
        try:
            for name in (self.head, self.worker):
                _ip("netns", "add", name)
                self.made.append(name)
            _ip("link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
            for name, veth, address in ((self.head, self.veth[0], HEAD_IP), (self.worker, self.veth[1], WORKER_IP)):
                _ip("link", "set", veth, "netns", name)
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
                _ip("-n", name, "link", "set", veth, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def addresses(self, name: str) -> set[str]:
        """Every IPv4 address of namespace ``name``."""
        out = subprocess.run(["ip", "-n", name, "-j", "-4", "addr"], check=True, capture_output=True, text=True,
                             timeout=30).stdout
        return {info["local"] for link in json.loads(out) for info in link.get("addr_info", [])}

    def processes(self, name: str) -> list[Any]:
        """The processes running in namespace ``name``."""
        inode = _inode(f"/run/netns/{name}")
        return [p for p in psutil.process_iter() if inode is not None and _inode(f"/proc/{p.pid}/ns/net") == inode]

    def end_processes(self, name: str) -> list[int]:
        """SIGKILL what still runs in namespace ``name``; the pids that would not end."""
        stragglers = self.processes(name)
        for process in stragglers:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        return [p.pid for p in psutil.wait_procs(stragglers, timeout=10)[1]]

    def remove(self) -> list[int]:
        """SIGKILL what still runs in the namespaces, delete them; the pids that would not end."""
        left: list[int] = []
        for name in self.made:
            left += self.end_processes(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        for veth in self.veth:  # left outside the namespaces only if moving it failed
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=30)
        return left


def _can_make_namespaces() -> str | None:
    """Why this test cannot run here, or None."""
    if ray_backend.importlib.util.find_spec("ray") is None:
        return "ray not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"dl-ray-probe-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


class Node:
    """``ray start ... --block`` inside namespace ``netns`` of ``namespaces``, in a process group of its own."""

    def __init__(self, namespaces: Namespaces, netns: str, args: list[str], node_env: dict[str, str],
                 log: Path) -> None:
        self.namespaces, self.netns = namespaces, netns
        self.temp_dir = tempfile.mkdtemp(prefix="dl-ray-")  # short: Ray's socket paths must fit 107 bytes
        self.log_path = log
        command = ["ip", "netns", "exec", netns, sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                   "--disable-usage-stats", f"--temp-dir={self.temp_dir}", *args]
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, env=node_env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while READY not in self.log_path.read_text():
            assert self.process.poll() is None, f"ray start exited: {self.log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "a Ray node did not start in time"
            time.sleep(0.2)

    def stop(self) -> None:
        """Kill the node's group, then what else runs in its namespace (Ray's workers make groups of their
        own), then remove its temp dir (not before: a worker still starting would make it again)."""
        stop(self.process)
        self.namespaces.end_processes(self.netns)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture()
def namespaces() -> Iterator[Namespaces]:
    reason = _can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    try:
        made = Namespaces()
    except subprocess.CalledProcessError as error:  # e.g. a kernel without veth; nothing is left behind
        pytest.skip(f"could not make the namespaces: `{' '.join(error.cmd)}`: {error.stderr.strip()}")
    try:
        yield made
    finally:
        assert not made.remove(), "a process in the test's namespaces would not end"


def test_two_node_race_survives_the_worker_nodes_raylet_killed(namespaces: Namespaces, tmp_path: Path) -> None:
    """Head (1 CPU) in one namespace, a worker node (2 CPUs) in the other; the head's runs wait until one
    has started on the worker node, and the first run there waits until the test SIGKILLs that node's
    raylet. Ray reruns the node's runs on the head: the race ends with every row once, all ``ok``, and
    the same records and selections as a local race."""
    local = subprocess.Popen(race_command(tmp_path / "local", "--jobs", "2"), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # meanwhile, the cluster
    token = new_token()
    folder = tmp_path / "starts"
    folder.mkdir()
    base = env(**auth_env(token), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", **{STARTS_DIR: str(folder)})
    nodes: list[Node] = []
    driver: subprocess.Popen[str] | None = None
    try:
        head_args = ["--head", "--include-dashboard=false", f"--node-ip-address={HEAD_IP}", f"--port={PORT}",
                     "--num-cpus=1"]
        nodes.append(Node(namespaces, namespaces.head, head_args,
                          {**base, NODE_NAME: "head", AFTER_NODE: "worker"}, tmp_path / "head.log"))
        nodes[0].wait_ready()
        held = tmp_path / "held"
        worker_args = [f"--address={HEAD_IP}:{PORT}", f"--node-ip-address={WORKER_IP}", "--num-cpus=2"]
        nodes.append(Node(namespaces, namespaces.worker, worker_args,
                          {**base, NODE_NAME: "worker", HOLD_MARKER: str(held)}, tmp_path / "worker.log"))
        nodes[1].wait_ready()
        assert namespaces.addresses(namespaces.head) == {"127.0.0.1", HEAD_IP}
        assert namespaces.addresses(namespaces.worker) == {"127.0.0.1", WORKER_IP}
        probe = ("import json, ray; ray.init(address=%r); "
                 "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes()]))")
        in_head = ["ip", "netns", "exec", namespaces.head]
        listed = subprocess.run([*in_head, sys.executable, "-c", probe % f"{HEAD_IP}:{PORT}"], env=base,
                                capture_output=True, text=True, timeout=DEADLINE_S)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert sorted(json.loads(listed.stdout.strip().splitlines()[-1])) == [HEAD_IP, WORKER_IP]

        command = [*in_head, *race_command(tmp_path / "ray", "--task", TASK, "--backend", "ray", "--address",
                                           f"{HEAD_IP}:{PORT}")]
        driver = subprocess.Popen(command, env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        held_pid = wait_for_start(folder, "worker", driver)
        assert held.exists()
        raylets = [p for p in namespaces.processes(namespaces.worker) if p.name() == "raylet"]
        assert len(raylets) == 1, raylets
        assert os.getpgid(raylets[0].pid) == nodes[1].process.pid  # the worker node's, started above
        raylets[0].send_signal(signal.SIGKILL)
        before_kill = set(starts(folder))
        stdout, stderr = driver.communicate(timeout=DEADLINE_S)
        assert driver.returncode == 0, stderr[-3000:]
        assert ended(held_pid), "the held run's worker outlived its raylet"
        local_stdout, local_stderr = local.communicate(timeout=DEADLINE_S)
        assert local.returncode == 0, local_stderr[-2000:]
    finally:
        stop(local)
        if driver is not None:
            stop(driver)
        for node in reversed(nodes):
            node.stop()
    worker_log = (tmp_path / "worker.log").read_text()
    assert "raylet" in worker_log and "exit code(s)=-9" in worker_log, worker_log[-2000:]  # `ray start` saw it die
    assert_same_as_local(tmp_path / "local", local_stdout, tmp_path / "ray", stdout)
    started = starts(folder)
    # The held run (and any other run on the worker node) was cut off and run again: more starts than rows,
    # and runs started on the head after the kill.
    assert len(started) > EXPECTED_ROWS, len(started)
    assert any(node == "head" for name, (_, node) in started.items() if name not in before_kill), started
