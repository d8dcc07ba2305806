"""Run directories, checkpoints and bitwise resume (including a SIGKILLed subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from descentlab.tasks import get_task
from descentlab.train import checkpoint, train

RUN = {"optimizer": "adam", "lr": 3e-3, "batch_size": 64, "epochs": 4, "eval_every": 5, "seed": 1}
"""17 steps per epoch on digits, evaluations every 5 steps: checkpoints fall mid-epoch."""


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


@pytest.fixture(scope="module")
def uninterrupted(digits):
    return train(digits, keep_model=True, **RUN)


def curve(result):
    return [{k: v for k, v in record.items() if k != "wall_s"} for record in result.history]


def assert_bitwise_equal(a, b):
    assert curve(a) == curve(b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights_and_metrics(digits, uninterrupted, tmp_path):
    out = tmp_path / "run"

    def stop_at_step_25(record):
        if record["step"] >= 25:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(digits, out=out, callback=stop_at_step_25, **RUN)
    assert not (out / "result.json").exists()
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt-0000000025.pt", "ckpt-0000000020.pt"]

    resumed = train(digits, out=out, resume=True, keep_model=True, **RUN)
    assert_bitwise_equal(resumed, uninterrupted)
    assert resumed.wall_s >= resumed.history[0]["wall_s"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in uninterrupted.history]
    stored = json.loads((out / "result.json").read_text())
    assert stored["status"] == "ok" and stored["steps"] == uninterrupted.steps
    assert stored["config"]["lr"] == RUN["lr"] and stored["versions"]["torch"] == torch.__version__
    assert len(checkpoint.list_checkpoints(out)) == 2

    # Resuming a finished run trains nothing more and may add the test metrics.
    again = train(digits, out=out, resume=True, keep_model=True, evaluate_test=True, **RUN)
    assert_bitwise_equal(again, uninterrupted)
    assert again.test_acc is not None


def newest_step(out) -> int:
    found = checkpoint.list_checkpoints(out)
    return int(found[0].stem.split("-")[1]) if found else -1


SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)  # as the in-process runs it is compared with
    from descentlab.tasks import get_task
    from descentlab.train import train
    run = {run!r}
    train(get_task("digits"), out=sys.argv[1], callback=lambda record: time.sleep(0.15), **run)
""")


def test_sigkilled_run_resumes_bitwise_even_with_its_newest_checkpoint_truncated(digits, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT.format(run=RUN), str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while newest_step(out) < 10:  # checkpoints at steps 10 and 5 exist
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never wrote two checkpoints"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    assert not (out / "result.json").exists(), "the run finished before it was killed"
    newest = checkpoint.list_checkpoints(out)[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    with pytest.warns(RuntimeWarning, match=rf"{newest.name}.*falling back"):
        resumed = train(digits, out=out, resume=True, keep_model=True, **RUN)
    assert_bitwise_equal(resumed, uninterrupted)


def test_checkpoints_are_verified_and_only_the_last_two_kept(tmp_path):
    for step in (5, 10, 15):
        checkpoint.save(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-0000000015.pt", "ckpt-0000000010.pt"]
    # Nothing else either: no temp files (named ".ckpt-*.pt.XXXX.pt", so a "*.tmp" glob would never see them).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000000010.pt", "ckpt-0000000015.pt"]

    newest = checkpoint.path_for(tmp_path, 15)
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF  # same size, one byte flipped
    newest.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CorruptCheckpoint, match="checksum"):
        checkpoint.load(newest)
    with pytest.warns(RuntimeWarning, match="ckpt-0000000015.pt.*falling back"):
        loaded = checkpoint.load_latest(tmp_path)
    assert loaded["step"] == 10 and torch.equal(loaded["w"], torch.full((3,), 10.0))

    checkpoint.path_for(tmp_path, 10).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning):
        assert checkpoint.load_latest(tmp_path) is None


def test_out_holding_another_run_or_other_files_is_refused(digits, tmp_path):
    out = tmp_path / "run"
    train(digits, optimizer="sgd", lr=0.1, epochs=1, out=out)
    with pytest.raises(ValueError, match=r"holds a different run \(lr: 0.1 there vs 0.2 now"):
        train(digits, optimizer="sgd", lr=0.2, epochs=1, out=out)
    with pytest.raises(ValueError, match="already holds this run; pass resume=True"):
        train(digits, optimizer="sgd", lr=0.1, epochs=1, out=out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no descentlab run"):
        train(digits, optimizer="sgd", lr=0.1, epochs=1, out=foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_resume_with_no_usable_checkpoint_says_so_and_starts_over(digits, tmp_path):
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="holds no run to resume"):  # resume needs a run to resume
        train(digits, optimizer="sgd", lr=0.1, epochs=1, out=fresh, resume=True)
    assert not fresh.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain start, no warning
        first = train(digits, optimizer="sgd", lr=0.1, epochs=1, out=fresh, keep_model=True)
    assert first.status == "ok" and len(checkpoint.list_checkpoints(fresh)) == 2

    for path in checkpoint.list_checkpoints(fresh):
        path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning) as caught:
        again = train(digits, optimizer="sgd", lr=0.1, epochs=1, out=fresh, resume=True, keep_model=True)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"ckpt-0000000017\.pt.*falling back to the previous one, ckpt-0000000000\.pt", m)
               for m in messages), messages
    assert any(re.search(r"ckpt-0000000000\.pt.*no earlier checkpoint", m) for m in messages), messages
    assert any("no usable checkpoint" in m and "starts over from step 0" in m for m in messages), messages
    assert_bitwise_equal(again, first)


