"""results.jsonl: append-only, truncated-tail recovery, refusing another race's directory."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from descentlab.race.store import _HELD_LOCKS, CONFIG, LOCK, RESULTS, ResultsStore

CONFIG_A = {"task": "digits", "epochs": 2, "lrs": [0.1, 0.01]}


def run_row(lr, seed=0, phase="tune"):
    return {"phase": phase, "optimizer": "sgd", "lr": lr, "seed": seed, "status": "ok", "val_loss": 1.0 / lr}


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_rows_survive_a_reopen_and_duplicates_are_refused(tmp_path):
    with ResultsStore.open(tmp_path / "race", CONFIG_A) as store:
        store.append(run_row(0.1))
        store.append(run_row(0.01))
        with pytest.raises(ValueError, match="already in"):
            store.append(run_row(0.1))
    with ResultsStore.open(tmp_path / "race", CONFIG_A) as store:
        assert [r["lr"] for r in store.rows] == [0.1, 0.01]
        assert ("tune", "sgd", 0.1, 0) in store and ("final", "sgd", 0.1, 0) not in store
    lines = (tmp_path / "race" / RESULTS).read_text().splitlines()
    assert [json.loads(line)["lr"] for line in lines] == [0.1, 0.01]


@pytest.mark.parametrize("tail", [b'{"phase": "tune", "optimizer": "sgd", "lr": 0.', b'{"phase": "tune"}\n'[:-1]])
def test_a_truncated_last_line_is_cut_off_and_that_run_redone(tmp_path, tail):
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        store.append(run_row(0.1))
    good = (tmp_path / RESULTS).read_bytes()
    (tmp_path / RESULTS).write_bytes(good + tail)
    with ResultsStore.open(tmp_path, CONFIG_A) as store:
        assert store.dropped_tail and len(store.rows) == 1
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
