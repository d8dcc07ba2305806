"""``descentlab bench``: step time of descentlab's engine modes vs torch.optim's for-loop, foreach and fused kernels."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..outpaths import check_file
from .defaults import BENCH_ENGINES, BENCH_OPTIMIZERS

PARAMS, LAYOUTS, REPEATS = "20M", "1,200,5000", 25
QUICK_PARAMS, QUICK_LAYOUTS, QUICK_REPEATS = "2M", "1,200", 5
"""``--quick``: these in place of the defaults above, for the options not given explicitly."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="time optimizer steps against torch.optim",
        description="Time one optimizer step of descentlab (one row per engine mode) and torch.optim (for-loop, "
        "foreach, fused) in the same process on the same data; prints ms, paired speed-ups, GB/s against copy "
        "bandwidth, peak memory, and issue 13's speed targets met or missed.")
    parser.add_argument("--optimizers", default=",".join(BENCH_OPTIMIZERS),
                        help="comma-separated registry names or import paths (module:attribute)")
    parser.add_argument("--layouts", default=None, help="numbers of tensors the parameters are split into, "
                        f"comma-separated (default {LAYOUTS})")
    parser.add_argument("--params", default=None, help=f"total float32 parameters, e.g. 20M or 500k (default {PARAMS})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed steps per measurement, the median reported (default {REPEATS})")
    parser.add_argument("--engine", default=",".join(BENCH_ENGINES),
                        help="comma-separated descentlab engine modes, one row each: auto (the default engine: the "
                        "per-tensor core, or flat slices for a group holding a tensor of 32 MiB or more), eager (the "
                        "core), flat, compiled (torch.compile of the update, opt-in); default %(default)s")
    parser.add_argument("--quick", action="store_true",
                        help=f"a quick look: --params {QUICK_PARAMS}, --layouts {QUICK_LAYOUTS}, --repeats "
                        f"{QUICK_REPEATS} (options given explicitly still win)")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="skip the MNIST-1D MLP training-step comparison")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    parser.set_defaults(func=run)


def _layouts(text: str) -> list[int]:
    try:
        layouts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--layouts must be comma-separated integers, got {text!r}") from None
    if not layouts:
        raise ValueError(f"--layouts is empty: {text!r}")
    return layouts


def _or_quick(value: Any, default: Any, quick: Any, is_quick: bool) -> Any:
    """The option's value where it was given, else its default (``--quick``: its quick default)."""
    if value is not None:
        return value
    return quick if is_quick else default


def run(args: argparse.Namespace) -> int:
    from .. import bench

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--optimizers is empty: {args.optimizers!r}")
    numel = bench.parse_count(_or_quick(args.params, PARAMS, QUICK_PARAMS, args.quick))
    layouts = _layouts(_or_quick(args.layouts, LAYOUTS, QUICK_LAYOUTS, args.quick))
    repeats = _or_quick(args.repeats, REPEATS, QUICK_REPEATS, args.quick)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    engines = bench.parse_engines(args.engine)
    bench.check_options(names, layouts, numel, engines)
    if args.json is not None:
        check_file("--json", args.json)  # before the benchmark runs, not after
    result = bench.run(names, layouts, numel, repeats, engines, train=args.train,
                       progress=lambda text: print(f"... {text}", file=sys.stderr, flush=True))
    print(bench.table(result))
    print(bench.targets_text(result))
    if args.json:
        bench.write_json(result, args.json)
    return 0
