"""A batched run's numbers do not depend on which other runs share its batch (each run's forward,
backward and update are its own): the same configuration trained beside one batchmate and beside three
others, one of another optimizer, gives bit-identical curves."""

from __future__ import annotations

import pytest
import torch

from descentlab.tasks import get_task
from descentlab.train.batched import train_batched
from descentlab.train.member import Config


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "momentum"])
def test_a_batched_run_does_not_depend_on_its_batchmates(optimizer):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a race's workers
    try:
        task = get_task("mnist1d")
        run = Config(optimizer, "constant", 0.003, 1)
        beside_one = train_batched(task, [run, Config(optimizer, "constant", 0.01, 1)], model="mlp", epochs=3)[0]
        beside_three = train_batched(task, [Config(optimizer, "constant", 0.001, 2), run,
                                            Config(optimizer, "constant", 0.03, 0), Config("sgd", "constant", 0.1, 1)],
                                     model="mlp", epochs=3)[1]
    finally:
        torch.set_num_threads(threads)
    assert beside_one.status == beside_three.status == "ok"
    assert [h["val_loss"] for h in beside_one.history] == [h["val_loss"] for h in beside_three.history]
    assert beside_one.test_acc == beside_three.test_acc


def _curves(result):
    return [(h["val_loss"], h["val_acc"], h["train_loss"], h["grad_norm"]) for h in result.history]


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_a_batched_run_does_not_depend_on_batchmates_leaving_or_their_number(optimizer):
    """What the three-epoch test above missed (docs/batched.md, "Run-to-run variation"): (1) once a batchmate
    left the stack (diverged, stopped early), the buffers came back from ``index_select`` in the default
    layout, so the transposed weights were stepped by the rule's update on the stacks instead of the fused
    kernel (other bits for a rule with a ratio: Adam, RMSprop, AdaGrad); (2) the validation split was cut
    into chunks of 8192 / k examples, so with 11 or more runs in the stack a run's validation loss (the
    tie-break of its best point) depended on how many were still training. The same run beside one steady
    batchmate, and beside twelve (one of them diverging at once, so the stack also shrinks), must give the
    same bits: every evaluation and the weights at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a race's workers
    try:
        task = get_task("mnist1d")
        run = Config(optimizer, "constant", 0.003, 1)
        alone = train_batched(task, [run, Config(optimizer, "constant", 0.001, 1)], model="mlp", epochs=2,
                              keep_model=True)[0]
        mates = [Config(optimizer, "constant", 30.0, 1)]  # diverges within a few steps and leaves
        mates += [Config(optimizer, "constant", lr, seed) for seed in (0, 2) for lr in (1e-4, 3e-4, 1e-3, 0.01)]
        mates += [Config("momentum", "constant", 0.1, 0), Config("adam", "constant", 1e-3, 2)]
        crowd = train_batched(task, [*mates[:5], run, *mates[5:]], model="mlp", epochs=2, keep_model=True)
    finally:
        torch.set_num_threads(threads)
    assert len(crowd) == 12 and crowd[0].status == "diverged" and crowd[5].status == alone.status == "ok"
    beside = crowd[5]
    assert _curves(beside) == _curves(alone)
    for mine, theirs in zip(beside.model.parameters(), alone.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
