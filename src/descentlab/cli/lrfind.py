"""``descentlab lrfind``: the learning-rate range test, e.g.
``descentlab lrfind --task mnist1d --optimizer adam --out lrfind.png``.

One short run with the lr rising exponentially; prints the suggested lr and saves the picture (and the
numbers, as JSON beside it). Defaults and the suggestion rule: :mod:`descentlab.lrfind.ramp`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..outpaths import check_file
from .defaults import (
    LRFIND_BETA,
    LRFIND_END_LR,
    LRFIND_START_LR,
    LRFIND_STEPS,
    LRFIND_STOP_FACTOR,
    LRFIND_SUGGESTION_DIVISOR,
)
from .train import parse_assignments, parse_number


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lrfind", help="learning-rate range test: one run with a rising lr; suggests an lr and saves a plot",
        description="Smith's range test (fastai's lr_find): train once while the lr rises exponentially from "
        f"--start-lr to --end-lr over --steps minibatches, watching the smoothed training loss (exponential moving "
        f"average, beta {LRFIND_BETA}); stop when it exceeds {LRFIND_STOP_FACTOR:g}x its best. Suggested lr: the lr at "
        f"the lowest smoothed loss divided by {LRFIND_SUGGESTION_DIVISOR:g}.")
    parser.add_argument("--task", default="mnist1d", help="built-in task (mnist1d, digits, lstsq) or module:attr "
                        "(default mnist1d)")
    parser.add_argument("--model", default=None, help="model of the task (default: the task's own)")
    parser.add_argument("--optimizer", default="adam", help="registry name or module:attr (default adam)")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="optimizer hyper-parameter, repeatable (e.g. --hp momentum=0.9)")
    parser.add_argument("--batch-size", default=None, metavar="N|full",
                        help="minibatch size or 'full' (default 64; the full batch for gd)")
    parser.add_argument("--start-lr", default=str(LRFIND_START_LR), help=f"first lr (default {LRFIND_START_LR:g})")
    parser.add_argument("--end-lr", default=str(LRFIND_END_LR), help=f"last lr (default {LRFIND_END_LR:g})")
    parser.add_argument("--steps", default=str(LRFIND_STEPS), help=f"steps of the ramp (default {LRFIND_STEPS})")
    parser.add_argument("--seed", default="0", help="seed of initialisation and shuffling (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--out", default="lrfind.png", help="the plot, a .png (default lrfind.png); the numbers go "
                        "beside it as .json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_json
    from ..lrfind import lr_find, ramp
    from ..lrfind.plot import save
    from ..tasks import resolve_task
    from ..train.device import check_device
    from ..train.setup import check_batch_size, check_optimizer, check_optimizer_options

    out = check_file("--out", args.out, suffix=".png")
    start = parse_number("--start-lr", args.start_lr, float)
    end = parse_number("--end-lr", args.end_lr, float)
    steps = parse_number("--steps", args.steps, int)
    seed = parse_number("--seed", args.seed, int)
    batch_size = ("auto" if args.batch_size is None
                  else parse_number("--batch-size", args.batch_size, int, allow=("full",)))
    if isinstance(batch_size, int) and batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'full', got {args.batch_size!r}")
    if seed < 0 or seed > 2**64 - 1:
        raise ValueError(f"--seed must be an integer in [0, 2**64 - 1], got {args.seed!r}")
    try:
        ramp.check_settings(start, end, steps, ramp.STOP_FACTOR)
    except ValueError as error:
        text = str(error)
        for name in ("start_lr", "end_lr", "stop_factor", "steps"):
            text = text.replace(name, "--" + name.replace("_", "-"))
        raise ValueError(text) from None
    options = parse_assignments("--hp", args.hp)
    check_batch_size(batch_size, check_optimizer(args.optimizer))
    check_optimizer_options(options)
    check_device(args.device)
    task = resolve_task(args.task)
    if args.model is not None and args.model not in task.models:
        raise ValueError(f"--model {args.model!r} is not a model of task {task.name!r}; known: "
                         f"{', '.join(task.models)}")
    test = lr_find(task, model=args.model, optimizer=args.optimizer, batch_size=batch_size, start_lr=start,
                   end_lr=end, steps=steps, seed=seed, device=args.device, optimizer_options=options)
    save(test, out)
    atomic_write_json(out.with_suffix(".json"), test.to_json())
    if test.suggestion is None:
        print(f"no suggestion: {test.stop_reason} before any finite loss; try a smaller --start-lr")
    else:
        print(f"suggested lr {test.suggestion:.3g} (lowest smoothed loss at lr {test.min_loss_lr:.3g}, divided by "
              f"{ramp.SUGGESTION_DIVISOR:g}); {test.stop_reason}; {len(test.lrs)} steps in {test.wall_s:.2f} s")
    print(f"plot: {out}")
    return 0
