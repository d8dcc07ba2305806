"""The shared run track: early stopping (patience) in both loops, the budget, checkpoints with it."""

from __future__ import annotations

import dataclasses

import pytest

from descentlab.tasks import get_task
from descentlab.train import train
from descentlab.train.batched import train_batched
from descentlab.train.member import Config
from descentlab.train.track import Budget, RunTrack


def test_budget_arithmetic() -> None:
    budget = Budget.of(100, 32, epochs=3)
    assert (budget.size, budget.per_epoch, budget.total) == (32, 4, 12)
    assert Budget.of(100, None, epochs=3).total == 3 and Budget.of(100, None).full_batch
    assert Budget.of(100, 500, steps=7).total == 7
    assert Budget.of(100, 10).epochs == 20  # the default
    with pytest.raises(ValueError, match="epochs or steps, not both"):
        Budget.of(100, 10, epochs=1, steps=1)


def test_a_run_whose_patience_runs_out_at_its_last_evaluation_did_not_stop_early() -> None:
    track = RunTrack(classification=True, patience=1, total=2)
    for step, (loss, acc) in enumerate([(1.0, 0.5), (0.9, 0.6), (0.95, 0.6)]):
        track.step = step
        track.record(loss, acc, 0.1, None, 10, lambda: "weights")
    assert track.stopped_early_at is None


def test_patience_stops_after_that_many_evaluations_without_improvement() -> None:
    track = RunTrack(classification=True, patience=2)
    scores = [(1.0, 0.5), (0.9, 0.6), (0.95, 0.6), (0.85, 0.55)]  # the third ties on accuracy, loses on loss
    for step, (loss, acc) in enumerate(scores):
        track.step = step
        track.record(loss, acc, 0.1, None, 10, lambda: "weights")
        assert track.stopped_early_at == (3 if step == 3 else None)
    assert track.best_index == 1 and not track.training(total=100)


@pytest.fixture(scope="module")
def task():
    return get_task("digits")


def test_a_run_that_stops_early_keeps_the_best_point_of_the_full_run(task) -> None:
    full = train(task, optimizer="sgd", lr=1.0, batch_size=64, epochs=30, seed=1)
    stopped = train(task, optimizer="sgd", lr=1.0, batch_size=64, epochs=30, seed=1, patience=3)
    assert full.stopped_early_at is None
    assert stopped.stopped_early_at is not None and stopped.steps < full.steps
    assert stopped.best_step == full.best_step and stopped.best_val_acc == full.best_val_acc
    def timeless(history):
        return [{k: v for k, v in e.items() if k != "wall_s"} for e in history]

    assert timeless(stopped.history) == timeless(full.history)[:len(stopped.history)]
    assert len(stopped.history) - 1 - [e["step"] for e in stopped.history].index(stopped.best_step) == 3


def test_patience_stops_each_batched_member_where_its_per_run_twin_stops(task) -> None:
    """In float64 (the models are built in the data's dtype), where the two engines agree to ~1e-10."""
    task = dataclasses.replace(task, **{f"x_{s}": getattr(task, f"x_{s}").double() for s in ("train", "val", "test")})
    configs = [Config("sgd", "constant", lr, 0, patience=3) for lr in (1.0, 0.01)]
    batched = train_batched(task, configs, batch_size=64, epochs=25)
    alone = [train(task, optimizer="sgd", lr=c.lr, batch_size=64, epochs=25, seed=0, patience=3) for c in configs]
    assert batched[0].stopped_early_at is not None  # lr 1 overfits early on digits; lr 0.01 keeps improving
    for b, a in zip(batched, alone, strict=True):
        assert b.stopped_early_at == a.stopped_early_at and b.steps == a.steps
        assert b.best_step == a.best_step
        assert b.best_val_loss == pytest.approx(a.best_val_loss, rel=1e-7)


def test_a_stopped_run_resumes_as_stopped(tmp_path, task) -> None:
    first = train(task, optimizer="sgd", lr=1.0, batch_size=64, epochs=30, seed=1, patience=3, out=tmp_path / "r")
    again = train(task, optimizer="sgd", lr=1.0, batch_size=64, epochs=30, seed=1, patience=3, out=tmp_path / "r",
                  resume=True)
    assert again.stopped_early_at == first.stopped_early_at and again.steps == first.steps
    assert [e["val_loss"] for e in again.history] == [e["val_loss"] for e in first.history]
