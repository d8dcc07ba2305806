"""Train k configurations of one model at once, as one stacked model: :func:`train_batched`.

The configurations share the task, the model architecture and the batch size; each has its own
optimizer (a registry name), schedule, lr and seed. Member i is initialised exactly as the single
run of its seed (``task.make_model(model, seed)``), draws its own epoch order from its seed's
shuffle stream, and is updated by its optimizer's rule with its own state and lr
(:class:`descentlab.optim.stacked.StackedRule`: the rule's one declaration, run on the stacked
tensors). The loop is the single-run loop's (:mod:`.loop`), per member:

    ℓ_t^(i) = loss(f(x_B^(i); w^(i)), y_B^(i))        all k at once (:class:`.stacked_model.StackedModel`)
    member i is lost at step t when ℓ_t^(i) is non-finite or above factor·ℓ_1^(i)
    w^(i) ← update_i(w^(i), ∇ℓ_t^(i); γ_t^(i))          for every member still training

with an evaluation of the validation split at step 0, at every epoch's end and at the last step
(the best validation point kept per member), and the test split at the end for members that ask.
A member that is lost is recorded at its step, with the weights it had then, and leaves the stack
(its parameters, buffers and data order are dropped), so its NaNs never reach another member: each
member's loss depends on its own weights only, and only the losses of members still training are
backpropagated.

Results agree with the single-run loop within float32 rounding, not bitwise: a batched matmul
rounds differently from k small ones (the update is the per-run update's bits where the fused kernel
runs, :mod:`descentlab.optim._fused_stacked`). A member's numbers do not depend on which or how many
other members share its stack, nor on when they leave it (``tests/test_batched_composition.py``):
buffers keep their layout when members leave, and the validation split is cut as the single-run loop
cuts it, whatever k.
``wall_s`` of a member is its share of the batch's time: the shared forward, backward and
evaluations split evenly over the members training, plus its optimizer's update split over that
optimizer's members.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import vmap

from ..optim import resolve
from ..optim.stacked import StackedRule
from ..tasks.registry import Task
from . import divergence
from .data import Data
from .device import check_device
from .evaluate import EVAL_CHUNK
from .loop import SHUFFLE_SALT
from .member import Config, Member
from .result import RunResult
from .schedule import lr_values
from .stacked_model import StackedModel
from .track import Budget, RunTrack, check_patience, run_config


def train_batched(task: Task, configs: Sequence[Config], *, model: str | None = None, batch_size: int | None = 64,
                  epochs: int | None = None, steps: int | None = None, device: str | torch.device = "cpu",
                  divergence_factor: float | None = divergence.DEFAULT_FACTOR,
                  keep_model: bool = False) -> list[RunResult]:
    """Train every configuration (see the module docstring); one :class:`RunResult` per config, in
    order, each as :func:`descentlab.train.train` would return it for that run (within float32
    rounding), ``keep_model`` and each config's ``patience`` included. Budget: ``epochs`` (default 20) or ``steps``.
    The caller checks that the task, model and optimizers can be stacked
    (:func:`descentlab.racing.batching.check`)."""
    if not configs:
        return []
    budget = Budget.of(task.n_train, batch_size, epochs, steps)
    torch_device = check_device(device)
    model_name = task.default_model if model is None else model
    order = _grouped_order(configs)
    for config in configs:
        check_patience(config.patience)
    run = _BatchedRun(task, model_name, [configs[i] for i in order], budget, torch_device,
                      divergence_factor, keep_model)
    results = run.train()
    by_input = [None] * len(configs)
    for position, index in enumerate(order):
        by_input[index] = results[position]
    return by_input  # type: ignore[return-value]


def _group_key(config: Config) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """Configurations step together under one rule when they share the optimizer and its hyper-parameters
    (the lr is a per-run column)."""
    return config.optimizer, config.hypers


def _grouped_order(configs: Sequence[Config]) -> list[int]:
    """Indices of ``configs`` with each group's configurations next to each other (first seen first)."""
    rank: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {}
    for config in configs:
        rank.setdefault(_group_key(config), len(rank))
    return sorted(range(len(configs)), key=lambda i: rank[_group_key(configs[i])])


class _Group:
    """The members of one optimizer and hyper-parameter setting, contiguous rows of the stack, with their
    rule's stacked state and their lrs at every step (``table[t]``: the lrs in effect after t scheduler steps)."""

    def __init__(self, optimizer: str, hypers: tuple[tuple[str, Any], ...], members: list[Member],
                 params: Sequence[torch.Tensor], total: int) -> None:
        entry = resolve(optimizer)
        self.optimizer, self.members = optimizer, members
        self.rule = StackedRule(entry.cls.rule, {**entry.defaults, **dict(hypers)}, params)
        self.table = torch.tensor([lr_values(m.config.schedule, m.config.lr, total) for m in members],
                                  dtype=torch.float64).T.contiguous()
        self.update_s = 0.0

    def keep(self, local: list[int]) -> None:
        index = torch.tensor(local, dtype=torch.long)
        self.members = [self.members[i] for i in local]
        self.rule.keep(index)
        self.table = self.table.index_select(1, index).contiguous()


