"""Race v3 on real runs: a saturated small validation set, records bound to their data, damaged result
files, a worker killed mid-race, and the searched axes equal in the batched and per-run engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import descentlab
from descentlab.racing import run_race
from descentlab.racing.store import RESULTS
from race_tasks import small_validation

TESTS = Path(__file__).parent


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", "descentlab", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout, check=False)


def test_a_small_saturated_validation_set_does_not_crown_the_most_confident_lr(tmp_path):
    """91 validation examples: several Adam lrs get all of them right. v2 broke the tie on the lowest
    validation loss, i.e. the most saturated logits; v3 takes the middle of the plateau and its test loss
    is far from that over-confident choice's."""
    result = descentlab.race(small_validation(), optimizers="adam", lrs="1e-3,3.16e-3,1e-2,3.16e-2,0.1,0.316,1",
                             seeds=2, epochs=15, jobs=2, progress=False, out=tmp_path / "race")
    arm = result.summary.arms[0]
    selection = arm.selection
    assert selection.saturated and selection.tied >= 3
    tuning = [r for r in result.records if r.phase == "tune" and r.seed == 0 and r.ok]
    tied = [r for r in tuning if r.best_val_acc == 1.0]
    most_confident = min(tied, key=lambda r: r.best_val_loss)
    assert selection.chosen.lr != most_confident.lr
    assert min(r.lr for r in tied) < selection.chosen.lr < max(r.lr for r in tied)  # inside the plateau
    page = result.report_path.read_text()
    assert "cannot tell them apart" in page and "91 validation" in page


