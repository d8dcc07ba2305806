"""The one training loop. GD vs SGD is the batch size: ``batch_size=None`` is full-batch Gradient
Descent (one step per epoch on the whole training set); an integer is minibatch SGD with a fresh
shuffle every epoch (the last batch of an epoch may be smaller).

Per step t: ``ℓ_t = loss_fn(model(x_B), y_B)``; stop as diverged if ``ℓ_t`` is non-finite or above
``divergence_factor · ℓ_1`` (see :mod:`.divergence`); else backpropagate and ``optimizer.step()``.
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

import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim import lr_scheduler

from ..tasks.registry import MAX_SEED, Task, global_rng, set_global_rng_state
from ..tasks.resolve import resolve_task
from . import divergence, footprint
from .best import Best
from .data import Data
from .device import check_device
from .evaluate import grad_norm
from .result import DIVERGED, OK, RunResult
from .rundir import RunDir
from .schedule import check_schedule, make_scheduler
from .setup import OptimizerSpec, check_int, check_lr, check_optimizer, make_optimizer, optimizer_label, versions

DEFAULT_EPOCHS = 20
SHUFFLE_SALT = 0x5EED_DA7A  # the shuffle stream differs from the initialisation stream of the same seed
_TRAIN_RNG_SALT = 0xD50_0D  # so does the global stream layers like dropout draw from while training


@dataclass
class Progress:
    """Everything about where a run is, besides model and optimizer state (saved in checkpoints)."""

    step: int = 0                     # optimizer updates applied
    pos: int = 0                      # batches done in the current epoch
    perm: torch.Tensor | None = None  # the current epoch's order (minibatch only)
    examples: int = 0
    run_sum: float = 0.0              # Σ ℓ_t since the last evaluation
    run_count: int = 0
    initial_loss: float | None = None
    status: str = OK
    diverged_at_step: int | None = None
    diverge_reason: str | None = None
    wall_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train(task: Task | str, model: str | None = None, optimizer: OptimizerSpec = "adam", lr: float = 1e-3,
          batch_size: int | None = 64, epochs: int | None = None, steps: int | None = None, seed: int = 0,
          out: str | Path | None = None, resume: bool = False, evaluate_test: bool = False, quiet: bool = True,
          eval_every: int | None = None, optimizer_options: Mapping[str, Any] | None = None,
          model_options: Mapping[str, Any] | None = None,
          divergence_factor: float | None = divergence.DEFAULT_FACTOR, keep_model: bool = False,
          callback: Callable[[dict[str, Any]], None] | None = None, tensorboard: bool = False,
          schedule: str = "constant", device: str | torch.device = "cpu") -> RunResult:
    """Train ``task``'s ``model`` with ``optimizer`` and return a :class:`RunResult` (never raises
    for a diverging run: it is returned with ``status="diverged"``).

    - ``optimizer``: a registry name (``descentlab.optim.names()``), a ``torch.optim.Optimizer``
      class, or a factory ``(params, lr=..., **optimizer_options) -> Optimizer``.
    - ``batch_size=None``: full-batch GD; an integer: minibatch, reshuffled each epoch.
    - Budget: ``epochs`` (default 20) or ``steps`` (exact number of updates), not both.
    - ``eval_every``: evaluate on the validation split every that many steps; default: at the end of
      every epoch. There is always an evaluation at step 0 and at the last step.
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
    if isinstance(task, str):
        task = resolve_task(task)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a descentlab Task or a task name, got {type(task).__name__}")
    optimizer = check_optimizer(optimizer)
    lr = check_lr(lr)
    batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
    seed = check_int("seed", seed, 0, high=MAX_SEED, high_text="2**64 - 1")
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})")
    if epochs is None and steps is None:
        epochs = DEFAULT_EPOCHS
    epochs = check_int("epochs", epochs, 1, allow_none=True)
    steps = check_int("steps", steps, 1, allow_none=True)
    eval_every = check_int("eval_every", eval_every, 1, allow_none=True)
    divergence_factor = divergence.check_factor(divergence_factor)
    schedule = check_schedule(schedule)
    torch_device = check_device(device)
    if resume and out is None:
        raise ValueError("resume=True (--resume) needs out (--out), the directory of the run to continue")
    if tensorboard and out is None:
        raise ValueError("tensorboard=True (--tensorboard) needs out (--out), the directory to write event files to")
    if not isinstance(evaluate_test, bool):
        raise TypeError(f"evaluate_test must be True or False, got {evaluate_test!r}")
    if evaluate_test and not task.has_test:
        raise ValueError(f"evaluate_test=True but task {task.name!r} has no test split")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    model_name = task.default_model if model is None else model
    if model_name not in task.models:
        raise ValueError(f"unknown model {model_name!r} for task {task.name!r}; known: {', '.join(task.models)}")
    optimizer_options = dict(optimizer_options or {})
    model_options = dict(model_options or {})
    footprint.check(task, model_name, model_options)  # a model that cannot fit: refused now

    n = task.n_train
    size = n if batch_size is None else min(batch_size, n)
    per_epoch = math.ceil(n / size)
    total = steps if steps is not None else epochs * per_epoch
    config = {
        "task": task.name, "task_options": task.options, "data_sha256": task.fingerprint(),
        "model": model_name, "model_options": model_options,
        "optimizer": optimizer_label(optimizer), "optimizer_options": optimizer_options, "lr": lr,
        "batch_size": batch_size, "epochs": epochs, "steps": steps, "total_steps": total,
        "steps_per_epoch": per_epoch, "seed": seed, "eval_every": eval_every,
        "divergence_factor": divergence_factor, "schedule": schedule, "device": str(torch_device),
    }
    rundir = RunDir(out, config, versions(), resume) if out is not None else None

    net = task.make_model(model_name, seed, **model_options).to(torch_device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, optimizer_options)
    scheduler = make_scheduler(schedule, opt, total)
    data = Data(task, torch_device)
    generator = torch.Generator().manual_seed(seed ^ SHUFFLE_SALT)
    writer = _tensorboard_writer(Path(out) / "tensorboard") if tensorboard and out is not None else None

    try:
        with global_rng(seed ^ _TRAIN_RNG_SALT):
            progress = Progress()
            saved = rundir.open() if rundir is not None else None
            best = Best(task.kind == "classification")
            if saved is not None:
                _restore(saved, net, opt, scheduler, generator, progress, best)
                rundir.rewrite_metrics(progress.history)  # drop records written after that checkpoint
            elif rundir is not None:
                rundir.rewrite_metrics([])
            loop = _Loop(data, net, opt, scheduler, params, generator, progress, best, size, per_epoch, total,
                         eval_every, divergence_factor, rundir, callback, writer,
                         show=not quiet and sys.stderr.isatty())
            loop.run()
    finally:  # also on Ctrl-C or a callback's exception: the events recorded so far reach the disk
        if writer is not None:
            writer.close()

    end_test: tuple[float | None, float | None] = (None, None)
    best_test: tuple[float | None, float | None] = (None, None)
    last = progress.history[-1]
    best_entry = progress.history[best.index] if best.index is not None else last
    best_is_last = best_entry is last
    if evaluate_test:
        end_test = data.evaluate(net, "test")
        best_test = end_test if best_is_last or best.state is None else data.evaluate(best.model_like(net), "test")
    result = RunResult(
        status=progress.status, diverged_at_step=progress.diverged_at_step, diverge_reason=progress.diverge_reason,
        epochs=progress.examples / n, steps=progress.step, examples=progress.examples, wall_s=progress.wall_s,
        train_loss=last["train_loss"], val_loss=last["val_loss"], val_acc=last["val_acc"],
        best_step=best_entry["step"], best_epoch=best_entry["epoch"], best_val_loss=best_entry["val_loss"],
        best_val_acc=best_entry["val_acc"], best_is_last=best_is_last, test_loss=best_test[0], test_acc=best_test[1],
        end_test_loss=end_test[0], end_test_acc=end_test[1], schedule=schedule, device=str(torch_device),
        history=progress.history, config=config, out=str(out) if out is not None else None,
        model=net if keep_model else None,
    )
    if rundir is not None:
        rundir.write_result(result.to_dict())
    return result