class _BatchedRun:
    def __init__(self, task: Task, model_name: str, configs: list[Config], budget: Budget, device: torch.device,
                 factor: float | None, keep_model: bool) -> None:
        self.task, self.device, self.budget = task, device, budget
        self.data = Data(task, device)
        self.n, self.size, self.full_batch = budget.n_train, budget.size, budget.full_batch
        self.per_epoch, self.total = budget.per_epoch, budget.total
        self.keep_model = keep_model
        classification = task.kind == "classification"
        self.members = [Member(c, RunTrack(classification, factor, c.patience, budget.total)) for c in configs]
        modules = [task.make_model(model_name, c.seed).to(device) for c in configs]
        self.template = copy.deepcopy(modules[0])
        self.model = StackedModel(modules)
        self.x, self.y = task.x_train.to(device), task.y_train.to(device)
        self.generators = [torch.Generator().manual_seed(c.seed ^ SHUFFLE_SALT) for c in configs]
        self.perms: torch.Tensor | None = None
        self.one_order = False
        """Every member training draws the same data order (this epoch's ``perms`` rows are equal)."""
        self.groups: list[_Group] = []
        start = 0
        for optimizer, hypers in dict.fromkeys(_group_key(c) for c in configs):
            members = [m for m in self.members if _group_key(m.config) == (optimizer, hypers)]
            rows = [p[start:start + len(members)].detach() for p in self.model.params]
            self.groups.append(_Group(optimizer, hypers, members, rows, self.total))
            start += len(members)
        self.model_name, self.factor = model_name, factor
        self.step = 0
        self.examples = 0

    @property
    def active(self) -> list[Member]:
        return [m for group in self.groups for m in group.members]

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> list[RunResult]:
        self.evaluate()
        while self.step < self.total and self.groups:
            if not self.full_batch:
                self.perms = torch.stack([torch.randperm(self.n, generator=self.generators[self.members.index(m)])
                                          for m in self.active])
                self.one_order = len({m.config.seed for m in self.active}) == 1
            for index in range(self.per_epoch):
                if self.step >= self.total or not self.groups:
                    break
                self.one_step(index)
            if self.groups:
                self.evaluate()
        return [self.result(m) for m in self.members]

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if self.full_batch:
            return self.x, self.y, True
        assert self.perms is not None
        rows = self.perms[:, index * self.size:(index + 1) * self.size]
        if self.one_order:  # one data order for all (one seed; members only leave): one batch, shared
            order = rows[0].to(self.device)
            return self.x[order], self.y[order], True
        order = rows.to(self.device)
        return self.x[order], self.y[order], False

    def one_step(self, index: int) -> None:
        started = time.perf_counter()
        xb, yb, shared = self.batch(index)
        for param in self.model.params:
            param.grad = None
        losses = self.model.losses(xb, yb, self.data.loss_fn, shared)
        values = losses.tolist()
        active = self.active
        kept = [pos for pos, member in enumerate(active) if member.track.observe(values[pos], self.step + 1)]
        if kept:
            (losses if len(kept) == len(active) else losses[kept]).sum().backward()
        shared_s = time.perf_counter() - started
        if len(kept) < len(active):
            staying = set(kept)
            lost = [pos for pos in range(len(active)) if pos not in staying]
            for pos in lost:  # its share of the forward pass that found it lost
                active[pos].track.wall_s += shared_s / len(active)
            self.leave(lost, evaluate=True)
        self.update()
        self.step += 1
        self.examples += yb.shape[0] if shared else yb.shape[1]
        for member in self.active:
            member.track.step, member.track.examples = self.step, self.examples
        self.charge(shared_s, len(active))

    def update(self) -> None:
        start = 0
        for group in self.groups:
            began = time.perf_counter()
            stop = start + len(group.members)
            rows = [p[start:stop] for p in self.model.params]
            grads = [p.grad[start:stop] if p.grad is not None else None for p in self.model.params]
            group.rule.step(rows, grads, group.table[self.step])
            group.update_s = time.perf_counter() - began
            start = stop

    def charge(self, shared_s: float, sharing: int) -> None:
        """Each member's share of a step's time (see the module docstring): ``shared_s`` was spent for
        ``sharing`` members."""
        for group in self.groups:
            own = group.update_s / len(group.members)
            for member in group.members:
                member.track.wall_s += shared_s / sharing + own
            group.update_s = 0.0

    def evaluate(self) -> None:
        """Evaluate every member still training (validation split), record it, and drop those whose
        gradient norm is not finite or whose patience ran out."""
        started = time.perf_counter()
        active = self.active
        norms = self.model.grad_norms().tolist() if self.model.params[0].grad is not None else None
        gnorms = [member.track.check_grad_norm(norms[pos] if norms is not None else None)
                  for pos, member in enumerate(active)]
        values = self.validation()
        share = (time.perf_counter() - started) / len(active)
        for pos, member in enumerate(active):
            member.track.wall_s += share
            member.track.record(*values[pos], self.lr_of(member), gnorms[pos], self.n,
                                lambda pos=pos: self.model.weights_of(pos))
        done = [pos for pos, member in enumerate(active) if not member.track.training(self.total)]
        if done and self.step < self.total:
            self.leave(done, evaluate=False)

    def validation(self) -> list[tuple[float, float | None]]:
        return evaluate_stacked(self.model, *self.data.tensors("val"), self.data.loss_fn, self.data.classification)

    def leave(self, positions: list[int], evaluate: bool) -> None:
        """Members at ``positions`` are lost: record them where needed (the evaluation's time is theirs),
        keep their weights, drop them from the stack."""
        active = self.active
        if evaluate and any(active[pos].track.needs_record() for pos in positions):
            started = time.perf_counter()
            values = self.validation()
            seconds = time.perf_counter() - started
            for pos in positions:
                track = active[pos].track
                track.wall_s += seconds / len(positions)
                if track.needs_record():
                    track.record(*values[pos], self.lr_of(active[pos]), None, self.n, lambda: [])
        for pos in positions:
            active[pos].last_weights = self.model.weights_of(pos)
        leaving = set(positions)
        keep = [pos for pos in range(len(active)) if pos not in leaving]
        self.model.keep(torch.tensor(keep, dtype=torch.long))
        if self.perms is not None:
            self.perms = self.perms.index_select(0, torch.tensor(keep, dtype=torch.long))
        start, groups = 0, []
        for group in self.groups:
            local = [i for i in range(len(group.members)) if start + i not in leaving]
            start += len(group.members)
            if local:
                group.keep(local)
                groups.append(group)
        self.groups = groups

    def lr_of(self, member: Member) -> float:
        """A training member's lr after its scheduler's steps so far (as its param group would hold it)."""
        group = next(g for g in self.groups if member in g.members)
        return float(group.table[member.track.step, group.members.index(member)])

    # -- results --------------------------------------------------------------------------------
    def result(self, member: Member) -> RunResult:
        track, c = member.track, member.config
        test = end_test = (None, None)
        end_weights = member.last_weights
        if end_weights is None:
            end_weights = self.model.weights_of(self.active.index(member))
        if c.evaluate_test:
            end_test = self.data.evaluate(self.module_with(end_weights), "test")
            test = (end_test if track.best_is_last or track.best_weights is None
                    else self.data.evaluate(self.module_with(track.best_weights), "test"))
        config = {**run_config(task=self.task, model=self.model_name, model_options={}, optimizer=c.optimizer,
                               optimizer_options=dict(c.hypers), lr=c.lr, budget=self.budget, seed=c.seed,
                               eval_every=None, divergence_factor=self.factor, schedule=c.schedule,
                               device=str(self.device), patience=c.patience), "engine": "batched"}
        return track.result(n_train=self.n, config=config, schedule=c.schedule, device=str(self.device), test=test,
                            end_test=end_test, model=self.module_with(end_weights) if self.keep_model else None)

    def module_with(self, weights: list[torch.Tensor]) -> nn.Module:
        module = copy.deepcopy(self.template)
        with torch.no_grad():
            for param, value in zip(module.parameters(), weights, strict=True):
                param.copy_(value)
        return module


