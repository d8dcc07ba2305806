"""The range test's picture: batch loss and smoothed loss against the lr (log scale), the lowest
smoothed loss and the suggestion marked. matplotlib's object API, no pyplot state."""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from ..atomic import atomic_write_with
from .ramp import RangeTest


def figure(test: RangeTest) -> Figure:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    if test.lrs:
        ax.plot(test.lrs, test.losses, color="#bbbbbb", lw=1, label="batch loss")
        ax.plot(test.lrs, test.smoothed, color="#1f77b4", lw=2, label="smoothed loss")
        finite = [v for v in test.smoothed if v == v]
        low, high = min(finite), max([*finite[: max(1, len(finite) // 10)], min(finite)])
        ax.set_ylim(low - 0.1 * (high - low + 1e-12), high + 0.5 * (high - low + 1e-12))
    if test.min_loss_lr is not None:
        ax.axvline(test.min_loss_lr, color="#7f7f7f", ls=":", label=f"lowest smoothed loss, lr {test.min_loss_lr:.3g}")
    if test.suggestion is not None:
        ax.axvline(test.suggestion, color="#d62728", ls="--", label=f"suggestion, lr {test.suggestion:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"lr range test: {test.optimizer} on {test.task} / {test.model} ({test.stop_reason})", fontsize=9)
    return fig


def save(test: RangeTest, path: str | os.PathLike[str]) -> None:
    """Write the picture to ``path`` (PNG) atomically."""
    fig = figure(test)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
