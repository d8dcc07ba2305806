"""The study report's figures (performance profiles, lr sensitivity across workloads), drawn like the
race report's (:mod:`.plots`: matplotlib's object API, embedded PNG data URIs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plots import color_map, to_data_uri


def profiles(curves: Mapping[str, Sequence[float]], taus: Sequence[float], scores: Mapping[str, float],
             title: str) -> str:
    """ρ(τ) per entry as a step line; untuned entries dashed; the score in the legend."""
    figure = Figure(figsize=(7.2, 4.2))
    ax = figure.subplots()
    colors = color_map(list(curves))
    for name, rho in curves.items():
        ax.step(taus, rho, where="post", color=colors[name], lw=1.8, ls="--" if "untuned" in name else "-",
                label=f"{name} (score {scores[name]:.2f})")
    ax.set_xlim(1, max(taus))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (time to target within τ × the fastest)")
    ax.set_ylabel("share of workloads ρ(τ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=11)
    return to_data_uri(figure)


def sensitivity(panels: Mapping[str, Mapping[str, Sequence[tuple[float, float | None]]]],
                selected: Mapping[str, Mapping[str, float | None]]) -> str:
    """One panel per optimizer: for every workload, the best validation metric of each grid lr relative to
    the workload's best run (1 = the best any optimizer did there; diverged lrs missing), the selected lr
    circled."""
    names = list(panels)
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    figure = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    workloads = sorted({w for per in panels.values() for w in per})
    colors = color_map(workloads)
    for ax, name in zip(axes, names, strict=False):
        for workload, points in panels[name].items():
            ok = [(lr, v) for lr, v in points if v is not None]
            if ok:
                ax.plot(*zip(*ok, strict=True), marker="o", ms=3, lw=1.3, color=colors[workload], label=workload)
            lr = selected.get(name, {}).get(workload)
            chosen = [v for x, v in ok if x == lr]
            if chosen:
                ax.scatter([lr], chosen, s=90, facecolors="none", edgecolors=colors[workload], lw=1.6, zorder=4)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("relative best validation metric")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if names and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    figure.suptitle("lr sensitivity across workloads (1 = the workload's best run; circle = selected lr)",
                    fontsize=11)
    figure.tight_layout()
    return to_data_uri(figure)


def relative(value: float | None, best: float | None, classification: bool) -> float | None:
    """``value`` relative to the workload's best: accuracy / best accuracy, or best loss / loss."""
    if value is None or best is None or not math.isfinite(value) or not math.isfinite(best):
        return None
    if classification:
        return value / best if best > 0 else None
    return best / value if value > 0 else (1.0 if best <= 0 else None)


def sensitivity_points(sens: Sequence[Mapping[str, Any]], best: float | None, classification: bool,
                       ) -> list[tuple[float, float | None]]:
    key = "best_val_acc" if classification else "best_val_loss"
    return [(float(p["lr"]), relative(p.get(key), best, classification) if p.get("status") == "ok" else None)
            for p in sens]
