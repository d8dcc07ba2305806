"""Optimizers moving on 2-D loss surfaces: trajectories as arrays, pictures, animations.

The same ``descentlab.optim`` classes that train models drive a 2-element float64 tensor ``w``:
at each step ``g = ∇f(w) (+ σ·ξ, ξ ~ N(0, I))`` is put in ``w.grad`` and ``optimizer.step()`` is
called. Optimizers are looked up through the registry, so any registry name or import path
``pkg.module:attr`` works. With noise, every optimizer sees the same noise sequence ξ_0, ξ_1, …
(:func:`descentlab.landscape_noise.gradient_noise` seeded with ``seed``, a SplitMix64 + Box–Muller
stream that the interactive page draws identically), which keeps the comparison fair.

Figures are plain ``matplotlib.figure.Figure`` objects drawn on an Agg canvas (no pyplot, no
display, the global backend untouched); a notebook shows them inline.

A trajectory is cut at the first non-finite loss, gradient or point: it keeps the finite points,
is marked ``"diverged"`` and is still drawn.

Notebook use::

    from descentlab.landscape import run, plot
    result = run("saddle", ["gd", "momentum", "adam"], steps=200)
    result.trajectories["adam"].points      # (n + 1, 2) array
    fig = plot(result)
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .atomic import atomic_write_with
from .landscape_noise import gradient_noise
from .optim import resolve
from .tasks.registry import MAX_SEED
from .tasks.surfaces import Surface, get_surface, surface_names

DEFAULT_OPTIMIZERS = ("gd", "momentum", "adagrad", "rmsprop", "adam")
DEFAULT_STEPS = 200
DEFAULT_TOL = 1e-2
MAX_STEPS = 100_000
MAX_FRAMES = 10_000

CONVERGED, NOT_CONVERGED, DIVERGED = "converged", "not converged", "diverged"


@dataclass
class Trajectory:
    """One optimizer's path: ``points[k]`` is w after k steps, ``losses[k] = f(points[k])``."""

    optimizer: str
    lr: float
    hyperparams: dict[str, Any]
    points: np.ndarray
    losses: np.ndarray
    status: str
    diverged_at: int | None = None
    """The step whose loss, gradient or result was not finite (points stop before it)."""
    steps_to_tol: int | None = None
    """First step at which w is within ``tol`` of a known minimum; None if it never is."""
    nearest_minimum: tuple[float, float] | None = None
    distance: float = math.inf
    """Distance from the final point to the nearest known minimum."""

    @property
    def final_point(self) -> tuple[float, float]:
        return float(self.points[-1, 0]), float(self.points[-1, 1])

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    @property
    def step_lengths(self) -> np.ndarray:
        """‖w_{k+1} − w_k‖ for each step taken."""
        return np.linalg.norm(np.diff(self.points, axis=0), axis=1)

    @property
    def status_text(self) -> str:
        """The status, with the step for a diverged trajectory."""
        return f"diverged at step {self.diverged_at}" if self.status == DIVERGED else self.status

    @property
    def label(self) -> str:
        text = f"{self.optimizer} (lr={self.lr:g})"
        return f"{text} {self.status_text}" if self.status == DIVERGED else text


@dataclass
class LandscapeRun:
    """Trajectories of several optimizers on one surface, from one start."""

    surface: Surface
    start: tuple[float, float]
    steps: int
    noise: float
    seed: int
    tol: float
    trajectories: dict[str, Trajectory] = field(default_factory=dict)


# -- running -------------------------------------------------------------------------------------

