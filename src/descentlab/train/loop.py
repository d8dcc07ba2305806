"""The one training loop. GD vs SGD is the batch size: ``batch_size=None`` is full-batch Gradient
Descent (one step per epoch on the whole training set); an integer is minibatch SGD with a fresh
shuffle every epoch (the last batch of an epoch may be smaller).

Per step t: ``ℓ_t = loss_fn(model(x_B), y_B)``; stop as diverged if ``ℓ_t`` is non-finite or above
``divergence_factor · ℓ_1`` (see :mod:`.divergence`); else backpropagate and ``optimizer.step()``.
What a run is — budget, evaluations, best point, divergence, early stopping, the result — is the
shared :class:`.track.RunTrack`; this loop only decides how to step one model.
The data stays in memory as tensors: each epoch permutes the training set once (a local
``torch.Generator``) and batches are contiguous slices of it, so the loop adds almost nothing to the
model's own forward/backward/step.

Determinism: the initial weights come from ``seed`` (torch's global RNG forked and seeded, then
restored), the shuffles from a generator seeded from ``seed``, and the loop runs inside a forked global
RNG seeded from ``seed`` (so dropout-like layers are reproducible too); the three streams are seeded
differently, so a dropout mask never replays the numbers the weights were drawn from. The same
arguments give bitwise-identical metrics and weights on the same machine and thread count, also when
several runs train at once in threads (as long as the model itself draws no random numbers while
training, e.g. dropout, which uses the shared global RNG). A checkpoint holds everything that state is
made of, so a resumed run ends bitwise where an uninterrupted one does (on the same thread count:
resuming on another one warns that it will not).
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..tasks.registry import MAX_SEED, Task, global_rng, set_global_rng_state
from ..tasks.resolve import resolve_task
from . import divergence, footprint
from .data import Data
from .device import check_device
from .evaluate import grad_norm
from .result import RunResult
from .rundir import RunDir
from .schedule import check_schedule, make_scheduler
from .setup import (
    AUTO_BATCH,
    OptimizerSpec,
    check_batch_size,
    check_int,
    check_lr,
    check_optimizer,
    check_optimizer_options,
    make_optimizer,
    optimizer_label,
    versions,
)
from .track import Budget, RunTrack, check_patience, run_config

SHUFFLE_SALT = 0x5EED_DA7A  # the shuffle stream differs from the initialisation stream of the same seed
_TRAIN_RNG_SALT = 0xD50_0D  # so does the global stream layers like dropout draw from while training
CHECKPOINT_FORMAT = 3
"""2: the loop's own progress record; 3: the shared run track (:class:`.track.RunTrack`) and the data position."""


@dataclass
class Position:
    """Where the loop is in the data (saved in checkpoints beside the run track)."""

    pos: int = 0                      # batches done in the current epoch
    perm: torch.Tensor | None = None  # the current epoch's order (minibatch only)


@dataclass(frozen=True)
class _Plan:
    """A run's checked arguments."""

    task: Task
    model_name: str
    model_options: dict[str, Any]
    optimizer: OptimizerSpec
    optimizer_options: dict[str, Any]
    lr: float
    budget: Budget
    seed: int
    eval_every: int | None
    factor: float | None
    schedule: str
    device: torch.device
    patience: int | None
    evaluate_test: bool

    def config(self) -> dict[str, Any]:
        return run_config(task=self.task, model=self.model_name, model_options=self.model_options,
                          optimizer=optimizer_label(self.optimizer), optimizer_options=self.optimizer_options,
                          lr=self.lr, budget=self.budget, seed=self.seed, eval_every=self.eval_every,
                          divergence_factor=self.factor, schedule=self.schedule, device=str(self.device),
                          patience=self.patience)


