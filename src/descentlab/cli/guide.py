"""``descentlab guide``: the article as one interactive, offline page (its numbers equal the library's).

    descentlab guide [--out guide.html] [--study DIR]

``--study DIR`` takes section 8 ("which to start with") from a study's ``DIR/claim.json``; without it (or
when DIR has no claim.json) the page shows the shipped numbers. Imports nothing heavy until it runs.
"""

from __future__ import annotations

import argparse
from pathlib import PurePath
from typing import Any

from ..outpaths import check_file


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "guide", help="the article, interactive: every optimizer it names, live, in one offline page",
        description="Write one self-contained HTML page that follows the article: gradient descent, minibatch "
        "SGD, momentum (with its (lr, momentum) convergence map), AdaGrad, RMSProp, Adam, saddle points and "
        "local minima, and which optimizer to start with. Every figure is computed in the browser by the same "
        "maths as descentlab.optim; the page needs no network and keeps its state in the URL.")
    parser.add_argument("--out", default="guide.html", metavar="PATH", help="the page to write (default: guide.html)")
    parser.add_argument("--study", default=None, metavar="DIR", help="a study's output directory: section 8 reads "
                        "DIR/claim.json (default: the numbers shipped with descentlab)")
    parser.set_defaults(func=run)


def check_out(text: str) -> Any:
    """``--out``: a writable .html path (checked before any work)."""
    if PurePath(text).suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must end in .html, got {text!r}")
    return check_file("--out", text)


def run(args: argparse.Namespace) -> int:
    out = check_out(args.out)
    from ..guide import load_claim, write_guide

    claim = load_claim(args.study)
    write_guide(out, claim)
    if claim.get("note"):
        print(claim["note"])
    print(f"wrote {out} (open it in a browser: it needs no network)")
    return 0