def _check_positive_int(name: str, value: Any, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= high:
        raise ValueError(f"{name} must be an integer in [1, {high}], got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")
    return int(seed)


def check_frames(frames: Any) -> int:
    """The number of animation frames, validated (checked before anything is written)."""
    return _check_positive_int("frames", frames, MAX_FRAMES)


def _check_real(name: str, value: Any, *, low: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def as_surface(surface: Surface | str, condition: float | None = None) -> Surface:
    if isinstance(surface, Surface):
        return surface
    return get_surface(surface, condition=condition)


def trajectory(surface: Surface | str, optimizer: str, *, start: Sequence[float] | None = None,
               steps: int = DEFAULT_STEPS, lr: float | None = None, hyperparams: Mapping[str, Any] | None = None,
               noise: float = 0.0, seed: int = 0, tol: float = DEFAULT_TOL) -> Trajectory:
    """Run ``optimizer`` (a registry name or import path) for ``steps`` steps on ``surface``."""
    surface = as_surface(surface)
    entry = resolve(optimizer)
    steps = _check_positive_int("steps", steps, MAX_STEPS)
    noise = _check_real("noise", noise)
    tol = _check_real("tol", tol, strict=True)
    lr = surface.lr_for(optimizer) if lr is None else _check_real(f"lr for {optimizer}", lr, strict=True)
    start = check_start(surface, surface.start if start is None else start)
    hp = dict(hyperparams or {})
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = entry.create([w], lr=lr, **hp)
    xi = torch.from_numpy(gradient_noise(_check_seed(seed), steps)) if noise else None
    points, losses = [start], []
    diverged_at = None
    for k in range(steps + 1):
        loss = surface(w)
        if not torch.isfinite(loss):
            diverged_at = k
            points.pop()  # the point itself may be finite but its loss is not: cut it too
            break
        losses.append(float(loss.detach()))
        if k == steps:
            break
        w.grad = None  # what opt.zero_grad() does for this one parameter, without its profiler bookkeeping
        loss.backward()
        if noise:
            w.grad.add_(xi[k], alpha=noise)
        if not bool(torch.isfinite(w.grad).all()):
            diverged_at = k + 1
            break
        opt.step()
        point = (float(w.detach()[0]), float(w.detach()[1]))
        if not all(math.isfinite(c) for c in point):
            diverged_at = k + 1
            break
        points.append(point)
    if not points:  # the start itself has a non-finite loss
        raise ValueError(f"start {start} has a non-finite loss on surface {surface.name!r}")
    points_array = np.asarray(points, dtype=np.float64)
    losses_array = np.asarray(losses[: len(points)], dtype=np.float64)
    result = Trajectory(optimizer, lr, hp, points_array, losses_array, DIVERGED if diverged_at is not None else "",
                        diverged_at)
    _score(result, surface, tol)
    return result


def _score(t: Trajectory, surface: Surface, tol: float) -> None:
    if surface.minima:
        minima = np.asarray(surface.minima, dtype=np.float64)
        distances = np.linalg.norm(t.points[:, None, :] - minima[None, :, :], axis=2).min(axis=1)
        reached = np.flatnonzero(distances <= tol)
        t.steps_to_tol = int(reached[0]) if reached.size else None
    t.nearest_minimum, t.distance = surface.nearest_minimum(t.final_point)
    if t.status != DIVERGED:
        t.status = CONVERGED if t.distance <= tol else NOT_CONVERGED


def check_start(surface: Surface, start: Sequence[float]) -> tuple[float, float]:
    try:
        x, y = (float(c) for c in start)
    except (TypeError, ValueError):
        raise ValueError(f"start must be two numbers X,Y, got {start!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"start must be finite, got ({x!r}, {y!r})")
    if not surface.contains((x, y)):
        x0, x1, y0, y1 = surface.window
        raise ValueError(f"start ({x:g}, {y:g}) is outside the {surface.name} window "
                         f"x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}]")
    return x, y


def run(surface: Surface | str, optimizers: Iterable[str] = DEFAULT_OPTIMIZERS, *, steps: int = DEFAULT_STEPS,
        start: Sequence[float] | None = None, lrs: Mapping[str, float] | None = None,
        hyperparams: Mapping[str, Mapping[str, Any]] | None = None, noise: float = 0.0, seed: int = 0,
        tol: float = DEFAULT_TOL, condition: float | None = None) -> LandscapeRun:
    """Run each optimizer from the same start; ``lrs`` and ``hyperparams`` are keyed by optimizer name.

    Learning rates default to the surface's row of :data:`descentlab.tasks.surfaces.DEFAULT_LRS`.
    """
    surface = as_surface(surface, condition)
    names = list(optimizers)
    if not names:
        raise ValueError("optimizers must name at least one optimizer, got none")
    if len(set(names)) != len(names):
        raise ValueError(f"optimizers must not repeat a name, got {','.join(names)}")
    for name in names:
        resolve(name)  # unknown names fail here, before any work
    lrs, hyperparams = dict(lrs or {}), dict(hyperparams or {})
    for what, table in (("lr", lrs), ("hyper-parameters", hyperparams)):
        unused = sorted(set(table) - set(names))
        if unused:
            raise ValueError(f"{what} given for {', '.join(unused)}, which is not among the optimizers "
                             f"{','.join(names)}")
    start = check_start(surface, surface.start if start is None else start)
    result = LandscapeRun(surface, start, _check_positive_int("steps", steps, MAX_STEPS),
                          _check_real("noise", noise), _check_seed(seed), _check_real("tol", tol, strict=True))
    for name in names:
        result.trajectories[name] = trajectory(surface, name, start=start, steps=steps, lr=lrs.get(name),
                                               hyperparams=hyperparams.get(name), noise=noise, seed=seed, tol=tol)
    return result


# -- summary -------------------------------------------------------------------------------------

def summary_rows(result: LandscapeRun) -> list[dict[str, str]]:
    rows = []
    for t in result.trajectories.values():
        x, y = t.final_point
        nearest = "-" if t.nearest_minimum is None else f"({t.nearest_minimum[0]:.3g}, {t.nearest_minimum[1]:.3g})"
        reached = "did not" if t.steps_to_tol is None else str(t.steps_to_tol)
        rows.append({"optimizer": t.optimizer, "lr": f"{t.lr:g}", "status": t.status_text,
                     "final point": f"({x:.4g}, {y:.4g})",
                     "final loss": f"{t.final_loss:.4g}", "nearest minimum": nearest,
                     "distance": f"{t.distance:.3g}", f"steps to {result.tol:g}": reached})
    return rows


def format_summary(result: LandscapeRun) -> str:
    """A plain-text table: one line per optimizer."""
    rows = summary_rows(result)
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(headers, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# -- pictures ------------------------------------------------------------------------------------

GRID = 240


def _contours(ax: Any, surface: Surface) -> None:
    """Filled contours, light at the bottom; log-spaced levels for surfaces with a huge range, else
    evenly spaced ones."""
    x0, x1, y0, y1 = surface.window
    xs, ys = np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID)
    gx, gy = np.meshgrid(xs, ys)
    with torch.no_grad():
        z = surface.fn(torch.from_numpy(gx), torch.from_numpy(gy)).numpy()
    norm = None
    if surface.log_levels:
        z = z - np.nanmin(z) + 1e-3 * max(float(np.ptp(z)), 1e-12)
        levels = np.geomspace(z.min(), z.max(), surface.levels)
        norm = LogNorm()
    else:
        levels = np.linspace(z.min(), z.max(), surface.levels)
    ax.contourf(gx, gy, z, levels=levels, norm=norm, cmap="Greys", alpha=0.45)
    ax.contour(gx, gy, z, levels=levels, norm=norm, colors="0.45", linewidths=0.4,
               negative_linestyles="solid")


def _axes(result: LandscapeRun, figsize: tuple[float, float], dpi: int) -> tuple[Figure, Any]:
    surface = result.surface
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)  # render with Agg, whatever pyplot's backend is: no display needed, none changed
    ax = fig.add_subplot()
    _contours(ax, surface)
    x0, x1, y0, y1 = surface.window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    title = f"{surface.name}: f = {surface.formula}\n{result.steps} steps"
    if result.noise:
        title += f", gradient noise σ={result.noise:g} (seed {result.seed})"
    ax.set_title(title, fontsize=9)
    if surface.minima:
        mx, my = np.asarray(surface.minima).T
        ax.plot(mx, my, linestyle="none", marker="*", markersize=13, color="gold", markeredgecolor="black",
                label="minima", zorder=5)
    if surface.saddles:
        sx, sy = np.asarray(surface.saddles).T
        ax.plot(sx, sy, linestyle="none", marker="X", markersize=8, color="white", markeredgecolor="black",
                label="saddle", zorder=5)
    ax.plot(*result.start, linestyle="none", marker="o", markersize=8, color="black", label="start", zorder=6)
    return fig, ax


def _styles(n: int) -> list[dict[str, Any]]:
    """Distinct colour and marker per trajectory; earlier ones drawn wider so overlapping paths stay visible."""
    cmap = matplotlib.colormaps["tab10"]
    markers = "osD^vP<>*h"
    return [{"color": cmap(i % 10), "marker": markers[i % len(markers)],
             "linewidth": 1.2 + 2.4 * (n - 1 - i) / max(n - 1, 1)} for i in range(n)]


def _legend(fig: Figure, ax: Any, fontsize: float) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=fontsize, framealpha=0.9, borderaxespad=0)


def plot(result: LandscapeRun, *, figsize: tuple[float, float] = (8.0, 5.0), dpi: int = 100) -> Figure:
    """A contour plot of the surface with every trajectory, start and minima marked."""
    fig, ax = _axes(result, figsize, dpi)
    n = len(result.trajectories)
    for i, (t, style) in enumerate(zip(result.trajectories.values(), _styles(n), strict=True)):
        every = max(1, (len(t.points) - 1) // 12)
        ax.plot(t.points[:, 0], t.points[:, 1], "-", color=style["color"], linewidth=style["linewidth"],
                marker=style["marker"], markersize=4, markevery=(i % every, every), alpha=0.9, label=t.label,
                zorder=4 + i / n)
        end_marker = "X" if t.status == DIVERGED else style["marker"]
        ax.plot(*t.points[-1], marker=end_marker, markersize=9, color=style["color"], markeredgecolor="black",
                linestyle="none", zorder=7)
    _legend(fig, ax, 8)
    fig.tight_layout()
    return fig


def animate(result: LandscapeRun, *, frames: int = 40, fps: int = 10, figsize: tuple[float, float] = (6.4, 4.0),
            dpi: int = 80) -> Any:
    """A matplotlib animation of all trajectories advancing together (``frames`` evenly spaced steps)."""
    from matplotlib.animation import FuncAnimation

    frames = check_frames(frames)
    fig, ax = _axes(result, figsize, dpi)
    lines, heads = [], []
    for style, t in zip(_styles(len(result.trajectories)), result.trajectories.values(), strict=True):
        (line,) = ax.plot([], [], "-", color=style["color"], linewidth=style["linewidth"], label=t.label, zorder=4)
        (head,) = ax.plot([], [], style["marker"], color=style["color"], markeredgecolor="black", markersize=6,
                          zorder=7)
        lines.append(line)
        heads.append(head)
    _legend(fig, ax, 6)
    counter = ax.text(0.02, 0.97, "", transform=ax.transAxes, va="top", fontsize=8,
                      bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"}, zorder=8)
    fig.tight_layout()
    # evenly spaced steps ending on the last one (a single frame shows the finished paths, not the start)
    step_at = np.unique(np.linspace(0, result.steps, min(frames, result.steps + 1)).round().astype(int)) \
        if frames > 1 else np.array([result.steps])

    def draw(i: int) -> list[Any]:
        k = step_at[i]
        for t, line, head in zip(result.trajectories.values(), lines, heads, strict=True):
            shown = t.points[: k + 1]
            line.set_data(shown[:, 0], shown[:, 1])
            head.set_data(shown[-1:, 0], shown[-1:, 1])
        counter.set_text(f"step {k}")
        return [*lines, *heads, counter]

    return FuncAnimation(fig, draw, frames=len(step_at), interval=1000 / fps, blit=False)


# -- files ---------------------------------------------------------------------------------------

def save_png(result: LandscapeRun, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    fig = plot(result, dpi=dpi)
    return atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def save_gif(result: LandscapeRun, path: str | os.PathLike[str], *, frames: int = 40, fps: int = 10,
             dpi: int = 80) -> Path:
    from matplotlib.animation import PillowWriter

    animation = animate(result, frames=frames, fps=fps, dpi=dpi)
    return atomic_write_with(Path(path), lambda tmp: animation.save(tmp, writer=PillowWriter(fps=fps), dpi=dpi))


def _html_table(result: LandscapeRun) -> str:
    rows = summary_rows(result)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_all(out_dir: str | os.PathLike[str], optimizers: Iterable[str] = DEFAULT_OPTIMIZERS, *,
              surfaces: Iterable[str] | None = None, gif: bool = False, dpi: int = 100, frames: int = 40,
              links: Mapping[str, str] | None = None, **run_options: Any) -> dict[str, LandscapeRun]:
    """One PNG (and GIF) per surface in ``out_dir`` and an ``index.html`` showing the pictures together.

    ``run_options`` go to :func:`run` (steps, lrs, noise, seed, tol, condition — condition is used
    for the bowl only). ``links`` (file name → text) are linked from the index's header: the CLI writes
    the interactive pages beside the pictures (this module draws; it does not import the page modules).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a directory for --all, got the file {str(out)!r}")
    names = list(surfaces) if surfaces is not None else surface_names()
    optimizers = list(optimizers)
    condition = run_options.pop("condition", None)
    if gif:
        check_frames(frames)
    # every surface built (a bad condition fails here) before the first picture is written
    built = {name: get_surface(name, condition=condition if name == "bowl" else None) for name in names}
    results: dict[str, LandscapeRun] = {}
    for name, surface in built.items():
        results[name] = result = run(surface, optimizers, **run_options)
        save_png(result, out / f"{name}.png", dpi=dpi)
        if gif:
            save_gif(result, out / f"{name}.gif", frames=frames)
    sections = []
    for name, result in results.items():
        s = result.surface
        link = f' · <a href="{html.escape(name)}.gif">animation</a>' if gif else ""
        sections.append(
            f'<section><h2>{html.escape(name)}</h2><p>f(x, y) = {html.escape(s.formula)} — {html.escape(s.doc)}'
            f"<br>start {result.start}, {result.steps} steps{link}</p>"
            f'<img src="{html.escape(name)}.png" alt="{html.escape(name)} trajectories">{_html_table(result)}</section>'
        )
    extra = "".join(f' · <a href="{html.escape(href)}">{html.escape(text)}</a>' for href, text in (links or {}).items())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>descentlab landscapes</title><style>"
        "body{font-family:sans-serif;margin:1em}main{display:flex;flex-wrap:wrap;gap:1.5em}"
        "section{flex:1 1 560px;max-width:700px}img{max-width:100%}table{border-collapse:collapse;font-size:80%}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<h1>descentlab landscapes</h1><p>optimizers: {html.escape(', '.join(optimizers))}{extra}</p>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )
    atomic_write_with(out / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return results