def train(task: Task | str, model: str | None = None, optimizer: OptimizerSpec = "adam", lr: float = 1e-3,
          batch_size: int | str | None = AUTO_BATCH, epochs: int | None = None, steps: int | None = None,
          seed: int = 0,
          out: str | Path | None = None, resume: bool = False, evaluate_test: bool = False, quiet: bool = True,
          eval_every: int | None = None, optimizer_options: Mapping[str, Any] | None = None,
          model_options: Mapping[str, Any] | None = None,
          divergence_factor: float | None = divergence.DEFAULT_FACTOR, keep_model: bool = False,
          callback: Callable[[dict[str, Any]], None] | None = None, tensorboard: bool = False,
          schedule: str = "constant", device: str | torch.device = "cpu", patience: int | None = None) -> RunResult:
    """Train ``task``'s ``model`` with ``optimizer`` and return a :class:`RunResult` (never raises
    for a diverging run: it is returned with ``status="diverged"``).

    - ``optimizer``: a registry name (``descentlab.optim.names()``), a ``torch.optim.Optimizer``
      class, or a factory ``(params, lr=..., **optimizer_options) -> Optimizer``.
    - ``batch_size=None``: full-batch GD; an integer: minibatch, reshuffled each epoch; ``"auto"`` (the
      default): full batch for a full-batch registry optimizer (``gd``, which refuses a minibatch size),
      64 for every other.
    - Budget: ``epochs`` (default 20) or ``steps`` (exact number of updates), not both.
    - ``eval_every``: evaluate on the validation split every that many steps; default: at the end of
      every epoch. There is always an evaluation at step 0 and at the last step.
    - ``patience``: stop early once the best validation point is that many evaluations old
      (``RunResult.stopped_early_at``); None trains the whole budget.
    - ``out``: a run directory (``metrics.jsonl``, ``result.json``, checkpoints at each evaluation,
      the last two kept); ``resume=True`` continues the run found there. ``out=None`` writes nothing.
    - ``evaluate_test``: evaluate the test split at the end, once at the best validation point's
      weights (kept in memory, and in checkpoints) and once at the last weights (otherwise the test
      split is never touched).
    - ``schedule``: ``constant``, ``cosine`` or ``warmup-cosine`` (see :mod:`.schedule`); ``lr`` is its peak.
    - ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (must exist here).
    - ``callback(record)``: called after every evaluation with its metrics record.
    - ``tensorboard``: also write TensorBoard event files to ``out/tensorboard`` (needs ``tensorboard``).
    """
    plan = _check(task, model, optimizer, lr, batch_size, epochs, steps, seed, eval_every, optimizer_options,
                  model_options, divergence_factor, schedule, device, patience, evaluate_test)
    if resume and out is None:
        raise ValueError("resume=True (--resume) needs out (--out), the directory of the run to continue")
    if tensorboard and out is None:
        raise ValueError("tensorboard=True (--tensorboard) needs out (--out), the directory to write event files to")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    config = plan.config()
    rundir = RunDir(out, config, versions(), resume) if out is not None else None
    loop = _Loop(plan, rundir, callback, show=not quiet and sys.stderr.isatty())
    writer = _tensorboard_writer(Path(out) / "tensorboard") if tensorboard and out is not None else None
    loop.writer = writer
    try:
        with global_rng(plan.seed ^ _TRAIN_RNG_SALT):
            loop.start()
            loop.run()
    finally:  # also on Ctrl-C or a callback's exception: the events recorded so far reach the disk
        if writer is not None:
            writer.close()
    result = loop.result(config, keep_model, None if out is None else str(out))
    if rundir is not None:
        rundir.write_result(result.to_dict())
    return result


