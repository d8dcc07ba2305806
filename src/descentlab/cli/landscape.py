"""``descentlab landscape``: optimizers moving on 2-D loss surfaces, as a picture (and an animation).

    descentlab landscape --surface saddle --optimizers gd,momentum,adagrad,rmsprop,adam --steps 200 \\
        --start 1,0.001 --out saddle.png [--gif] [--noise 0.1] [--lr adam=0.1]
    descentlab landscape --all --out DIR        # DIR/<surface>.png for every surface + DIR/index.html
    descentlab landscape --html [--out landscape.html]   # the interactive page, one self-contained file
    descentlab landscape --list                 # the surfaces, their formulas, minima and defaults
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path, PurePath
from typing import Any

from ..outpaths import check_directory, check_file
from .defaults import LANDSCAPE_OPTIMIZERS, LANDSCAPE_STEPS, LANDSCAPE_TOL, SURFACES


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "landscape", help="watch the optimizers move on 2-D loss surfaces",
        description="Run optimizers on a 2-D surface (saddle, local minima, Rosenbrock, ill-conditioned bowl, "
        "Rastrigin), draw their trajectories over the contours and print a summary table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default start points and per-optimizer learning rates come from the surface "
        "(see --list and descentlab.tasks.surfaces.DEFAULT_LRS).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--surface", default="saddle", metavar="NAME",
                       help=f"one of {', '.join(SURFACES)} (default: saddle)")
    which.add_argument("--all", action="store_true", help="every surface: OUT is a directory that gets "
                       "<surface>.png per surface and index.html")
    which.add_argument("--list", action="store_true", help="list the surfaces and their defaults, then exit")
    parser.add_argument("--optimizers", default=",".join(LANDSCAPE_OPTIMIZERS), metavar="LIST",
                        help="comma-separated registry names or import paths pkg.mod:attr "
                        f"(default: {','.join(LANDSCAPE_OPTIMIZERS)})")
    parser.add_argument("--steps", type=int, default=LANDSCAPE_STEPS, help="steps per optimizer (default: "
                        f"{LANDSCAPE_STEPS})")
    parser.add_argument("--start", metavar="X,Y", help="start point (default: the surface's own)")
    parser.add_argument("--lr", action="append", default=[], metavar="NAME=VALUE",
                        help="learning rate for one optimizer; repeat, or separate with commas")
    parser.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                        help="add N(0, SIGMA²) noise to each gradient coordinate (minibatch-like; default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gradient noise (default: 0)")
    parser.add_argument("--condition", type=float, default=None, metavar="KAPPA",
                        help="condition number of the bowl surface (default: 100)")
    parser.add_argument("--tol", type=float, default=LANDSCAPE_TOL,
                        help=f"distance to a minimum counted as reached (default: {LANDSCAPE_TOL:g})")
    parser.add_argument("--out", metavar="PATH", help="PNG to write (default: <surface>.png), the page with --html "
                        "(default: landscape.html), or the directory with --all (default: landscapes)")
    parser.add_argument("--html", action="store_true", help="write the interactive page instead of a PNG: one "
                        "self-contained HTML file (default --out landscape.html) opening on --surface, --start, "
                        "--steps, --lr, --noise, --seed, --condition, with --optimizers switched on")
    parser.add_argument("--gif", action="store_true", help="also write an animation next to the PNG (same name, .gif)")
    parser.add_argument("--frames", type=int, default=40, help="frames in the animation (default: 40)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default: 100)")
    parser.set_defaults(func=run)


def parse_start(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--start must be X,Y (two numbers), got {text!r}") from None
    return x, y


def parse_lrs(items: list[str]) -> dict[str, float]:
    lrs: dict[str, float] = {}
    for item in (part for text in items for part in text.split(",") if part.strip()):
        name, sep, value = item.partition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = math.nan
        if not sep or not name.strip() or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"--lr must be NAME=VALUE with a positive number, got {item!r}")
        lrs[name.strip()] = lr
    return lrs


def parse_optimizers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--optimizers must name at least one optimizer, got {text!r}")
    return names


def list_surfaces() -> int:
    from ..tasks.surfaces import get_surface, surface_names

    for name in surface_names():
        s = get_surface(name)
        minima = ", ".join(f"({x:.4g}, {y:.4g})" for x, y in s.minima)
        x0, x1, y0, y1 = s.window
        print(f"{name}: f = {s.formula}")
        print(f"    {s.doc}")
        print(f"    minima {minima}; start {s.start}; window x [{x0:g}, {x1:g}], y [{y0:g}, {y1:g}]")
        print("    lrs " + ", ".join(f"{k}={v:g}" for k, v in s.lrs.items()))
    return 0


def run(args: argparse.Namespace) -> int:
    from .. import landscape
    from ..tasks.surfaces import surface_names

    if args.list:
        return list_surfaces()
    optimizers = parse_optimizers(args.optimizers)
    options: dict[str, Any] = {"steps": args.steps, "lrs": parse_lrs(args.lr), "noise": args.noise,
                               "seed": args.seed, "tol": args.tol, "condition": args.condition}
    if args.dpi < 10 or args.dpi > 600:
        raise ValueError(f"--dpi must be in [10, 600], got {args.dpi}")
    if args.gif:
        landscape.check_frames(args.frames)  # before the PNG is written
    if args.all:
        if args.html:
            raise ValueError("--html cannot be combined with --all (--all writes landscape.html in its directory)")
        if args.start is not None:
            raise ValueError("--start cannot be combined with --all (each surface has its own start)")
        out_dir = check_directory("--out", args.out if args.out is not None else "landscapes")
        return write_everything(out_dir, optimizers, args, options)
    if args.surface not in surface_names():
        raise ValueError(f"--surface: unknown surface {args.surface!r}; known: {', '.join(surface_names())}")
    if args.condition is not None and args.surface != "bowl":
        raise ValueError(f"--condition applies to --surface bowl only, got --surface {args.surface}")
    if args.html:
        return write_html(args, optimizers, options)
    out = check_file("--out", args.out if args.out is not None else f"{args.surface}.png", suffix=".png")
    if args.gif:
        check_file("--out", out.with_suffix(".gif"))  # the animation goes beside the picture
    start = parse_start(args.start) if args.start is not None else None
    result = landscape.run(args.surface, optimizers, start=start, **options)
    landscape.save_png(result, out, dpi=args.dpi)
    print(landscape.format_summary(result))
    print(f"wrote {out}")
    if args.gif:
        gif = landscape.save_gif(result, out.with_suffix(".gif"), frames=args.frames)
        print(f"wrote {gif}")
    return 0


def write_html(args: argparse.Namespace, optimizers: list[str], options: dict[str, Any]) -> int:
    """``--html``: the interactive page, opening on the state the other options describe."""
    from .. import landscape_page

    if args.gif:
        raise ValueError("--gif cannot be combined with --html (the page animates itself)")
    text = args.out if args.out is not None else "landscape.html"
    if text and PurePath(text).suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must end in .html with --html, got {text!r}")
    out = check_file("--out", text)
    start = parse_start(args.start) if args.start is not None else None
    state = landscape_page.page_state(args.surface, optimizers, start=start, steps=options["steps"],
                                      lrs=options["lrs"], noise=options["noise"], seed=options["seed"],
                                      condition=options["condition"], tol=options["tol"])
    landscape_page.write_page(out, state)
    print(f"wrote {out} (open it in a browser: it needs no network)")
    return 0


def write_everything(out_dir: Path, optimizers: list[str], args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``--all``: the pictures and index (descentlab.landscape), the interactive page (descentlab.landscape_page)
    and the guide (descentlab.guide) side by side; the index links both pages. The page's opening state is
    checked before any picture is drawn."""
    from .. import landscape, landscape_page
    from ..guide import write_guide
    from ..tasks.surfaces import surface_names

    first = surface_names()[0]
    shown = [name for name in optimizers if name in landscape_page.page_names()]
    opening = landscape_page.page_state(
        first, shown or None, steps=min(options["steps"], landscape_page.STEPS.high),
        lrs={name: lr for name, lr in options["lrs"].items() if name in shown}, noise=options["noise"],
        seed=options["seed"], tol=options["tol"])
    links = {"landscape.html": "the interactive page: drag the start point, move the sliders",
             "guide.html": "the guide: the article, section by section, live"}
    results = landscape.write_all(out_dir, optimizers, gif=args.gif, dpi=args.dpi, frames=args.frames, links=links,
                                  **options)
    landscape_page.write_page(out_dir / "landscape.html", opening)
    write_guide(out_dir / "guide.html")
    for name, result in results.items():
        print(f"== {name}: f = {result.surface.formula}, start {result.start}")
        print(landscape.format_summary(result))
    print(f"wrote {out_dir / 'index.html'}, {len(results)} pictures, landscape.html and guide.html")
    return 0
