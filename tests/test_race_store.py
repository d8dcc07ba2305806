"""results.jsonl: append-only, truncated-tail recovery, refusing another race's directory."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from descentlab.racing.protocol import make_config
from descentlab.racing.record import RunSpec
from descentlab.racing.store import _HELD_LOCKS, CONFIG, LOCK, RESULTS, ResultsStore
from race_records import record

# v3: the store reads race.json as a whole RaceConfig (it refuses lines that are not runs of this race), so
# the config is a real one, not a few keys
CONFIG_A = make_config(task="digits", optimizers="sgd", lrs="0.1,0.01", seeds=2, epochs=2).to_json()
BINDING = {"data_sha256": "a" * 64, "model_sha256": "b" * 64, "n_train": 10, "n_val": 5, "n_test": 5}


def run_row(lr, seed=0, phase="tune"):
    return record(lr, 1.0 / lr, optimizer="sgd", seed=seed, phase=phase)


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_rows_survive_a_reopen_and_duplicates_are_refused(tmp_path):
    with ResultsStore.open(tmp_path / "race", CONFIG_A) as store:
        store.append(run_row(0.1))
        store.append(run_row(0.01))
        with pytest.raises(ValueError, match="already in"):
            store.append(run_row(0.1))
    with ResultsStore.open(tmp_path / "race", CONFIG_A) as store:
        assert [r.lr for r in store.records] == [0.1, 0.01] and store.records[0] == run_row(0.1)
        assert RunSpec("tune", "sgd", "constant", 0.1, 0, 64) in store
        assert RunSpec("final", "sgd", "constant", 0.1, 0, 64) not in store
        assert RunSpec("tune", "sgd", "constant", 0.1, 0, 32) not in store
    lines = (tmp_path / "race" / RESULTS).read_text().splitlines()
    assert [json.loads(line)["lr"] for line in lines] == [0.1, 0.01]


@pytest.mark.parametrize("tail", [b'{"phase": "tune", "optimizer": "sgd", "lr": 0.', b'{"phase": "tune"}\n'[:-1]])
def test_a_truncated_last_line_is_cut_off_and_that_run_redone(tmp_path, tail):
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
    good = (tmp_path / RESULTS).read_bytes()
    (tmp_path / RESULTS).write_bytes(good + tail)
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        assert store.dropped_tail and len(store.records) == 1
        store.append(run_row(0.01))
    lines = (tmp_path / RESULTS).read_bytes().splitlines()
    assert lines[0] + b"\n" == good and json.loads(lines[1])["lr"] == 0.01 and len(lines) == 2


def test_a_damaged_line_before_the_last_is_an_error_not_a_silent_drop(tmp_path):
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
    path = tmp_path / RESULTS
    path.write_bytes(b"garbage\n" + path.read_bytes())
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="line 1 is damaged"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert snapshot(tmp_path) == before


def test_another_races_directory_is_refused_and_left_untouched(tmp_path):
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"holds another race .*epochs: 2 -> 5"):
        ResultsStore.open(tmp_path, {**CONFIG_A, "epochs": 5})
    assert snapshot(tmp_path) == before
    (tmp_path / CONFIG).unlink()
    with pytest.raises(ValueError, match=r"without race\.json"):
        ResultsStore.open(tmp_path, CONFIG_A)


def test_two_races_cannot_write_one_directory_at_once(tmp_path):
    with ResultsStore.open(tmp_path, CONFIG_A), pytest.raises(ValueError, match="in use by another running race"):
        ResultsStore.open(tmp_path, CONFIG_A)
    ResultsStore.open(tmp_path, CONFIG_A).close()  # released on close


def test_a_directory_with_a_report_but_no_race_is_refused_untouched(tmp_path):
    """Not a race this tool wrote (its report.html would be overwritten at the end)."""
    (tmp_path / "report.html").write_text("<p>my own page</p>")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"holds a report\.html without race\.json"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_directory_is_checked_again_once_locked(tmp_path, monkeypatch):
    """Another race that wrote its race.json between our first look and our lock still gets us refused."""
    import fcntl

    real_flock = fcntl.flock

    def flock_after_another_race(fd, operation):
        if operation & fcntl.LOCK_EX and not (tmp_path / CONFIG).exists():
            (tmp_path / CONFIG).write_text(json.dumps({**CONFIG_A, "epochs": 9}))
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_another_race)
    with pytest.raises(ValueError, match="holds another race"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert json.loads((tmp_path / CONFIG).read_text())["epochs"] == 9
    ResultsStore.open(tmp_path, {**CONFIG_A, "epochs": 9}).close()  # the lock was released


def test_the_refusal_names_the_pid_of_the_race_holding_the_lock(tmp_path):
    with ResultsStore.open(tmp_path, CONFIG_A), pytest.raises(ValueError, match=rf"\(pid {os.getpid()}\)"):
        ResultsStore.open(tmp_path, CONFIG_A)


def test_a_forked_worker_holds_no_copy_of_the_lock(tmp_path):
    """A race's workers are forked after the lock is taken. They close their inherited copy at once, so the
    lock ends with the race's main process even while a worker lives on (here: the main process "dies" by
    closing its descriptor without unlocking, as the kernel does for a killed process)."""
    store = ResultsStore.open(tmp_path, CONFIG_A)
    read_end, write_end = os.pipe()
    worker = os.fork()
    if worker == 0:  # by the time fork returns here, the fork hooks have run
        os.write(write_end, b"up")
        time.sleep(30)
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 2) == b"up"
    os.close(read_end)
    try:
        lock_fd = store._lock_fd
        assert lock_fd is not None
        store._lock_fd = None
        _HELD_LOCKS.discard(lock_fd)
        os.close(lock_fd)  # no LOCK_UN: only the worker's copy could still hold it
        ResultsStore.open(tmp_path, CONFIG_A).close()
    finally:
        os.kill(worker, signal.SIGKILL)
        os.waitpid(worker, 0)


@pytest.mark.parametrize("name", [RESULTS, CONFIG, LOCK])
def test_a_race_file_that_is_a_directory_is_refused_in_one_line(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match=rf"--out '{tmp_path}': its {name} is not a regular file"):
        ResultsStore.check(tmp_path, CONFIG_A)


def test_an_out_written_by_the_previous_results_format_is_refused_untouched(tmp_path):
    """Format 1 (no results_format in race.json) selected lrs on the final validation loss: its runs cannot be
    mixed with best-point ones, so it is refused with a message saying so, and nothing changes."""
    old_config = {k: v for k, v in CONFIG_A.items() if k != "results_format"}
    (tmp_path / CONFIG).write_text(json.dumps(old_config))
    (tmp_path / RESULTS).write_text(json.dumps({"phase": "tune", "optimizer": "sgd", "lr": 0.1, "seed": 0,
                                                "status": "ok", "val_loss": 1.0}) + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"results format 1 by an earlier descentlab .* use another --out"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("results_format", [2, "missing"])
def test_an_out_written_by_format_2_or_1_is_refused_untouched_with_its_format_named(tmp_path, results_format):
    old_config = {**CONFIG_A, "results_format": results_format}
    if results_format == "missing":
        del old_config["results_format"]
    (tmp_path / CONFIG).write_text(json.dumps(old_config))
    before = snapshot(tmp_path)
    found = 1 if results_format == "missing" else results_format
    with pytest.raises(ValueError, match=rf"results format {found} by an earlier descentlab .* use another --out"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert snapshot(tmp_path) == before


def test_a_repeated_line_on_disk_is_refused_naming_both_lines(tmp_path):
    """v3: a duplicate line (a hand-merged results.jsonl, say) would be averaged in twice: refused on load."""
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
        store.append(run_row(0.01))
    path = tmp_path / RESULTS
    first = path.read_bytes().splitlines(keepends=True)[0]
    path.write_bytes(path.read_bytes() + first)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="line 3 repeats the run of line 1"):
        ResultsStore.open(tmp_path, CONFIG_A)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("change", "why"), [
    ({"optimizer": "adam"}, "optimizer 'adam' is not in this race"),
    ({"lr": 0.05}, "lr 0.05 is not in this race"),
    ({"batch_size": 32}, "batch size 32 is not in this race"),
    ({"seed": 2}, "seed 2 in phase 'tune' is not in this race"),
    ({"hypers": {"weight_decay": 0.1}}, "hyper-parameters {'weight_decay': 0.1} is not in this race"),
])
def test_a_line_of_another_race_is_refused_on_load(tmp_path, change, why):
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
    row = {**run_row(0.01).to_json(), **change}
    (tmp_path / RESULTS).write_text((tmp_path / RESULTS).read_text() + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=re.escape(why)):
        ResultsStore.open(tmp_path, CONFIG_A)


def test_an_lr_beyond_the_grid_edges_is_a_run_of_this_race():
    """Edge extension adds lrs outside the grid (never inside it): those lines load."""
    config = make_config(task="digits", optimizers="sgd", lrs="0.1,0.01", seeds=2, epochs=2)
    assert config.foreign(RunSpec("tune", "sgd", "constant", 1.0, 0, 64)) is None
    assert config.foreign(RunSpec("tune", "sgd", "constant", 0.001, 1, 64)) is None
    assert config.foreign(RunSpec("final", "sgd", "constant", 0.1, 1, 64)) is None


def test_a_race_on_other_data_is_refused_untouched(tmp_path):
    bound = {**CONFIG_A, "binding": BINDING}
    with ResultsStore.open(tmp_path, bound) as store:
        store.append(run_row(0.1))
    before = snapshot(tmp_path)
    ResultsStore.check(tmp_path, {**CONFIG_A, "binding": None})  # before the task is loaded: not known yet
    other = {**CONFIG_A, "binding": {**BINDING, "data_sha256": "c" * 64}}
    with pytest.raises(ValueError, match=r"on other data or another model \(the task's data changed\)"):
        ResultsStore.open(tmp_path, other)
    assert snapshot(tmp_path) == before
    with ResultsStore.open(tmp_path, bound) as store:
        assert len(store.records) == 1
