"""``descentlab race``: tune and race the optimizers over seeds, then write report.html."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..outpaths import check_directory
from ..race.protocol import DEFAULT_EPOCHS, DEFAULT_OPTIMIZERS, DEFAULT_SEEDS, QUICK_EPOCHS, QUICK_LRS, QUICK_SEEDS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "race", help="tune and race the optimizers over seeds; write an HTML report",
        description="Every (optimizer, lr) of the grid is trained on the first seed; per optimizer the lr with "
        "the best validation loss is kept and retrained on every seed, and only those runs are scored on the "
        "test split. Results go to OUT/results.jsonl (rerun the same command to resume) and OUT/report.html. "
        "Exit status 1 when every run of an optimizer failed with an error (not diverged: failed).")
    parser.add_argument("--task", default="mnist1d", help="built-in task: mnist1d, digits, lstsq (default mnist1d)")
    parser.add_argument("--model", default=None, help="model of the task: linear, mlp, cnn (default: the task's own, "
                        "mlp for mnist1d and digits, linear for lstsq)")
    parser.add_argument("--optimizers", default=None,
                        help=f"comma-separated registry names (default {','.join(DEFAULT_OPTIMIZERS)})")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates (default 1e-4..1 in half-decade "
                        "steps, plus 5e-4 for adam)")
    parser.add_argument("--seeds", default=None, help=f"a count N (seeds 0..N-1) or a list like 0,1,2 "
                        f"(default {DEFAULT_SEEDS})")
    parser.add_argument("--epochs", default=None, help=f"training budget per run, in epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", default="64", help="minibatch size, or 'full' (GD always uses the full batch)")
    parser.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: the available cores)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small demo race: lrs {','.join(f'{lr:g}' for lr in QUICK_LRS)}, {QUICK_SEEDS} seeds, "
                        f"{QUICK_EPOCHS} epochs (options given explicitly still win)")
    parser.add_argument("--out", default=None, help="output directory (default runs/race-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..race import format_table, race
    from ..report.failures import failed_optimizers, failure_sentence

    if args.out is not None:
        check_directory("--out", args.out)
    try:
        result = race(args.task, model=args.model, optimizers=args.optimizers, lrs=args.lrs, seeds=args.seeds,
                      epochs=args.epochs, batch_size=args.batch_size, jobs=args.jobs, quick=args.quick, out=args.out,
                      progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    print(format_table(result.summary))
    print(f"\n{len(result.rows)} runs in {result.results_path} ({result.ran} trained now, {result.wall_s:.1f} s)")
    print(f"report: {result.report_path}")
    failed = failed_optimizers(result.rows)
    if failed:  # a broken setup, not a result: say so and fail the command (the first one is named)
        name, error = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more optimizer(s), see the report)" if len(failed) > 1 else ""
        print(f"descentlab race: error: {failure_sentence(name, error)}{more}", file=sys.stderr)
        return 1
    return 0
