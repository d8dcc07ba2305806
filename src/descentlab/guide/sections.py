"""The guide's sections as data: controls (sliders with ranges and scales), defaults, constants.

Both sides read this: the page (through the JSON spec) builds its controls and its URL state from it;
:mod:`descentlab.guide.numbers` computes the same numbers from the same values. A section's state is
its controls' values plus ``start`` (the draggable start point) and, in the saddle section, ``surface``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from ..landscape_page import Slider

MAP_LRS, MAP_RHOS = 64, 50
"""The (lr, ρ) convergence map's grid: lr log-spaced over the momentum section's lr range, ρ in [0, 0.99]."""


def _lr(low: float, high: float, label: str = "γ (lr)", key: str = "lr") -> Slider:
    return Slider(key, label, low, high, "log")


SECTIONS: dict[str, dict[str, Any]] = {
    "gd": {"title": "Gradient descent", "surface": "bowl", "condition": 10.0, "steps": 60,
           "controls": [_lr(0.05, 3.0)], "defaults": {"lr": 1.5, "start": [-8.0, 1.0]}},
    "sgd": {"title": "Minibatch SGD", "surface": "regression", "steps": None,
            "controls": [_lr(0.003, 1.0), Slider("epochs", "epochs", 1, 30), Slider("seed", "shuffle seed", 0, 99)],
            "defaults": {"lr": 0.1, "epochs": 5, "seed": 0, "start": [-1.0, 1.5]}},
    "momentum": {"title": "Momentum", "surface": "bowl", "steps": 150,
                 "controls": [_lr(0.01, 4.0), Slider("rho", "ρ (momentum)", 0.0, 0.99),
                              Slider("condition", "κ (condition number)", 1.0, 1000.0, "log")],
                 "defaults": {"lr": 0.5, "rho": 0.9, "condition": 100.0, "start": [-8.0, 1.0]}},
    "adagrad": {"title": "AdaGrad", "surface": "bowl", "condition": 10.0, "steps": 100, "eps": 1e-10,
                "controls": [_lr(0.01, 5.0)], "defaults": {"lr": 1.0, "start": [-8.0, 1.0]}},
    "rmsprop": {"title": "RMSProp", "surface": "bowl", "condition": 10.0, "steps": 100, "adagrad_eps": 1e-10,
                "rmsprop_eps": 1e-8,
                "controls": [_lr(0.01, 5.0, "AdaGrad γ", "adagrad_lr"), _lr(0.001, 1.0, "RMSProp γ", "rmsprop_lr"),
                             Slider("alpha", "RMSProp decay α", 0.5, 0.9999, "one-minus-log")],
                "defaults": {"adagrad_lr": 1.0, "rmsprop_lr": 0.1, "alpha": 0.99, "start": [-8.0, 1.0]}},
    "adam": {"title": "Adam", "surface": "bowl", "condition": 10.0, "steps": 100,
             "controls": [_lr(0.001, 3.0), Slider("beta1", "β1", 0.0, 0.999), Slider("beta2", "β2", 0.5, 0.9999,
                                                                                   "one-minus-log"),
                          Slider("eps", "ε", 1e-12, 1.0, "log")],
             "defaults": {"lr": 0.3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "start": [-8.0, 1.0]}},
    "saddle": {"title": "Saddle points and local minima", "surfaces": ["saddle", "local-minima"], "steps": 500,
               "controls": [_lr(0.001, 0.1), Slider("rho", "ρ (momentum)", 0.0, 0.99),
                            Slider("noise", "noise σ (SGD)", 0.0, 2.0), Slider("seed", "noise seed", 0, 99)],
               "defaults": {"surface": "saddle", "lr": 0.01, "rho": 0.9, "noise": 0.5, "seed": 1,
                            "start": [1.0, 0.001]}},
}
"""Section name → its title, surface, constants (condition, steps, eps), controls and default state."""

INTEGER_CONTROLS = {"epochs", "seed"}


def bowl_eigenvalues(condition: float) -> list[float]:
    """The bowl ½·(x²/κ + y²): Hessian diag(1/κ, 1), eigen-directions the axes."""
    return [1.0 / condition, 1.0]


def map_axes() -> tuple[list[float], list[float]]:
    """The convergence map's lr values (log-spaced over the momentum lr slider) and ρ values."""
    lr = next(c for c in SECTIONS["momentum"]["controls"] if c.key == "lr")
    lrs = np.logspace(np.log10(lr.low), np.log10(lr.high), MAP_LRS).tolist()
    rhos = np.linspace(0.0, 0.99, MAP_RHOS).tolist()
    return lrs, rhos


def default_state(name: str) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in SECTIONS[name]["defaults"].items()}


def sections_spec() -> dict[str, dict[str, Any]]:
    """SECTIONS as JSON: sliders as dicts."""
    return {name: {**s, "controls": [asdict(c) for c in s["controls"]]} for name, s in SECTIONS.items()}
