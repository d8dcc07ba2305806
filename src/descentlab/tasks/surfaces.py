"""2-D loss surfaces written as torch code: gradients come from autograd.

Each :class:`Surface` carries its formula, its known minima, a plot window, a default start point
and whether its contours read better on a log scale. Default learning rates per optimizer live in
one table, :data:`DEFAULT_LRS` (surface → registry name → lr); names not in a surface's row (an
import path, say) use that row's ``"*"`` entry.

============  ===========================================  ===============================  ==============
name          f(x, y)                                      minima                           default start
============  ===========================================  ===============================  ==============
saddle        x² + y⁴/4 − y²/2                             (0, ±1), f = −1/4; saddle (0,0)  (1, 1e-3)
local-minima  (x² − 1)² + 0.3·x + y²/2                     x ≈ −1.04 (global), x ≈ 0.96     (2.2, 1)
rosenbrock    (1 − x)² + 100·(y − x²)²                     (1, 1), f = 0                    (−1.2, 1)
bowl          ½·(x²/κ + y²)   (κ = condition number)       (0, 0), f = 0                    (−8, 1)
rastrigin     20 + Σ (u² − 10·cos 2πu),  u ∈ {x, y}        (0, 0), f = 0 (many local ones)  (3.2, 2.1)
============  ===========================================  ===============================  ==============

The saddle is ``x² − y²`` near the origin (curvature +2 along x, −1 along y), with the quartic term
only there to give it two minima to fall into; started almost on the stable x axis, plain GD
needs ~ln(1/|y₀|)/lr steps to notice the unstable direction.

The bowl's largest curvature is 1 whatever κ is, so the same learning rates stay stable for every
κ: GD's largest stable lr is 2 and the flat direction x shrinks by (1 − lr/κ) per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

Point = tuple[float, float]
Window = tuple[float, float, float, float]
"""(x_min, x_max, y_min, y_max)"""


@dataclass(frozen=True)
class Surface:
    """A 2-D function f(x, y), elementwise over torch tensors, and what is known about it."""

    name: str
    formula: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    minima: tuple[Point, ...]
    window: Window
    start: Point
    global_minima: tuple[Point, ...] = ()
    saddles: tuple[Point, ...] = ()
    log_levels: bool = True
    levels: int = 20
    """How many contour levels the pictures draw."""
    lrs: Mapping[str, float] = field(default_factory=dict)
    doc: str = ""

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        """f at ``xy[..., 0], xy[..., 1]``."""
        return self.fn(xy[..., 0], xy[..., 1])

    def value(self, x: float, y: float) -> float:
        return float(self.fn(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))

    def grad(self, x: float, y: float) -> tuple[float, float]:
        """∇f at (x, y), by autograd."""
        xy = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(self(xy), xy)
        return float(g[0]), float(g[1])

    def min_value(self) -> float:
        """The lowest known value (the global minimum), or nan when no minimum is known."""
        values = [self.value(*m) for m in self.minima]
        return min(values) if values else math.nan

    def contains(self, point: Point) -> bool:
        x0, x1, y0, y1 = self.window
        return x0 <= point[0] <= x1 and y0 <= point[1] <= y1

    def nearest_minimum(self, point: Point) -> tuple[Point | None, float]:
        """The known minimum closest to ``point`` and the Euclidean distance to it (inf if none)."""
        if not self.minima:
            return None, math.inf
        distances = [math.hypot(point[0] - m[0], point[1] - m[1]) for m in self.minima]
        i = int(np.argmin(distances))
        return self.minima[i], distances[i]

    def lr_for(self, optimizer: str) -> float:
        """This surface's default lr for a registry name (``"*"`` row entry for any other name)."""
        lr = self.lrs.get(optimizer, self.lrs.get("*"))
        if lr is None:
            raise ValueError(f"surface {self.name!r} has no default lr for {optimizer!r}; pass lr= (or give the "
                             "surface lrs={name: lr, '*': lr})")
        return float(lr)


# -- the functions -----------------------------------------------------------------------------

def _saddle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x**2 + y**4 / 4 - y**2 / 2


TILT = 0.3
"""Tilt of the local-minima double well: makes x ≈ −1 the global minimum and x ≈ +1 a local one."""


def _local_minima(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x**2 - 1) ** 2 + TILT * x + y**2 / 2


def _double_well_critical_points() -> list[float]:
    """Real roots of d/dx[(x² − 1)² + t·x] = 4x³ − 4x + t, sorted: minimum, barrier, minimum."""
    roots = np.roots([4.0, 0.0, -4.0, TILT])
    return sorted(float(r.real) for r in roots if abs(r.imag) < 1e-12)


