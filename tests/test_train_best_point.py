"""The training loop's best validation point (early stopping), schedules, devices and Dataset-backed
tasks: what the race builds on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from descentlab.tasks import custom_task, from_tensors
from descentlab.train import train
from descentlab.train.schedule import WARMUP_FRACTION


class Generated(torch.utils.data.Dataset):
    """Items computed on the fly from their index (no tensor holds the data set)."""

    def __init__(self, n: int, offset: int, w: torch.Tensor) -> None:
        self.n, self.offset, self.w = n, offset, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(6, generator=torch.Generator().manual_seed(self.offset + index))
        return x, (x @ self.w).argmax()


def toy(dataset_backed: bool):
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(7))
    sets = [Generated(n, offset, w) for n, offset in ((96, 0), (40, 10_000), (40, 20_000))]

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))

    if dataset_backed:
        return custom_task(*sets, model=model, name="toy")
    tensors = []
    for s in sets:
        xs, ys = zip(*(s[i] for i in range(len(s))), strict=True)
        tensors += [torch.stack(xs), torch.stack(ys)]
    return from_tensors(*tensors, model=model, name="toy")


def test_a_dataset_backed_task_runs_the_same_loop_as_its_tensors():
    lazy = train(toy(True), optimizer="momentum", lr=0.05, batch_size=16, epochs=3, evaluate_test=True)
    eager = train(toy(False), optimizer="momentum", lr=0.05, batch_size=16, epochs=3, evaluate_test=True)
    assert [e["val_loss"] for e in lazy.history] == [e["val_loss"] for e in eager.history]
    assert (lazy.test_acc, lazy.end_test_loss) == (eager.test_acc, eager.end_test_loss)
    full = train(toy(True), optimizer="sgd", lr=0.1, batch_size=None, epochs=2)
    assert full.steps == 2 and full.status == "ok"


def test_the_best_point_is_the_highest_validation_accuracy_and_test_is_read_there():
    """lr 1.0 on a tiny set overfits and wanders: the best point comes before the end, and the test
    metrics at it differ from those at the end."""
    task = toy(False)
    result = train(task, optimizer="adam", lr=0.05, batch_size=8, epochs=30, evaluate_test=True)
    history = result.history
    accs = [e["val_acc"] for e in history]
    best = max(range(len(history)), key=lambda i: (accs[i], -history[i]["val_loss"], -i))
    assert result.best_step == history[best]["step"] and result.best_val_acc == max(accs)
    assert result.best_epoch == history[best]["epoch"] and result.best_is_last == (best == len(history) - 1)
    assert not result.best_is_last, "this run should peak before its end"
    assert result.val_acc == accs[-1] and result.end_test_acc is not None
    # the best point's test numbers come from the best weights: retrain to that step and compare
    steps = result.best_step
    again = train(task, optimizer="adam", lr=0.05, batch_size=8, steps=steps, evaluate_test=True,
                  eval_every=12)  # 12 steps per epoch: same evaluations
    assert again.end_test_loss == result.test_loss and again.end_test_acc == result.test_acc


def test_a_diverged_runs_weights_are_never_its_best():
    result = train(toy(False), optimizer="sgd", lr=1e4, batch_size=8, epochs=3, evaluate_test=True)
    assert result.status == "diverged"
    assert result.best_step == 0 and math.isfinite(result.best_val_loss)


@pytest.mark.parametrize("schedule", ["cosine", "warmup-cosine"])
def test_a_schedule_changes_the_run_not_just_its_label(schedule):
    task = toy(False)
    constant = train(task, optimizer="sgd", lr=0.2, batch_size=16, epochs=4)
    scheduled = train(task, optimizer="sgd", lr=0.2, batch_size=16, epochs=4, schedule=schedule)
    assert scheduled.schedule == schedule and scheduled.config["schedule"] == schedule
    lrs = [e["lr"] for e in scheduled.history]
    total = scheduled.steps  # 6 steps per epoch, 24 in all
    if schedule == "cosine":
        assert lrs[0] == 0.2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
        assert lrs[2] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 12 / total)))
    else:
        warm = max(1, round(WARMUP_FRACTION * total))
        assert lrs[0] == pytest.approx(0.2 / warm) and max(lrs) <= 0.2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(e["lr"] == 0.2 for e in constant.history)
    assert [e["val_loss"] for e in scheduled.history[1:]] != [e["val_loss"] for e in constant.history[1:]]


def test_a_scheduled_run_resumes_bitwise(tmp_path):
    task = toy(False)
    whole = train(task, optimizer="adam", lr=0.05, batch_size=16, epochs=4, schedule="warmup-cosine")
    with pytest.raises(_Stop):
        train(task, optimizer="adam", lr=0.05, batch_size=16, epochs=4, schedule="warmup-cosine", out=tmp_path,
              callback=_stop_after(2))
    resumed = train(task, optimizer="adam", lr=0.05, batch_size=16, epochs=4, schedule="warmup-cosine",
                    out=tmp_path, resume=True)
    assert [e["val_loss"] for e in resumed.history] == [e["val_loss"] for e in whole.history]
    assert [e["lr"] for e in resumed.history] == [e["lr"] for e in whole.history]
    assert (resumed.best_step, resumed.best_val_acc) == (whole.best_step, whole.best_val_acc)


class _Stop(Exception):
    pass


def _stop_after(evaluations: int):
    seen = []

    def callback(record):
        seen.append(record)
        if len(seen) > evaluations:
            raise _Stop

    return callback


@pytest.mark.parametrize(("device", "message"), [
    ("gpu", "device 'gpu' is not a device name"),
    ("cuda:7", "device 'cuda:7'"),
])
def test_an_absent_or_unknown_device_is_refused_before_training(device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    with pytest.raises(ValueError, match=message):
        train(toy(False), optimizer="sgd", lr=0.1, epochs=1, device=device)
