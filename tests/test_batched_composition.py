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
