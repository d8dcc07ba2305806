"""The guide page: one self-contained HTML file (``descentlab guide``), the article's sections made live.

It reuses the landscape page's pieces: d3 (vendored), ``landscape_math.js`` (the surfaces, the update rules,
the noise stream and the trajectory runner, tested equal to ``descentlab.optim``), and adds
``guide_math.js`` (the minibatch task, the effective learning rates, the closed-form momentum rate map,
the article's uncorrected Adam) and ``guide_page.js`` (sections, figures, controls, URL state). Everything
the page knows comes from here as one JSON spec: the sections' controls and defaults
(:mod:`descentlab.guide.sections`), the surfaces, the minibatch data, the update rules, the study's claim.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_with
from ..landscape_page import D3, PAGE_OPTIMIZERS, asset, fill_template, inline_json, surface_spec
from ..tasks.surfaces import get_surface
from ..version import __version__
from .claim import claim_sentences, load_claim
from .minibatch import BATCHES, regression_data
from .sections import INTEGER_CONTROLS, map_axes, sections_spec

UPDATES = {o.name: o.update for o in PAGE_OPTIMIZERS}
"""The corrected update rules, as the landscape page writes them."""


def guide_spec(claim: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the guide's script reads."""
    claim = dict(claim) if claim is not None else load_claim(None)
    x, y = regression_data()
    lrs, rhos = map_axes()
    surfaces = {name: surface_spec(get_surface(name)) for name in ("bowl", "saddle", "local-minima")}
    return {
        "version": __version__, "d3": {k: D3[k] for k in ("name", "version", "licence")},
        "sections": sections_spec(), "integer_controls": sorted(INTEGER_CONTROLS),
        "surfaces": surfaces, "updates": UPDATES, "tol": 1e-2,
        "regression": {"x": x.tolist(), "y": y.tolist(), "batches": list(BATCHES),
                       "window": [-1.5, 2.5, -2.0, 2.0]},
        "map": {"lrs": lrs, "rhos": rhos},
        "claim": {**claim, "sentences": claim_sentences(dict(claim))},
    }


def render_guide(claim: Mapping[str, Any] | None = None) -> str:
    """The guide as one HTML string: styles, d3, both maths scripts, the spec and the page script inline."""
    return fill_template("guide_page.html", {
        "/*STYLE*/": asset("guide_page.css"), "/*MATH*/": asset("landscape_math.js"),
        "/*GUIDEMATH*/": asset("guide_math.js"), "/*SPEC*/": inline_json(guide_spec(claim)),
        "/*PAGE*/": asset("guide_page.js")})


def write_guide(path: str | os.PathLike[str], claim: Mapping[str, Any] | None = None) -> Path:
    """Write the guide to ``path`` (atomically)."""
    text = render_guide(claim)
    return atomic_write_with(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