class _Loop:
    """The state machine of one run: segments of steps between evaluations."""

    def __init__(self, data: Data, net: torch.nn.Module, opt: torch.optim.Optimizer,
                 scheduler: lr_scheduler.LRScheduler | None, params: list[torch.Tensor], generator: torch.Generator,
                 progress: Progress, best: Best, size: int, per_epoch: int, total: int, eval_every: int | None,
                 factor: float | None, rundir: RunDir | None, callback: Callable[[dict[str, Any]], None] | None,
                 writer: Any, show: bool) -> None:
        self.data, self.net, self.opt, self.scheduler, self.params = data, net, opt, scheduler, params
        self.generator, self.best = generator, best
        self.p, self.size, self.per_epoch, self.total, self.eval_every = progress, size, per_epoch, total, eval_every
        self.factor, self.rundir, self.callback, self.writer, self.show = factor, rundir, callback, writer, show
        self.full_batch = size >= data.n_train
        self.limit = (divergence.threshold(progress.initial_loss, factor) if progress.initial_loss is not None
                      else math.inf)

    def run(self) -> None:
        p = self.p
        self.started = time.perf_counter() - p.wall_s
        if not p.history:
            self.record(train_loss=None, gnorm=None)
        finished = p.status != OK or p.step >= self.total
        bar = None
        if self.show and not finished:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=p.step, unit="step", dynamic_ncols=True, leave=False)
        try:
            while not finished:
                before = p.step
                self.segment()
                if bar is not None:
                    bar.update(p.step - before)
                    bar.set_postfix(val_loss=f"{p.history[-1]['val_loss']:.4g}", refresh=False)
                finished = p.status != OK or p.step >= self.total
        finally:
            if bar is not None:
                bar.close()

    def next_eval(self) -> int:
        p = self.p
        if self.eval_every is not None:
            boundary = (p.step // self.eval_every + 1) * self.eval_every
        else:
            boundary = p.step + (self.per_epoch - p.pos)
        return min(boundary, self.total)

    def segment(self) -> None:
        """Steps up to the next evaluation or the end of the epoch, whichever comes first."""
        p, size, n = self.p, self.size, self.data.n_train
        if not self.full_batch and p.perm is None:
            p.perm = torch.randperm(n, generator=self.generator)
        batches = self.data.train_batches(None if self.full_batch else p.perm, size)
        target = self.next_eval()
        stop = p.pos + min(target - p.step, self.per_epoch - p.pos)
        net, opt, scheduler, loss_fn = self.net, self.opt, self.scheduler, self.data.loss_fn
        limit, run_sum, count = self.limit, 0.0, 0
        diverged = None
        for index in range(p.pos, stop):
            xb, yb = batches(index)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            value = loss.item()
            if not value <= limit:  # NaN compares false too; before step 1 the limit is inf
                diverged = (p.step + count + 1, divergence.reason(value, limit))
                stop = index
                break
            if p.initial_loss is None:
                p.initial_loss = value
                limit = self.limit = divergence.threshold(value, self.factor)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            run_sum += value
            count += 1
        p.examples += min(stop * size, n) - min(p.pos * size, n)
        p.step += count
        p.pos = stop
        p.run_sum += run_sum
        p.run_count += count
        if diverged is not None:
            p.status, (p.diverged_at_step, p.diverge_reason) = DIVERGED, diverged
        elif p.pos == self.per_epoch:
            p.pos = 0
            p.perm = None
        if diverged is not None or p.step == target:
            self.evaluate_and_save()

    def evaluate_and_save(self) -> None:
        p = self.p
        if p.status == DIVERGED and p.history[-1]["step"] == p.step:
            # Lost on the first step after an evaluation: the last record already describes these
            # weights; only the checkpoint learns the status.
            p.wall_s = time.perf_counter() - self.started
            self.save()
            return
        gnorm = grad_norm(self.params) if p.run_count and p.status == OK else None
        if p.status == OK and gnorm is not None and not math.isfinite(gnorm):
            p.status, p.diverged_at_step, p.diverge_reason = DIVERGED, p.step, f"non-finite gradient norm ({gnorm})"
        train_loss = p.run_sum / p.run_count if p.run_count else None
        p.run_sum, p.run_count = 0.0, 0
        self.record(train_loss, gnorm)

    def record(self, train_loss: float | None, gnorm: float | None) -> None:
        p = self.p
        val_loss, val_acc = self.data.evaluate(self.net, "val")
        p.wall_s = time.perf_counter() - self.started
        entry = {"step": p.step, "epoch": p.examples / self.data.n_train, "examples": p.examples,
                 "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc,
                 "lr": float(self.opt.param_groups[0]["lr"]), "grad_norm": gnorm, "wall_s": p.wall_s}
        p.history.append(entry)
        if p.status == OK:  # the weights of a lost run are never its best
            self.best.offer(len(p.history) - 1, entry, self.net)
        if self.rundir is not None:
            self.rundir.append_metrics(entry)
        self.save()
        if self.writer is not None:
            for key, value in entry.items():
                if key not in ("step", "wall_s") and value is not None:
                    self.writer.add_scalar(key, value, p.step)
        if self.callback is not None:
            self.callback(dict(entry))

    def save(self) -> None:
        if self.rundir is not None:
            self.rundir.save_checkpoint(self.p.step, _snapshot(self.net, self.opt, self.scheduler, self.generator,
                                                               self.p, self.best))


def _snapshot(net: torch.nn.Module, opt: torch.optim.Optimizer, scheduler: lr_scheduler.LRScheduler | None,
              generator: torch.Generator, progress: Progress, best: Best) -> dict[str, Any]:
    return {"format": 2, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "best_model": best.state, "best_index": best.index, "best_score": best.score,
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "progress": progress.state(),
            "threads": torch.get_num_threads()}


def _restore(saved: dict[str, Any], net: torch.nn.Module, opt: torch.optim.Optimizer,
             scheduler: lr_scheduler.LRScheduler | None, generator: torch.Generator, progress: Progress,
             best: Best) -> None:
    if saved.get("format") != 2:
        raise ValueError(f"the checkpoint in this run directory has format {saved.get('format')!r}, written by an "
                         "earlier descentlab (no best-validation weights); start the run in a new out")
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    best.state, best.index = saved["best_model"], saved["best_index"]
    best.score = tuple(saved["best_score"]) if saved["best_score"] is not None else None
    generator.set_state(saved["generator"])
    set_global_rng_state(saved["torch_rng"])
    threads, now = saved.get("threads"), torch.get_num_threads()
    if threads is not None and threads != now:
        warnings.warn(f"the run started on {threads} torch thread(s) and resumes on {now}: it goes on correctly, but "
                      "its weights will not be bitwise those of an uninterrupted run (torch.set_num_threads"
                      f"({threads}) restores that)", RuntimeWarning, stacklevel=3)
    for key, value in saved["progress"].items():
        setattr(progress, key, value)


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard=True needs the 'tensorboard' package (pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(directory))