def test_resuming_on_another_torch_thread_count_warns_that_it_is_not_bitwise(digits, tmp_path):
    """Intra-op reductions split work by thread, so weights differ in the last bits across thread counts."""
    out = tmp_path / "run"

    def stop(record):
        if record["step"] >= 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(digits, out=out, callback=stop, **RUN)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        expected = rf"started on {threads} torch thread.*resumes on {threads + 1}.*not be bitwise"
        with pytest.warns(RuntimeWarning, match=expected):
            train(digits, out=out, resume=True, **RUN)
    finally:
        torch.set_num_threads(threads)


def test_a_diverged_run_resumes_as_diverged_and_full_batch_gd_resumes_bitwise(tmp_path):
    lstsq = get_task("lstsq")
    lost = tmp_path / "lost"
    gd = {"optimizer": "gd", "batch_size": None, "steps": 300}
    first = train(lstsq, lr=3.0, out=lost, **gd)
    assert first.status == "diverged"
    metrics = (lost / "metrics.jsonl").read_text()
    again = train(lstsq, lr=3.0, out=lost, resume=True, **gd)
    assert (again.status, again.diverged_at_step, again.steps) == (first.status, first.diverged_at_step, first.steps)
    assert curve(again) == curve(first) and (lost / "metrics.jsonl").read_text() == metrics

    run = {**gd, "lr": 1.0, "steps": 40, "eval_every": 7}
    whole = train(lstsq, keep_model=True, **run)

    def stop(record):
        if record["step"] >= 14:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(lstsq, out=tmp_path / "gd", callback=stop, **run)
    assert_bitwise_equal(train(lstsq, out=tmp_path / "gd", resume=True, keep_model=True, **run), whole)


def test_checkpoints_from_beyond_the_resumed_step_do_not_push_out_new_ones(digits, tmp_path):
    """A run whose newest checkpoints are all corrupt starts over; the new checkpoints it writes must be
    kept, not deleted as 'older than the last two' (the corrupt, later ones), or a second crash loses them."""
    out = tmp_path / "run"
    run = {**RUN, "epochs": 1}
    train(digits, out=out, **run)
    for path in checkpoint.list_checkpoints(out):  # steps 17 and 15
        path.write_bytes(b"garbage")

    def stop(record):
        if record["step"] >= 5:
            raise Interrupt

    with pytest.warns(RuntimeWarning) as caught, pytest.raises(Interrupt):
        train(digits, out=out, resume=True, callback=stop, **run)
    assert "starts over" in str(caught[-1].message)
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt-0000000005.pt", "ckpt-0000000000.pt"]


def test_out_holding_a_run_on_other_data_of_the_same_shape_is_refused(digits, tmp_path):
    """Own data has no options to compare: the data itself must tell the runs apart, or a resume would
    silently return (or continue) the run on the other data."""
    from torch import nn

    from descentlab.tasks import from_tensors

    def task(x_train):
        return from_tensors(x_train, digits.y_train, digits.x_val, digits.y_val, model=lambda: nn.Linear(64, 10))

    out = tmp_path / "own"
    train(task(digits.x_train), optimizer="sgd", lr=0.1, epochs=1, out=out)
    with pytest.raises(ValueError, match=r"holds a different run \(data_sha256: "):
        train(task(digits.x_train.flip(0)), optimizer="sgd", lr=0.1, epochs=1, out=out, resume=True)
    again = train(task(digits.x_train.clone()), optimizer="sgd", lr=0.1, epochs=1, out=out, resume=True)
    assert again.status == "ok"
