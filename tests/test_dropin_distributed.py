"""The drop-in table's multi-process cases, against torch.optim doing the same, in every engine mode.

* Hogwild (pytorch/examples' mnist_hogwild): ``model.share_memory()``, two worker processes each
  with its own optimizer on the shared parameters (run one after the other, so the result is
  deterministic): every update lands in the shared model, as with torch.optim.
* Two gloo ranks on this machine (a FileStore rendezvous: no network), in one spawn: DDP with and
  without ``gradient_as_bucket_view``, ZeroRedundancyOptimizer with and without
  ``parameters_as_bucket_view``, and FSDP2's ``fully_shard``: the ranks agree with each other and
  with torch.optim (bitwise for ``eager``/``flat``, within float32 rounding for ``compiled``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import descentlab.optim as dl
from dropin import MODES, Net, assert_same, batches, loss_of, twin_models

pytestmark = pytest.mark.slow


def _hogwild_worker(model: torch.nn.Module, impl: str, mode: str, seed: int) -> None:
    torch.set_num_threads(1)
    module = dl if impl == "descentlab" else torch.optim
    opt = module.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if impl == "descentlab":
        dl.set_engine(opt, mode)
    for batch in batches(5, seed=seed):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()


@pytest.mark.parametrize("mode", MODES)
def test_hogwild_updates_land_in_the_shared_model(mode: str) -> None:
    ours, theirs = twin_models()
    start = [p.detach().clone() for p in ours.parameters()]
    context = mp.get_context("fork")
    for impl, model in (("descentlab", ours), ("torch", theirs)):
        model.share_memory()
        for seed in (1, 2):
            worker = context.Process(target=_hogwild_worker, args=(model, impl, mode, seed))
            worker.start()
            worker.join(timeout=240)
            if worker.is_alive():
                worker.kill()
                worker.join()
            assert worker.exitcode == 0, f"{impl} worker failed"
    assert not any(torch.equal(p, s) for p, s in zip(ours.parameters(), start, strict=True))
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert a.is_shared()
        assert_same(mode, a.detach(), b.detach(), name)


# -- two gloo ranks ---------------------------------------------------------------------------------------
SCENARIOS = ("ddp", "ddp-bucket-view", "zero", "zero-bucket-view", "fsdp2")


def _optimizer(impl: str, mode: str, params: Any) -> torch.optim.Optimizer:
    if impl == "torch":
        return torch.optim.Adam(params, lr=1e-2)
    opt = dl.Adam(params, lr=1e-2)
    dl.set_engine(opt, mode)
    return opt


def _train(scenario: str, impl: str, mode: str, rank: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = Net()
    if scenario.startswith("ddp"):
        model = torch.nn.parallel.DistributedDataParallel(
            model, gradient_as_bucket_view=scenario.endswith("bucket-view"))
        opt = _optimizer(impl, mode, model.parameters())
    elif scenario.startswith("zero"):
        from torch.distributed.optim import ZeroRedundancyOptimizer

        cls = torch.optim.Adam if impl == "torch" else dl.Adam
        model = torch.nn.parallel.DistributedDataParallel(model)
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, lr=1e-2,
                                      parameters_as_bucket_view=scenario.endswith("bucket-view"))
        if impl == "descentlab":
            dl.set_engine(opt.optim, mode)
    else:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
        opt = _optimizer(impl, mode, model.parameters())
    for batch in batches(4, seed=10 + rank):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    return [p.detach().clone() for p in params]


def _rank_main(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results = {(scenario, impl, mode): _train(scenario, impl, mode, rank)
                   for scenario in SCENARIOS for impl, mode in [("torch", "-"), *(("descentlab", m) for m in MODES)]}
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_zero_and_fsdp2_ranks_agree_with_torch(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for scenario in SCENARIOS:
        expected = ranks[0][(scenario, "torch", "-")]
        for mode in MODES:
            for rank in ranks:
                got = rank[(scenario, "descentlab", mode)]
                assert_same(mode, got, expected, f"{scenario} {mode}")
            assert_same("eager", ranks[0][(scenario, "descentlab", mode)], ranks[1][(scenario, "descentlab", mode)],
                        f"{scenario} {mode}: ranks differ")