ENV_RACE = ["race", "--task", "race_tasks:labels_from_env", "--optimizers", "sgd", "--lrs", "0.1,1", "--seeds", "2",
            "--epochs", "2", "--jobs", "1", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished race on ``race_tasks:labels_from_env`` (each test works on its own copy)."""
    out = tmp_path_factory.mktemp("env") / "race"
    done = cli(*ENV_RACE, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(finished, tmp_path / "race", ignore=shutil.ignore_patterns(".race.lock")))


def test_resuming_on_changed_data_is_refused_and_writes_nothing(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = cli(*ENV_RACE, "--out", str(out), env={"DESCENTLAB_TEST_SHUFFLED": "1"})
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "other data or another model" in again.stderr
    assert "the task's data changed" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("damage", ["duplicate", "foreign"])
def test_a_duplicated_or_foreign_line_is_refused_naming_it(finished, tmp_path, damage):
    out = copy_of(finished, tmp_path)
    path = out / RESULTS
    lines = path.read_text().splitlines()
    if damage == "duplicate":
        lines.append(lines[-1])
        expected = f"line {len(lines)} repeats the run of line {len(lines) - 1}"
    else:
        row = json.loads(lines[-1])
        row["seed"] = 99
        lines.append(json.dumps(row))
        expected = f"line {len(lines)} is not a run of this race (seed 99 in phase 'final' is not in this race"
    path.write_text("\n".join(lines) + "\n")
    again = cli(*ENV_RACE, "--out", str(out))
    assert again.returncode == 2 and expected in again.stderr and again.stderr.count("\n") == 1


def test_a_run_whose_worker_is_killed_twice_is_one_failed_run_and_the_race_goes_on(tmp_path):
    """The optimizer kills its own worker at lr 1 (as the OOM killer would): that run is recorded as failed,
    naming SIGKILL, after one retry; the other runs, the report and the exit status are unaffected."""
    out = tmp_path / "race"
    done = cli("race", "--task", "race_tasks:labels_from_env", "--optimizers", "race_optimizers:sgd_that_dies_at_lr_1",
               "--lrs", "0.1,1", "--seeds", "2", "--epochs", "2", "--jobs", "2", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    killed = [r for r in rows if r["lr"] == 1.0]
    assert len(killed) == 1 and killed[0]["status"] == "error" and "SIGKILL (2 tries)" in killed[0]["error"]
    assert all(r["status"] == "ok" for r in rows if r["lr"] != 1.0)
    assert {r["phase"] for r in rows} == {"tune", "final"} and (out / "report.html").exists()
    assert "Traceback" not in done.stderr


def test_a_worker_killed_from_outside_is_retried_and_nothing_is_lost(tmp_path):
    """SIGKILL to one busy worker of a running race: its job runs again in a fresh process, the race
    finishes with every run ok and leaves no process behind."""
    import psutil

    out = tmp_path / "race"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    race = subprocess.Popen([sys.executable, "-m", "descentlab", "race", "--task", "lstsq", "--optimizers",
                             "sgd,momentum", "--lrs", "0.001,0.01", "--seeds", "2", "--epochs", "60", "--jobs", "2",
                             "--engine", "per-run", "--quiet", "--out", str(out)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(race.pid)
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and race.poll() is None:
            children = parent.children()
            victim = children[0] if children else None
            time.sleep(0.05)
        assert victim is not None, "no worker started"
        os.kill(victim.pid, signal.SIGKILL)
        _, stderr = race.communicate(timeout=300)
    finally:
        if race.poll() is None:
            race.kill()
            race.wait()
    assert race.returncode == 0, stderr
    rows = [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert len({(r["phase"], r["optimizer"], r["lr"], r["seed"]) for r in rows}) == len(rows)
    assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE


def test_hp_and_batch_size_grids_are_the_same_race_batched_and_per_run(tmp_path):
    """In float64 the two engines make the same race: same selected settings, metrics to 1e-7."""
    import dataclasses

    from descentlab.tasks import get_task

    task = get_task("digits")
    task = dataclasses.replace(task, **{f"x_{s}": getattr(task, f"x_{s}").double() for s in ("train", "val", "test")})
    options = {"optimizers": "sgd,adam", "lrs": "0.01,0.1", "hp": ["weight_decay=0,0.01", "momentum=0,0.9"],
               "batch_size": "32,128", "seeds": 2, "epochs": 3, "jobs": 2, "progress": False}
    batched = run_race(task, out=tmp_path / "b", engine="batched", **options)
    alone = run_race(task, out=tmp_path / "p", engine="per-run", **options)
    assert batched.selected == alone.selected
    # a run the planner hands a worker alone (a worker would otherwise idle: timing) trains per-run even in
    # a batched race, so the batched race's records are batched and at times a few per-run
    engines = {r.engine for r in batched.records}
    assert "batched" in engines and engines <= {"batched", "per-run"}
    assert {r.engine for r in alone.records} == {"per-run"}
    by_spec = {r.spec: r for r in alone.records}
    assert set(by_spec) == {r.spec for r in batched.records}
    for record in batched.records:
        twin = by_spec[record.spec]
        assert record.status == twin.status and record.best_step == twin.best_step
        assert record.best_val_loss == pytest.approx(twin.best_val_loss, rel=1e-7)


def test_the_binding_sees_a_changed_activation_or_loss_not_only_shapes():
    import torch

    from descentlab.racing import binding
    from descentlab.tasks import from_tensors

    x, y = torch.randn(20, 4), torch.arange(20) % 3

    def task(activation, loss=None):
        return from_tensors(x, y, x, y, model=lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), activation(),
                                                                            torch.nn.Linear(8, 3)), loss=loss)
    tanh, relu = binding.of(task(torch.nn.Tanh), "custom"), binding.of(task(torch.nn.ReLU), "custom")
    assert tanh["data_sha256"] == relu["data_sha256"] and tanh["model_sha256"] != relu["model_sha256"]
    smooth = binding.of(task(torch.nn.Tanh, loss=torch.nn.functional.multi_margin_loss), "custom")
    assert smooth["model_sha256"] != tanh["model_sha256"]
    assert binding.of(task(torch.nn.Tanh), "custom") == tanh