@torch.no_grad()
def evaluate_stacked(model: StackedModel, x: torch.Tensor, y: torch.Tensor, loss_fn: Any,
                     classification: bool) -> list[tuple[float, float | None]]:
    """Every copy's mean loss (and accuracy) on one split, in eval mode, as
    :func:`descentlab.train.evaluate.evaluate` computes it for one model: in its chunks of
    :data:`EVAL_CHUNK` examples, whatever k is (the chunks' float32 means are summed, so cutting the
    split by k made a copy's validation loss depend on how many copies shared its stack), a few copies
    at a time (about :data:`EVAL_CHUNK` example-copies a pass, the memory the old cut took)."""
    model.train(False)
    try:
        k, n = model.k, len(x)
        group = max(1, EVAL_CHUNK // max(1, min(n, EVAL_CHUNK)))
        loss_sum = torch.zeros(k, dtype=torch.float64)
        correct = torch.zeros(k, dtype=torch.long)
        per_copy = vmap(loss_fn, in_dims=(0, None))
        for first in range(0, k, group):
            copies = slice(first, min(k, first + group))
            for start in range(0, n, EVAL_CHUNK):
                xc, yc = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
                output = model.outputs(xc, shared=True, copies=copies)
                loss_sum[copies] += per_copy(output, yc).double().cpu() * len(xc)
                if classification:
                    correct[copies] += (output.argmax(dim=-1) == yc).sum(dim=1).cpu()
    finally:
        model.train(True)
    losses = (loss_sum / n).tolist()
    accuracies = (correct.double() / n).tolist()
    return [(losses[i], accuracies[i] if classification else None) for i in range(k)]