def _check(task: Task | str, model: str | None, optimizer: Any, lr: Any, batch_size: Any, epochs: Any, steps: Any,
           seed: Any, eval_every: Any, optimizer_options: Mapping[str, Any] | None,
           model_options: Mapping[str, Any] | None, divergence_factor: Any, schedule: Any,
           device: str | torch.device, patience: Any, evaluate_test: Any) -> _Plan:
    """The arguments of :func:`train`, checked (ValueError / TypeError naming the first bad one)."""
    if isinstance(task, str):
        task = resolve_task(task)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a descentlab Task or a task name, got {type(task).__name__}")
    optimizer = check_optimizer(optimizer)
    lr = check_lr(lr)
    batch_size = check_batch_size(batch_size, optimizer)
    optimizer_options = check_optimizer_options(optimizer_options)
    seed = check_int("seed", seed, 0, high=MAX_SEED, high_text="2**64 - 1")
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})")
    epochs = check_int("epochs", epochs, 1, allow_none=True)
    steps = check_int("steps", steps, 1, allow_none=True)
    eval_every = check_int("eval_every", eval_every, 1, allow_none=True)
    factor = divergence.check_factor(divergence_factor)
    schedule = check_schedule(schedule)
    torch_device = check_device(device)
    patience = check_patience(patience)
    if not isinstance(evaluate_test, bool):
        raise TypeError(f"evaluate_test must be True or False, got {evaluate_test!r}")
    if evaluate_test and not task.has_test:
        raise ValueError(f"evaluate_test=True but task {task.name!r} has no test split")
    model_name = task.default_model if model is None else model
    if model_name not in task.models:
        raise ValueError(f"unknown model {model_name!r} for task {task.name!r}; known: {', '.join(task.models)}")
    options = dict(model_options or {})
    footprint.check(task, model_name, options)  # a model that cannot fit: refused now
    return _Plan(task, model_name, options, optimizer, dict(optimizer_options or {}), lr,
                 Budget.of(task.n_train, batch_size, epochs, steps), seed, eval_every, factor, schedule,
                 torch_device, patience, evaluate_test)