def _rosenbrock(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rastrigin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    two_pi = 2 * math.pi
    return 20 + x**2 - 10 * torch.cos(two_pi * x) + y**2 - 10 * torch.cos(two_pi * y)


def _bowl_fn(condition: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def bowl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x**2 / condition + y**2)

    return bowl


DEFAULT_CONDITION = 100.0
"""The bowl's default condition number κ (ratio of its largest to smallest curvature)."""

DEFAULT_LRS: dict[str, dict[str, float]] = {
    # Chosen so the default pictures show each optimizer's character, not tuned to win.
    "saddle": {"gd": 0.01, "sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.1,
               "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05, "*": 0.01},
    "local-minima": {"gd": 0.01, "sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.3,
                     "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05, "*": 0.01},
    # GD/momentum at 1e-3: the valley floor near (1, 1) has curvature ~1000, so 2e-3 is their limit.
    "rosenbrock": {"gd": 1e-3, "sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 1.0,
                   "rmsprop": 0.02, "adam": 0.2, "adamw": 0.2, "*": 1e-3},
    # GD at 1.8: close to its stability limit 2 (the steep direction has curvature 1).
    "bowl": {"gd": 1.8, "sgd": 1.8, "momentum": 0.5, "nesterov": 0.5, "adagrad": 1.0,
             "rmsprop": 0.1, "adam": 0.3, "adamw": 0.3, "*": 0.1},
    "rastrigin": {"gd": 0.004, "sgd": 0.004, "momentum": 0.004, "nesterov": 0.004, "adagrad": 1.0,
                  "rmsprop": 0.1, "adam": 0.3, "adamw": 0.3, "*": 0.004},
}
"""Default lr per surface and optimizer name; ``"*"`` is used for names without their own entry."""


def saddle() -> Surface:
    return Surface(
        name="saddle", formula="x² + y⁴/4 − y²/2", fn=_saddle,
        minima=((0.0, -1.0), (0.0, 1.0)), global_minima=((0.0, -1.0), (0.0, 1.0)), saddles=((0.0, 0.0),),
        window=(-1.5, 1.5, -1.5, 1.5), start=(1.0, 1e-3), log_levels=False, lrs=DEFAULT_LRS["saddle"],
        doc="x² − y² near the origin: a saddle at (0, 0) between minima (0, ±1).",
    )


def local_minima() -> Surface:
    left, barrier, right = _double_well_critical_points()
    return Surface(
        name="local-minima", formula=f"(x² − 1)² + {TILT}·x + y²/2", fn=_local_minima,
        minima=((left, 0.0), (right, 0.0)), global_minima=((left, 0.0),), saddles=((barrier, 0.0),),
        window=(-2.0, 2.5, -1.5, 1.5), start=(2.2, 1.0), log_levels=False, lrs=DEFAULT_LRS["local-minima"],
        doc=f"A tilted double well: global minimum at x = {left:.4f}, local one at x = {right:.4f}.",
    )


def rosenbrock() -> Surface:
    return Surface(
        name="rosenbrock", formula="(1 − x)² + 100·(y − x²)²", fn=_rosenbrock,
        minima=((1.0, 1.0),), global_minima=((1.0, 1.0),),
        window=(-2.0, 2.0, -1.0, 3.0), start=(-1.2, 1.0), lrs=DEFAULT_LRS["rosenbrock"],
        doc="A curved, narrow valley: easy to reach, slow to follow.",
    )


def bowl(condition: float = DEFAULT_CONDITION) -> Surface:
    if not isinstance(condition, (int, float)) or isinstance(condition, bool) or not math.isfinite(condition) \
            or condition < 1:
        raise ValueError(f"bowl: condition must be a finite number >= 1, got {condition!r}")
    condition = float(condition)
    return Surface(
        name="bowl", formula=f"½·(x²/{condition:g} + y²)", fn=_bowl_fn(condition),
        minima=((0.0, 0.0),), global_minima=((0.0, 0.0),),
        window=(-10.0, 10.0, -2.0, 2.0), start=(-8.0, 1.0), lrs=DEFAULT_LRS["bowl"],
        doc=f"An ill-conditioned quadratic, condition number κ = {condition:g}.",
    )


def rastrigin() -> Surface:
    return Surface(
        name="rastrigin", formula="20 + x² − 10·cos 2πx + y² − 10·cos 2πy", fn=_rastrigin,
        minima=((0.0, 0.0),), global_minima=((0.0, 0.0),),
        window=(-4.5, 4.5, -4.5, 4.5), start=(3.2, 2.1), log_levels=False, levels=8,
        lrs=DEFAULT_LRS["rastrigin"],
        doc="A parabola covered in ripples: local minima near every integer point.",
    )


SURFACES: dict[str, Callable[..., Surface]] = {
    "saddle": saddle,
    "local-minima": local_minima,
    "rosenbrock": rosenbrock,
    "bowl": bowl,
    "rastrigin": rastrigin,
}
"""Surface factories by name; only ``bowl`` takes an argument (``condition``)."""


def surface_names() -> list[str]:
    return list(SURFACES)


def get_surface(name: str, *, condition: float | None = None) -> Surface:
    """The surface called ``name``; ``condition`` sets the bowl's condition number."""
    if not isinstance(name, str) or name not in SURFACES:
        raise ValueError(f"unknown surface {name!r}; known: {', '.join(SURFACES)}")
    if condition is not None:
        if name != "bowl":
            raise ValueError(f"condition applies to the bowl surface only, got condition={condition!r} "
                             f"for surface {name!r}")
        return bowl(condition)
    return SURFACES[name]()
