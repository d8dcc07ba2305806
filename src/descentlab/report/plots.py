"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed) and
returned as ``data:image/png;base64`` URIs so the HTML needs no other file and no network."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
METRIC_LABELS = {"val_loss": "validation loss", "val_acc": "validation accuracy",
                 "best_val_loss": "best validation loss", "best_val_acc": "best validation accuracy"}


def color_map(names: Sequence[str]) -> dict[str, str]:
    return {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}


def to_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def seed_band(histories: Sequence[Sequence[Mapping[str, Any]]], x_key: str, y_key: str,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x (mean over seeds), y mean, y min, y max at each evaluation index the seeds share.

    Runs of one optimizer at one lr evaluate at the same epochs, so evaluation ``i`` lines up
    across seeds; a run that stopped early (diverged) only counts where it has values.
    """
    length = max((len(h) for h in histories), default=0)
    xs, mean, low, high = [], [], [], []
    for i in range(length):
        points = [(h[i].get(x_key), h[i].get(y_key)) for h in histories if i < len(h)]
        points = [(float(x), float(y)) for x, y in points
                  if x is not None and y is not None and math.isfinite(float(y))]
        if not points:
            continue
        values = np.array([p[1] for p in points])
        xs.append(np.mean([p[0] for p in points]))
        mean.append(values.mean())
        low.append(values.min())
        high.append(values.max())
    if not xs:
        return None
    return np.array(xs), np.array(mean), np.array(low), np.array(high)


def _loss_scale(ax, values: Sequence[float]) -> None:
    """Log scale only when the losses span more than a factor 20 (else the ticks are unreadable)."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")


def curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], colors: Mapping[str, str],
           x_key: str, metrics: Sequence[str], x_label: str, title: str, log_x: bool = False) -> str:
    """One panel per metric: mean over seeds as a line, the seeds' min-max as a band."""
    figure = Figure(figsize=(5.2 * len(metrics), 3.6))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        drawn: list[float] = []
        for name, runs in histories.items():
            band = seed_band(runs, x_key, metric)
            if band is None:
                continue
            x, mean, low, high = band
            ax.plot(x, mean, color=colors[name], label=f"{name} ({len(runs)} seeds)", lw=1.8)
            ax.fill_between(x, low, high, color=colors[name], alpha=0.2, lw=0)
            drawn.extend([*low.tolist(), *high.tolist()])
        ax.set_xlabel(x_label)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if metric == "val_loss":
            _loss_scale(ax, drawn)
        if log_x:
            ax.set_xscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    return to_data_uri(figure)


def sensitivity(points: Mapping[str, Sequence[Mapping[str, Any]]], selected: Mapping[str, float | None],
                colors: Mapping[str, str], metrics: Sequence[str]) -> str:
    """Best-point validation metric at every lr of the grid (seed 0); diverged runs as crosses on the
    panel's edge, the selected lr circled."""
    figure = Figure(figsize=(5.2 * len(metrics), 3.6))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        finite = [p[metric] for runs in points.values() for p in runs
                  if p.get("status") == "ok" and p.get(metric) is not None]
        is_loss = metric.endswith("val_loss")
        if is_loss:
            _loss_scale(ax, finite)
        # diverged runs are not selectable: marked on the "bad" edge of the panel
        edge = (max(finite) * 1.05 if is_loss else min(finite) * 0.95) if finite else 1.0
        for name, runs in points.items():
            ok = [(p["lr"], p[metric]) for p in runs if p.get("status") == "ok" and p.get(metric) is not None]
            bad = [p["lr"] for p in runs if p.get("status") != "ok" or p.get(metric) is None]
            if ok:
                ax.plot(*zip(*ok, strict=True), marker="o", ms=4, color=colors[name], label=name, lw=1.5)
            if bad:
                ax.scatter(bad, [edge] * len(bad), marker="x", s=40, color=colors[name], zorder=3)
            lr = selected.get(name)
            chosen = [value for x, value in ok if x == lr]
            if chosen:
                ax.scatter([lr], chosen, s=140, facecolors="none", edgecolors=colors[name], lw=2, zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # every run diverged: nothing to label
        axes[0].legend(fontsize=8)
    figure.suptitle("lr sensitivity (seed 0; circle = selected lr, × = diverged or failed)", fontsize=11)
    return to_data_uri(figure)
