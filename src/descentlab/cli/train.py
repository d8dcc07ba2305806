"""``descentlab train``: one training run, e.g.
``descentlab train --task mnist1d --model mlp --optimizer adam --lr 1e-3 --batch-size 64 --epochs 20 --out runs/adam``.

Writes ``OUT/metrics.jsonl``, ``OUT/result.json`` and checkpoints; ``--resume`` continues the run in OUT.
Numbers are parsed here (not by argparse) so a bad value is a one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from ..outpaths import check_directory
from .defaults import DIVERGENCE_FACTOR, TRAIN_EPOCHS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train one model with one optimizer (GD = --batch-size full)",
        description="Train a model on a task with one optimizer; GD is --batch-size full. "
                    "See `descentlab tasks` and `descentlab optimizers` for the names.")
    parser.add_argument("--task", default="mnist1d", help="task name, or your own as module:attr (a descentlab Task or "
                        "a callable returning one; default: mnist1d)")
    parser.add_argument("--model", default=None, help="model name (default: the task's, mlp for mnist1d)")
    parser.add_argument("--hidden", default=None, metavar="SIZES",
                        help="mlp hidden sizes, comma-separated (default: 100,100)")
    parser.add_argument("--optimizer", default="adam", help="registry name or module:Class (default: adam)")
    parser.add_argument("--lr", default="1e-3", help="learning rate (default: 1e-3)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="optimizer hyper-parameter, repeatable (e.g. --hp momentum=0.9)")
    parser.add_argument("--batch-size", default=None, metavar="N|full",
                        help="minibatch size, or 'full' for full-batch gradient descent (default: 64; the full batch "
                        "for gd)")
    parser.add_argument("--epochs", default=None, help=f"passes over the training set (default: {TRAIN_EPOCHS})")
    parser.add_argument("--steps", default=None, help="train for exactly this many steps instead of --epochs")
    parser.add_argument("--eval-every", default=None, metavar="STEPS",
                        help="evaluate every STEPS steps (default: every epoch)")
    parser.add_argument("--seed", default="0", help="seed of initialisation and shuffling (default: 0)")
    parser.add_argument("--divergence-factor", default=str(DIVERGENCE_FACTOR),
                        help=f"stop as diverged when the loss exceeds this multiple of the first loss "
                             f"(default: {DIVERGENCE_FACTOR:g}; 'none' checks finiteness only)")
    parser.add_argument("--task-option", action="append", default=[], metavar="NAME=VALUE",
                        help="task option, repeatable (e.g. --task-option val_fraction=0.1, cache_dir=...)")
    parser.add_argument("--test", action="store_true", help="evaluate the test split at the end: at the best "
                        "validation point's weights and at the last ones")
    parser.add_argument("--schedule", default="constant", help="lr schedule: constant (default), cosine or "
                        "warmup-cosine; --lr is its peak")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--out", default=None, help="run directory (metrics.jsonl, result.json, checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events (needs tensorboard)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def parse_number(name: str, text: str | None, kind: type, allow: tuple[str, ...] = ()) -> Any:
    if text is None or text.lower() in allow:
        return None
    try:
        return kind(text)
    except ValueError:
        words = " or ".join(repr(a) for a in allow)
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {expected}{' or ' + words if words else ''}, got {text!r}") from None


def parse_assignments(name: str, items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=(0.9, 0.99)", "c=text"]`` → ``{"a": 1, "b": (0.9, 0.99), "c": "text"}``."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name} takes NAME=VALUE, got {item!r}")
        try:
            values[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = raw.strip()
    return values


def run(args: argparse.Namespace) -> int:
    from ..atomic import jsonable
    from ..tasks import resolve_task
    from ..train import train
    from ..train.setup import check_batch_size, check_optimizer, check_optimizer_options

    if args.out is not None:
        check_directory("--out", args.out)
    lr = parse_number("--lr", args.lr, float)
    batch_size = ("auto" if args.batch_size is None
                  else parse_number("--batch-size", args.batch_size, int, allow=("full",)))
    epochs = parse_number("--epochs", args.epochs, int)
    steps = parse_number("--steps", args.steps, int)
    eval_every = parse_number("--eval-every", args.eval_every, int)
    seed = parse_number("--seed", args.seed, int)
    factor = parse_number("--divergence-factor", args.divergence_factor, float, allow=("none",))
    model_options: dict[str, Any] = {}
    if args.hidden is not None:
        model_options["hidden"] = tuple(parse_number("--hidden", s, int) for s in args.hidden.split(","))
    hp = check_optimizer_options(parse_assignments("--hp", args.hp))
    check_batch_size(batch_size, check_optimizer(args.optimizer))  # before the task's data is made
    task = resolve_task(args.task, **parse_assignments("--task-option", args.task_option))
    result = train(task, model=args.model, optimizer=args.optimizer, lr=lr, batch_size=batch_size, epochs=epochs,
                   steps=steps, seed=seed, out=args.out, resume=args.resume, evaluate_test=args.test,
                   quiet=args.quiet, eval_every=eval_every, optimizer_options=hp,
                   model_options=model_options, divergence_factor=factor, tensorboard=args.tensorboard,
                   schedule=args.schedule, device=args.device)
    print(summary_line(jsonable(result.to_dict())))
    return 0


def summary_line(result: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    parts = [result["status"] + (f" at step {result['diverged_at_step']}" if result["diverged_at_step"] else ""),
             f"{result['steps']} steps", f"{result['epochs']:.3g} epochs", f"val loss {fmt(result['val_loss'])}"]
    if result["val_acc"] is not None:
        parts.append(f"val acc {fmt(result['val_acc'])}")
    best = f"best val at epoch {result['best_epoch']:.3g}"
    if result["best_is_last"]:
        best += " (the last evaluation)"
    if result["best_val_acc"] is not None:
        best += f": val acc {fmt(result['best_val_acc'])}"
    parts.append(best)
    if result["test_loss"] is not None:
        parts.append(f"test loss {fmt(result['test_loss'])} at best, {fmt(result['end_test_loss'])} at end")
    if result["test_acc"] is not None:
        parts.append(f"test acc {fmt(result['test_acc'])} at best, {fmt(result['end_test_acc'])} at end")
    parts.append(f"{result['wall_s']:.2f} s")
    if result["out"]:
        parts.append(f"-> {result['out']}")
    return " | ".join(parts)
