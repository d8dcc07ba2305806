"""Every number the guide's page computes, computed by the library: the Python side of its conformance table.

``section_numbers(name, state)`` returns, for one section and one state of its controls, the same
structure ``descentlabGuide.compute(name, state)`` returns in the page. Trajectories come from
:func:`descentlab.landscape.trajectory` (the ``descentlab.optim`` torch classes on a float64 tensor); the
per-coordinate effective learning rates γ/(√sᵢ + ε) from the NumPy reference (:mod:`descentlab.reference`)
run along the same path; the (lr, ρ) map from the closed-form rate (:mod:`descentlab.guide.theory`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import reference
from ..landscape import trajectory
from ..tasks.surfaces import get_surface
from . import minibatch, theory
from .sections import SECTIONS, bowl_eigenvalues, map_axes


def _traj(surface: Any, name: str, state: Mapping[str, Any], steps: int, lr: float, **options: Any) -> dict[str, Any]:
    t = trajectory(surface, name, start=state["start"], steps=steps, lr=lr, **options)
    return {"points": t.points.tolist(), "losses": t.losses.tolist(), "divergedAt": t.diverged_at,
            "status": t.status, "stepsToTol": t.steps_to_tol}


def _reference_path(surface: Any, rule: Callable[..., Any], start: list[float], steps: int,
                    **hypers: Any) -> tuple[list[list[float]], list[dict[str, Any]]]:
    """The NumPy reference rule driven by the surface's gradient: points and the state after each step."""
    w = np.asarray(start, dtype=np.float64)
    state: dict[str, Any] = {}
    points, states = [w.tolist()], []
    for _ in range(steps):
        g = np.asarray(surface.grad(float(w[0]), float(w[1])), dtype=np.float64)
        w, state = rule(w, g, state, **hypers)
        points.append(w.tolist())
        states.append(state)
    return points, states


def _effective(states: list[dict[str, Any]], key: str, lr: float, eps: float) -> list[list[float]]:
    """γ/(√sᵢ + ε) per coordinate after each step: the step AdaGrad/RMSProp take per unit of gradient."""
    return [(lr / (np.sqrt(s[key]) + eps)).tolist() for s in states]


def _bowl(section: str) -> Any:
    return get_surface("bowl", condition=SECTIONS[section]["condition"])


def gd(state: Mapping[str, Any]) -> dict[str, Any]:
    spec = SECTIONS["gd"]
    eigs = bowl_eigenvalues(spec["condition"])
    return {"gd": _traj(_bowl("gd"), "gd", state, spec["steps"], state["lr"]),
            "factors": theory.gd_factors(state["lr"], eigs), "limit": theory.gd_limit(eigs)}


def sgd(state: Mapping[str, Any]) -> dict[str, Any]:
    x, y = minibatch.regression_data()
    sizes = [*minibatch.BATCHES, len(x)]
    runs = {str(b): minibatch.sgd_run(b, lr=state["lr"], epochs=state["epochs"], seed=state["seed"],
                                      start=state["start"]) for b in sizes}
    noise = {str(b): minibatch.gradient_noise(state["start"], b, x, y) for b in sizes}
    return {"runs": runs, "noise": noise}


def momentum(state: Mapping[str, Any]) -> dict[str, Any]:
    spec = SECTIONS["momentum"]
    eigs = bowl_eigenvalues(state["condition"])
    surface = get_surface("bowl", condition=state["condition"])
    lrs, rhos = map_axes()
    return {"momentum": _traj(surface, "momentum", state, spec["steps"], state["lr"],
                              hyperparams={"momentum": state["rho"]}),
            "rates": [theory.momentum_root_radius(state["lr"], state["rho"], lam) for lam in eigs],
            "rate": theory.momentum_rate(state["lr"], state["rho"], eigs),
            "map": theory.rate_map(lrs, rhos, eigs).tolist()}


def adagrad(state: Mapping[str, Any]) -> dict[str, Any]:
    spec, surface = SECTIONS["adagrad"], _bowl("adagrad")
    eps = spec["eps"]
    points, states = _reference_path(surface, reference.adagrad, state["start"], spec["steps"], lr=state["lr"], eps=eps)
    out = _traj(surface, "adagrad", state, spec["steps"], state["lr"], hyperparams={"eps": eps})
    return {"adagrad": out, "reference": points, "effective": _effective(states, "sum", state["lr"], eps)}


def rmsprop(state: Mapping[str, Any]) -> dict[str, Any]:
    spec, surface = SECTIONS["rmsprop"], _bowl("rmsprop")
    steps = spec["steps"]
    a_eps, r_eps = spec["adagrad_eps"], spec["rmsprop_eps"]
    a_lr, r_lr = state["adagrad_lr"], state["rmsprop_lr"]
    _, a_states = _reference_path(surface, reference.adagrad, state["start"], steps, lr=a_lr, eps=a_eps)
    _, r_states = _reference_path(surface, reference.rmsprop, state["start"], steps, lr=r_lr, alpha=state["alpha"],
                                  eps=r_eps)
    return {"adagrad": _traj(surface, "adagrad", state, steps, a_lr, hyperparams={"eps": a_eps}),
            "rmsprop": _traj(surface, "rmsprop", state, steps, r_lr, hyperparams={"alpha": state["alpha"],
                                                                                    "eps": r_eps}),
            "adagrad_effective": _effective(a_states, "sum", a_lr, a_eps),
            "rmsprop_effective": _effective(r_states, "square_avg", r_lr, r_eps)}


def _step_lengths(points: list[list[float]]) -> list[float]:
    return np.linalg.norm(np.diff(np.asarray(points, dtype=np.float64), axis=0), axis=1).tolist()


def adam(state: Mapping[str, Any]) -> dict[str, Any]:
    spec, surface = SECTIONS["adam"], _bowl("adam")
    hypers = {"betas": (state["beta1"], state["beta2"]), "eps": state["eps"]}
    right = _traj(surface, "adam", state, spec["steps"], state["lr"], hyperparams=hypers)
    wrong, _ = _reference_path(surface, theory.adam_without_bias_correction, state["start"], spec["steps"],
                               lr=state["lr"], beta1=state["beta1"], beta2=state["beta2"], eps=state["eps"])
    return {"adam": right, "adam_steps": _step_lengths(right["points"]),
            "plain": wrong, "plain_losses": [surface.value(*p) for p in wrong], "plain_steps": _step_lengths(wrong)}


def saddle(state: Mapping[str, Any]) -> dict[str, Any]:
    steps, surface = SECTIONS["saddle"]["steps"], get_surface(state["surface"])
    lr = state["lr"]
    return {"gd": _traj(surface, "gd", state, steps, lr),
            "sgd": _traj(surface, "sgd", state, steps, lr, noise=state["noise"], seed=state["seed"]),
            "momentum": _traj(surface, "momentum", state, steps, lr, hyperparams={"momentum": state["rho"]})}


SECTION_NUMBERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "gd": gd, "sgd": sgd, "momentum": momentum, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam,
    "saddle": saddle,
}


def section_numbers(name: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of section ``name`` at ``state`` (its controls' values, ``start`` a pair)."""
    return SECTION_NUMBERS[name](state)