class _Loop:
    """One run: its model, optimizer and data order, stepped in segments between evaluations."""

    def __init__(self, plan: _Plan, rundir: RunDir | None, callback: Callable[[dict[str, Any]], None] | None,
                 show: bool) -> None:
        self.plan, self.rundir, self.callback, self.show = plan, rundir, callback, show
        self.budget = plan.budget
        self.net = plan.task.make_model(plan.model_name, plan.seed, **plan.model_options).to(plan.device)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = make_optimizer(plan.optimizer, self.params, plan.lr, plan.optimizer_options)
        self.scheduler = make_scheduler(plan.schedule, self.opt, self.budget.total)
        self.data = Data(plan.task, plan.device)
        self.generator = torch.Generator().manual_seed(plan.seed ^ SHUFFLE_SALT)
        self.track = RunTrack(plan.task.kind == "classification", plan.factor, plan.patience, self.budget.total)
        self.position = Position()
        self.writer: Any = None

    def start(self) -> None:
        """Resume from the run directory's checkpoint, if any (inside the run's RNG context)."""
        saved = self.rundir.open() if self.rundir is not None else None
        if saved is not None:
            self.restore(saved)
            self.rundir.rewrite_metrics(self.track.history)  # drop records written after that checkpoint
        elif self.rundir is not None:
            self.rundir.rewrite_metrics([])

    def run(self) -> None:
        track, total = self.track, self.budget.total
        self.started = time.perf_counter() - track.wall_s
        if not track.history:
            self.record(gnorm=None)
        bar = None
        if self.show and track.training(total):
            from tqdm import tqdm

            bar = tqdm(total=total, initial=track.step, unit="step", dynamic_ncols=True, leave=False)
        try:
            while track.training(total):
                before = track.step
                self.segment()
                if bar is not None:
                    bar.update(track.step - before)
                    bar.set_postfix(val_loss=f"{track.history[-1]['val_loss']:.4g}", refresh=False)
        finally:
            if bar is not None:
                bar.close()

    def next_eval(self) -> int:
        step, every = self.track.step, self.plan.eval_every
        if every is not None:
            boundary = (step // every + 1) * every
        else:
            boundary = step + (self.budget.per_epoch - self.position.pos)
        return min(boundary, self.budget.total)

    def segment(self) -> None:
        """Steps up to the next evaluation or the end of the epoch, whichever comes first."""
        track, position, budget = self.track, self.position, self.budget
        n, size = budget.n_train, budget.size
        if not budget.full_batch and position.perm is None:
            position.perm = torch.randperm(n, generator=self.generator)
        batches = self.data.train_batches(None if budget.full_batch else position.perm, size)
        target = self.next_eval()
        stop = position.pos + min(target - track.step, budget.per_epoch - position.pos)
        net, opt, scheduler, loss_fn = self.net, self.opt, self.scheduler, self.data.loss_fn
        for index in range(position.pos, stop):
            xb, yb = batches(index)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            if not track.observe(loss.item(), track.step + 1):  # lost: this step is not taken
                stop = index
                break
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            track.step += 1
        track.examples += min(stop * size, n) - min(position.pos * size, n)
        position.pos = stop
        if track.ok and position.pos == budget.per_epoch:
            position.pos, position.perm = 0, None
        if not track.ok or track.step == target:
            self.evaluate_and_save()

    def evaluate_and_save(self) -> None:
        track = self.track
        if not track.needs_record():
            track.wall_s = time.perf_counter() - self.started
            self.save()  # only the checkpoint learns the status
            return
        gnorm = grad_norm(self.params) if track.run_count and track.ok else None
        self.record(track.check_grad_norm(gnorm))

    def record(self, gnorm: float | None) -> None:
        track = self.track
        val_loss, val_acc = self.data.evaluate(self.net, "val")
        track.wall_s = time.perf_counter() - self.started
        entry = track.record(val_loss, val_acc, float(self.opt.param_groups[0]["lr"]), gnorm, self.budget.n_train,
                             self.weights)
        if self.rundir is not None:
            self.rundir.append_metrics(dict(entry))
        self.save()
        if self.writer is not None:
            for key, value in entry.items():
                if key not in ("step", "wall_s") and value is not None:
                    self.writer.add_scalar(key, value, track.step)
        if self.callback is not None:
            self.callback(dict(entry))

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.net.state_dict().items()}

    def model_with(self, state: dict[str, torch.Tensor] | None) -> nn.Module:
        """A copy of the model holding ``state`` (the model itself keeps the last weights)."""
        model = copy.deepcopy(self.net)
        if state is not None:
            model.load_state_dict(state)
        return model

    def result(self, config: dict[str, Any], keep_model: bool, out: str | None) -> RunResult:
        track = self.track
        test = end_test = (None, None)
        if self.plan.evaluate_test:
            end_test = self.data.evaluate(self.net, "test")
            test = (end_test if track.best_is_last or track.best_weights is None
                    else self.data.evaluate(self.model_with(track.best_weights), "test"))
        return track.result(n_train=self.budget.n_train, config=config, schedule=self.plan.schedule,
                            device=str(self.plan.device), test=test, end_test=end_test,
                            model=self.net if keep_model else None, out=out)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self) -> None:
        if self.rundir is not None:
            self.rundir.save_checkpoint(self.track.step, self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "track": self.track.state(), "position": {"pos": self.position.pos, "perm": self.position.perm},
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "threads": torch.get_num_threads()}

    def restore(self, saved: dict[str, Any]) -> None:
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"the checkpoint in this run directory has format {saved.get('format')!r}, written by "
                             "an earlier descentlab; start the run in a new out")
        self.net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.track.restore(saved["track"])
        self.position = Position(**saved["position"])
        self.generator.set_state(saved["generator"])
        set_global_rng_state(saved["torch_rng"])
        threads, now = saved.get("threads"), torch.get_num_threads()
        if threads is not None and threads != now:
            warnings.warn(f"the run started on {threads} torch thread(s) and resumes on {now}: it goes on correctly, "
                          "but its weights will not be bitwise those of an uninterrupted run "
                          f"(torch.set_num_threads({threads}) restores that)", RuntimeWarning, stacklevel=4)


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard=True needs the 'tensorboard' package (pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(directory))
