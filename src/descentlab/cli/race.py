"""``descentlab race``: tune and race the optimizers over seeds, then write report.html."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..outpaths import check_directory
from .defaults import (
    QUICK_EPOCHS,
    QUICK_LRS,
    QUICK_SEEDS,
    RACE_EPOCHS,
    RACE_OPTIMIZERS,
    RACE_SEEDS,
    SCHEDULES,
    WARMUP_FRACTION,
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "race", help="tune and race the optimizers over seeds; write an HTML report",
        description="Every setting (lr, batch size, --hp values) of every optimizer and schedule is trained on the "
        "first seed with early stopping and judged at its best validation point (highest validation accuracy; "
        "regression: lowest validation loss); a winner at the edge of the lr grid extends the grid; the best third "
        "is trained on a second seed and the best on average is retrained on every seed; only those runs are scored "
        "on the test split. The report gives 95%% intervals over seeds and names every optimizer that cannot be told "
        "from the best (paired by seed). Results go to OUT/results.jsonl (rerun the same command to resume) and "
        "OUT/report.html. Exit status 1 when every run of an optimizer failed with an error (not diverged: failed).")
    parser.add_argument("--task", default="mnist1d", help="built-in task (mnist1d, digits, lstsq) or your own as "
                        "module:attr, a descentlab Task or a callable returning one (default mnist1d)")
    parser.add_argument("--model", default=None, help="model of the task: linear, mlp, cnn (default: the task's own, "
                        "mlp for mnist1d and digits, linear for lstsq)")
    parser.add_argument("--optimizers", default=None,
                        help=f"comma-separated registry names (default {','.join(RACE_OPTIMIZERS)})")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates (default 1e-4..1 in half-decade "
                        "steps, plus 5e-4 for adam), or auto: per optimizer an lr range test (descentlab lrfind, at "
                        "most one run's budget) and 5 half-decade lrs centred on its suggestion")
    parser.add_argument("--seeds", default=None, help=f"a count N (seeds 0..N-1) or a list like 0,1,2 "
                        f"(default {RACE_SEEDS})")
    parser.add_argument("--epochs", default=None, help=f"training budget per run, in epochs (default {RACE_EPOCHS})")
    parser.add_argument("--batch-size", default="64", help="minibatch size, or several to search (32,64,128), or "
                        "'full' (GD always uses the full batch)")
    parser.add_argument("--hp", action="append", default=None, metavar="NAME=V1,V2",
                        help="a hyper-parameter to search, for each raced optimizer that has it (repeatable): "
                        "weight_decay=0,1e-4; a pair as a:b, e.g. betas=0.9:0.999,0.8:0.99; true/false for flags")
    parser.add_argument("--patience", default=None, help="early stopping of tuning runs: stop after N evaluations "
                        "(epochs) without a better validation point; default a quarter of --epochs (at least 3); "
                        "none: every run trains its whole budget")
    parser.add_argument("--schedules", default=None,
                        help=f"comma-separated lr schedules, each raced separately: {', '.join(SCHEDULES)} (default "
                        f"constant; warmup-cosine warms up over {WARMUP_FRACTION:.0%}% of the steps); the lr grid is "
                        "the peak lr")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: the available cores); with "
                        "--backend ray and no cluster, the CPUs of the local Ray the race starts")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="where the runs train: local worker processes (default), or ray: one Ray task per run "
                        "(pip install 'descentlab[ray]'; a task or optimizer given as module:attr must be importable "
                        "on every node)")
    parser.add_argument("--engine", choices=("batched", "per-run"), default=None,
                        help="batched (default on the local backend): runs that share a batch size train together as "
                        "one stacked model, each still its own run; per-run: every run alone")
    parser.add_argument("--address", default=None, help="with --backend ray: the cluster, as ray.init takes it "
                        "(host:port, ray://host:port, auto); default: RAY_ADDRESS, else a private Ray on this "
                        "machine, started and stopped by the race (also: local)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small demo race: lrs {','.join(f'{lr:g}' for lr in QUICK_LRS)}, {QUICK_SEEDS} seeds, "
                        f"{QUICK_EPOCHS} epochs (options given explicitly still win)")
    parser.add_argument("--out", default=None, help="output directory (default runs/race-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import race
    from ..report import format_table
    from ..report.failures import failed_optimizers, failure_sentence

    if args.out is not None:
        check_directory("--out", args.out)
    try:
        result = race(args.task, model=args.model, optimizers=args.optimizers, lrs=args.lrs, seeds=args.seeds,
                      epochs=args.epochs, batch_size=args.batch_size, schedules=args.schedules, device=args.device,
                      jobs=args.jobs, quick=args.quick, out=args.out, progress=False if args.quiet else None,
                      backend=args.backend, address=args.address, engine=args.engine, hp=args.hp,
                      patience=args.patience)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    print(format_table(result.summary))
    print(f"\n{len(result.records)} runs in {result.results_path} ({result.ran} trained now, {result.wall_s:.1f} s)")
    print(f"report: {result.report_path}")
    failed = failed_optimizers(result.records)
    if failed:  # a broken setup, not a result: say so and fail the command (the first one is named)
        name, error = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more optimizer(s), see the report)" if len(failed) > 1 else ""
        print(f"descentlab race: error: {failure_sentence(name, error)}{more}", file=sys.stderr)
        return 1
    return 0
