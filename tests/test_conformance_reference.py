"""descentlab.optim.X against the NumPy float64 reference (:mod:`descentlab.reference`).

Same table as the torch conformance (:data:`optim_cases.CASES`: every flag, two param groups, lr
halved by hand, tensor lr, add_param_group, missing and zero gradients) x 50 steps, float64 only,
final params within 1e-12 relative. The reference reads its hyper-parameters from the optimizer's
param groups through :func:`descentlab.reference.reference_hypers` at every step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descentlab import reference
from optim_cases import CASES, Case, run_reference

RTOL = 1e-12


def assert_close_to_reference(params: list[torch.Tensor], weights: list[np.ndarray]) -> None:
    assert len(params) == len(weights)
    for i, (p, w) in enumerate(zip(params, weights, strict=True)):
        got = p.detach().numpy()
        assert got.shape == w.shape, f"param {i}"
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(got, w, rtol=RTOL, atol=RTOL * scale, err_msg=f"param {i}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_reference(case: Case) -> None:
    params, weights = run_reference(case)
    assert_close_to_reference(params, weights)


def test_per_group_initial_accumulator_value() -> None:
    """descentlab fills each group's ``sum`` with that group's initial_accumulator_value (torch.optim
    2.13 uses the constructor's value for every group, so this case is not in the torch table)."""
    case = Case("Adagrad", "groups-initial-accumulator", {"lr": 0.1, "initial_accumulator_value": 0.1})
    params, weights = run_reference(case, group2={"initial_accumulator_value": 2.0, "lr": 0.05})
    assert_close_to_reference(params, weights)
    # and the per-group value really matters: with the constructor's value the result differs
    other_params, _ = run_reference(case, group2={"lr": 0.05})
    assert not torch.equal(params[-2], other_params[-2])


def test_reference_is_pure() -> None:
    """Every reference function leaves its inputs untouched and returns new arrays."""
    for name, fn in reference.RULES.items():
        w, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.5, -1.0])
        state: dict = {}
        w2, s2 = fn(w, g, state, lr=0.1)
        w3, _ = fn(w2, g, s2, lr=0.1)
        snapshot = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s2.items()}
        fn(w2, g, s2, lr=0.1)
        assert state == {}, name
        assert np.array_equal(w, [1.0, -2.0, 3.0]) and np.array_equal(g, [0.5, 0.5, -1.0]), name
        assert all(np.array_equal(snapshot[k], s2[k]) for k in s2), name
        assert not np.array_equal(w2, w) and not np.array_equal(w3, w2), name


def test_reference_hypers_translation() -> None:
    group = {"params": [], "lr": torch.tensor(0.5), "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1,
             "amsgrad": True, "maximize": False, "foreach": None, "fused": None, "capturable": False,
             "differentiable": False, "decoupled_weight_decay": True}
    hypers = reference.reference_hypers("Adam", group)
    assert hypers == {"lr": 0.5, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True,
                      "maximize": False, "decoupled": True}
    assert isinstance(hypers["lr"], float)
