"""The interactive landscape page: one self-contained HTML file (``descentlab landscape --html``).

The page draws the surfaces of :mod:`descentlab.tasks.surfaces` as contours (d3 v7.9.2, vendored in
``landscape_assets/``, ISC licence) and runs six optimizers on them *in the browser* as you drag the
start point or move a slider: ``landscape_assets/landscape_math.js`` holds the same maths as
:func:`descentlab.landscape.run` (tested equal to 1e-9 over 200 steps). Everything the page knows
about the surfaces and optimizers — formulas, minima, saddles, windows, default starts and learning
rates, registry defaults, slider ranges, update rules — comes from here, as one JSON spec.

The whole view lives in the URL hash (``#surface=bowl&start=-8,1&steps=200&on=gd,adam&adam.lr=0.3``…),
so a link reproduces it. Gradient noise: every optimizer but the full-batch one (``gd``, whose
registry entry has ``full_batch``) sees ``∇f(w) + σ·ξ_k``, ξ from :mod:`descentlab.landscape_noise`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .atomic import atomic_write_with
from .landscape import DEFAULT_STEPS, DEFAULT_TOL, check_start
from .optim import resolve
from .tasks.surfaces import DEFAULT_CONDITION, TILT, Surface, get_surface, surface_names
from .version import __version__

D3 = {"file": "d3.v7.9.2.min.js", "name": "d3", "version": "7.9.2", "licence": "ISC", "licence_file": "d3.LICENSE"}
"""The vendored chart library (from the npm registry's ``d3`` package, ``dist/d3.min.js``)."""


@dataclass(frozen=True)
class Slider:
    """A control: ``scale`` is ``log`` (the slider moves log10 of the value), ``one-minus-log``
    (log10 of 1 − value, for decay rates close to 1) or ``linear``."""

    key: str
    label: str
    low: float
    high: float
    scale: str = "linear"
    hyper: str = ""
    """The torch keyword the value goes to (``lr``, ``momentum``, ``betas``…); empty for page-wide controls."""
    index: int | None = None
    """For a pair such as ``betas``: which element."""

    def check(self, value: float, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not self.low <= value <= self.high:
            low, high = (int(b) if float(b).is_integer() and abs(b) >= 1e5 else f"{b:g}" for b in (self.low, self.high))
            raise ValueError(f"{what} must be a number in [{low}, {high}] on the page, got {value!r}")
        return float(value)


LR = Slider("lr", "γ (lr)", 1e-5, 10.0, "log", "lr")
SLIDERS: dict[str, Slider] = {s.key: s for s in (
    Slider("momentum", "ρ (momentum)", 0.0, 0.999, "linear", "momentum"),
    Slider("alpha", "α (decay)", 0.5, 0.9999, "one-minus-log", "alpha"),
    Slider("beta1", "β1", 0.0, 0.999, "linear", "betas", 0),
    Slider("beta2", "β2", 0.5, 0.9999, "one-minus-log", "betas", 1),
    Slider("eps", "ε", 1e-12, 1.0, "log", "eps"),
)}
"""The hyper-parameter sliders an optimizer card may show (lr is on every card)."""

STEPS = Slider("steps", "steps", 1, 1000)
NOISE = Slider("noise", "noise σ", 0.0, 5.0)
SEED = Slider("seed", "seed", 0, 2**31 - 1)
CONDITION = Slider("condition", "κ (condition number)", 1.0, 1e4, "log")


@dataclass(frozen=True)
class PageOptimizer:
    """A registry name on the page, the sliders of its card and its update rule (the README's corrected form)."""

    name: str
    label: str
    sliders: tuple[str, ...]
    update: str


G = "g = ∇f(w) + σ·ξ"
PAGE_OPTIMIZERS: tuple[PageOptimizer, ...] = (
    PageOptimizer("gd", "GD", (), "g = ∇f(w) (full batch: no noise); w ← w − γ·g"),
    PageOptimizer("sgd", "SGD", (), f"{G}, ξ ~ N(0, I) (a minibatch's error); w ← w − γ·g"),
    PageOptimizer("momentum", "Momentum", ("momentum",), f"{G}; b ← ρ·b + g (b₁ = g); w ← w − γ·b"),
    PageOptimizer("adagrad", "AdaGrad", ("eps",), f"{G}; s ← s + g²; w ← w − γ·g / (√s + ε)"),
    PageOptimizer("rmsprop", "RMSProp", ("alpha", "eps"), f"{G}; s ← α·s + (1 − α)·g²; w ← w − γ·g / (√s + ε)"),
    PageOptimizer("adam", "Adam", ("beta1", "beta2", "eps"),
                  f"{G}; m ← β1·m + (1 − β1)·g; s ← β2·s + (1 − β2)·g²; m̂ = m / (1 − β1ᵗ); ŝ = s / (1 − β2ᵗ); "
                  "w ← w − γ·m̂ / (√ŝ + ε)"),
)
"""The six optimizers of the page, in the order of its cards (and colours: d3's Tableau 10, as the PNGs)."""

RULE_HYPERS: dict[str, tuple[str, ...]] = {
    "SGD": ("momentum",), "Adagrad": ("eps",), "RMSprop": ("alpha", "eps"), "Adam": ("betas", "eps"),
}
"""What each rule of landscape_math.js reads besides lr (the rest stay at torch's neutral defaults)."""

SURFACE_CONSTANTS: dict[str, dict[str, float]] = {
    "local-minima": {"tilt": TILT}, "bowl": {"condition": DEFAULT_CONDITION},
}
"""The constants of a surface's formula, as landscape_math.js names them."""
SURFACE_PARAMETERS: dict[str, tuple[Slider, str, str]] = {
    "bowl": (CONDITION, "½·(x²/κ + y²)", "An ill-conditioned quadratic: curvature 1/κ along x, 1 along y."),
}
"""Surfaces with a page control: the slider, and the formula and description written with its symbol."""


def page_names() -> list[str]:
    return [o.name for o in PAGE_OPTIMIZERS]


def hyperparams_of(name: str, values: Mapping[str, float]) -> dict[str, Any]:
    """torch keyword arguments for ``name`` from slider values keyed by slider key (``beta1`` → ``betas[0]``)."""
    entry = resolve(name)
    hypers = {k: entry.defaults[k] for k in RULE_HYPERS[entry.cls.rule.name]}
    for key, value in values.items():
        slider = SLIDERS[key]
        if slider.index is None:
            hypers[slider.hyper] = value
        else:
            pair = list(hypers[slider.hyper])
            pair[slider.index] = value
            hypers[slider.hyper] = tuple(pair)
    return hypers


def surface_spec(surface: Surface) -> dict[str, Any]:
    parameter = SURFACE_PARAMETERS.get(surface.name)
    return {
        "name": surface.name, "formula": parameter[1] if parameter else surface.formula,
        "doc": parameter[2] if parameter else surface.doc,
        "minima": surface.minima, "global_minima": surface.global_minima, "saddles": surface.saddles,
        "window": surface.window, "start": surface.start, "log_levels": surface.log_levels, "levels": surface.levels,
        "lrs": {o.name: surface.lr_for(o.name) for o in PAGE_OPTIMIZERS},
        "params": SURFACE_CONSTANTS.get(surface.name, {}),
        "parameter": asdict(parameter[0]) if parameter else None,
    }


def _optimizer_spec(o: PageOptimizer) -> dict[str, Any]:
    entry = resolve(o.name)
    hypers = hyperparams_of(o.name, {})
    defaults = {}
    for key in o.sliders:
        slider = SLIDERS[key]
        value = hypers[slider.hyper]
        defaults[key] = value if slider.index is None else value[slider.index]
    return {"name": o.name, "label": o.label, "rule": entry.cls.rule.name, "summary": entry.summary,
            "noisy": not entry.full_batch, "update": o.update, "hypers": hypers, "sliders": list(o.sliders),
            "defaults": defaults}


def page_state(surface: str = "saddle", optimizers: Iterable[str] | None = None, *,
               start: Sequence[float] | None = None, steps: int = DEFAULT_STEPS,
               lrs: Mapping[str, float] | None = None, noise: float = 0.0, seed: int = 0,
               condition: float | None = None, tol: float = DEFAULT_TOL) -> dict[str, Any]:
    """The page's opening state (the URL hash overrides it), validated against the page's ranges."""
    names = page_names()
    on = names if optimizers is None else list(optimizers)
    unknown = [n for n in on if n not in names]
    if unknown or not on:
        raise ValueError(f"optimizers on the page must be among {','.join(names)}, got {','.join(on) or 'none'}")
    lrs = dict(lrs or {})
    unused = sorted(set(lrs) - set(on))
    if unused:
        raise ValueError(f"lr given for {', '.join(unused)}, which is not among the optimizers {','.join(on)}")
    if condition is not None and surface != "bowl":
        raise ValueError(f"condition applies to the bowl surface only, got condition={condition!r} for {surface!r}")
    built = get_surface(surface, condition=condition)
    state: dict[str, Any] = {
        "surface": surface,
        "start": list(check_start(built, built.start if start is None else start)),
        "steps": int(STEPS.check(steps, "steps")), "noise": NOISE.check(noise, "noise"),
        "seed": int(SEED.check(seed, "seed")), "on": on, "tol": _check_tol(tol),
        "lr": {name: LR.check(lr, f"lr for {name}") for name, lr in lrs.items()},
    }
    if condition is not None:
        state["condition"] = CONDITION.check(condition, "condition")
    return state


def _check_tol(tol: float) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    return float(tol)


def page_spec(state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the page script reads: surfaces, optimizers, controls and the opening state."""
    state = dict(state) if state is not None else page_state()
    return {
        "version": __version__, "tol": state["tol"], "d3": {k: D3[k] for k in ("name", "version", "licence")},
        "surfaces": [surface_spec(get_surface(name)) for name in surface_names()],
        "optimizers": [_optimizer_spec(o) for o in PAGE_OPTIMIZERS],
        "sliders": {key: asdict(s) for key, s in {"lr": LR, **SLIDERS}.items()},
        "controls": {s.key: asdict(s) for s in (STEPS, NOISE, SEED)},
        "state": state,
    }


def asset(name: str) -> str:
    return resources.files("descentlab").joinpath("landscape_assets", name).read_text(encoding="utf-8")


def inline_json(value: Any) -> str:
    """JSON safe inside a <script> element (no "</", no HTML comment openers)."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def fill_template(template: str, parts: Mapping[str, str]) -> str:
    """The asset ``template`` with each marker of ``parts`` (e.g. ``/*SPEC*/``) replaced by its text, and
    the vendored d3 and its licence at ``/*D3*/`` and ``/*D3LICENSE*/``; each marker must occur once."""
    parts = {"/*D3LICENSE*/": f"/* {D3['name']} {D3['version']}, {D3['licence']} licence:\n"
                              f"{asset(D3['licence_file'])}*/", "/*D3*/": asset(D3["file"]), **parts}
    page = asset(template)
    for marker, text in parts.items():
        if page.count(marker) != 1:
            raise RuntimeError(f"{template} must hold {marker} exactly once")
        before, after = page.split(marker)
        page = before + text + after
    return page


def render_page(state: Mapping[str, Any] | None = None) -> str:
    """The page as one HTML string: styles, d3, the maths, the spec and the page script inline."""
    return fill_template("landscape_page.html", {
        "/*STYLE*/": asset("landscape_page.css"), "/*MATH*/": asset("landscape_math.js"),
        "/*SPEC*/": inline_json(page_spec(state)), "/*PAGE*/": asset("landscape_page.js")})


def write_page(path: str | os.PathLike[str], state: Mapping[str, Any] | None = None) -> Path:
    """Write the page to ``path`` (atomically)."""
    text = render_page(state)
    return atomic_write_with(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
