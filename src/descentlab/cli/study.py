"""``descentlab study``: a race per workload of a suite, the article's claim about Adam checked,
performance profiles; writes OUT/report.html."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..outpaths import check_directory
from .defaults import OWN_EPOCHS, SUITE_EPOCHS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "study", help="races across a suite of workloads: performance profiles, the article's Adam claim checked",
        description="One race per workload (each the usual resumable race, in its own subfolder of OUT), its budget "
        "extended until the tuned best optimizer settled, plus Adam at each of the article's lrs (1e-3, 5e-4, "
        "1e-4) untuned at that budget, and 1e-3 at 4x it; writes OUT/claim.json (a verdict per workload, lr and "
        "budget, judged on confidence intervals over seeds) and OUT/report.html: a table per workload, performance "
        "profiles of time to target with AlgoPerf's score, the claim checked and lr sensitivity across workloads. "
        "Rerun the same command to resume a killed study.")
    parser.add_argument("--workloads", default=None, help="comma-separated: suite names ("
                        + ", ".join(f"{name} {epochs} epochs" for name, epochs in SUITE_EPOCHS.items())
                        + "; the default) or "
                        f"TASK[/MODEL][@EPOCHS] with TASK built-in or module:attr (default {OWN_EPOCHS} epochs)")
    parser.add_argument("--optimizers", default=None, help="comma-separated registry names (default: the race's)")
    parser.add_argument("--seeds", default=None, help="a count N (seeds 0..N-1) or a list (default 3; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="a demo study: the race's quick grid, 2 seeds, 2-5 "
                        "epochs per workload (about a minute); it states no verdict on the claim")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: the available cores)")
    parser.add_argument("--out", default=None, help="output directory (default runs/study-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..study import run_study

    if args.out is not None:
        check_directory("--out", args.out)
    try:
        result = run_study(args.workloads, optimizers=args.optimizers, seeds=args.seeds, quick=args.quick,
                           device=args.device, jobs=args.jobs, out=args.out,
                           progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    if result.claim is not None:
        print(result.claim.headline())
        if not result.claim.demo:
            for row in result.claim.to_json()["by_lr_and_budget"]:
                print(f"  adam lr {row['lr']:g} x{row['multiple']}: within {row['within']}, behind {row['behind']}, "
                      f"undecided {row['undecided']}")
    print(f"\n{len(result.workloads)} workloads in {result.out} ({result.trained} runs trained now, "
          f"{result.wall_s:.1f} s)")
    print(f"claim: {result.out / 'claim.json'}")
    print(f"report: {result.report_path}")
    return 0
