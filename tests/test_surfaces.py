"""The 2-D surfaces: their documented minima, saddles, curvatures and default tables are right."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.optim import resolve
from descentlab.tasks.surfaces import DEFAULT_LRS, bowl, get_surface, surface_names

ARTICLE_OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


def hessian(surface, point):
    xy = torch.tensor(point, dtype=torch.float64)
    return torch.autograd.functional.hessian(lambda w: surface(w), xy)


def test_the_five_surfaces_are_listed():
    assert surface_names() == ["saddle", "local-minima", "rosenbrock", "bowl", "rastrigin"]


@pytest.mark.parametrize("name", surface_names())
def test_listed_minima_are_strict_local_minima_inside_the_window(name):
    surface = get_surface(name)
    assert surface.minima and set(surface.global_minima) <= set(surface.minima)
    for point in surface.minima:
        assert surface.contains(point)
        gx, gy = surface.grad(*point)
        assert math.hypot(gx, gy) < 1e-9, (name, point, gx, gy)
        eigenvalues = torch.linalg.eigvalsh(hessian(surface, point))
        assert bool((eigenvalues > 0).all()), (name, point, eigenvalues)


@pytest.mark.parametrize("name", surface_names())
def test_global_minima_are_the_lowest_known_and_below_the_start(name):
    surface = get_surface(name)
    lowest = surface.min_value()
    for point in surface.global_minima:
        assert surface.value(*point) == pytest.approx(lowest, abs=1e-12)
    assert surface.value(*surface.start) > lowest + 0.1
    assert surface.contains(surface.start)


@pytest.mark.parametrize("name", surface_names())
def test_saddles_have_zero_gradient_and_curvature_of_both_signs(name):
    surface = get_surface(name)
    for point in surface.saddles:
        assert math.hypot(*surface.grad(*point)) < 1e-9
        eigenvalues = torch.linalg.eigvalsh(hessian(surface, point))
        assert eigenvalues.min() < 0 < eigenvalues.max()


def test_saddle_is_x2_minus_y2_at_the_origin():
    eigenvalues = torch.linalg.eigvalsh(hessian(get_surface("saddle"), (0.0, 0.0)))
    assert eigenvalues.tolist() == pytest.approx([-1.0, 2.0])


def test_local_minima_has_a_shallow_local_and_a_deeper_global_minimum():
    surface = get_surface("local-minima")
    (glob,), local = surface.global_minima, [m for m in surface.minima if m not in surface.global_minima]
    assert len(local) == 1
    assert glob[0] < surface.saddles[0][0] < local[0][0]
    assert surface.value(*glob) < surface.value(*local[0]) - 0.5
    barrier = surface.value(*surface.saddles[0])
    assert barrier > surface.value(*local[0]) + 0.5


def test_known_values_of_the_classics():
    assert get_surface("rosenbrock").value(-1.2, 1.0) == pytest.approx(24.2)
    assert get_surface("rastrigin").value(0.0, 0.0) == pytest.approx(0.0)
    assert get_surface("rastrigin").value(0.5, 0.5) == pytest.approx(40.5)


@pytest.mark.parametrize("condition", [1.0, 100.0, 1e4])
def test_bowl_condition_number_is_the_hessian_eigenvalue_ratio(condition):
    surface = bowl(condition)
    eigenvalues = torch.linalg.eigvalsh(hessian(surface, (0.3, -0.2)))
    assert float(eigenvalues.max()) == pytest.approx(1.0)
    assert float(eigenvalues.max() / eigenvalues.min()) == pytest.approx(condition)
    assert get_surface("bowl", condition=condition).value(2.0, 1.0) == pytest.approx(0.5 * (4 / condition + 1))


@pytest.mark.parametrize("bad", [0.5, 0, -3, math.inf, math.nan, "10", True])
def test_bowl_rejects_bad_condition(bad):
    with pytest.raises(ValueError, match="condition"):
        bowl(bad)


def test_unknown_surface_and_misplaced_condition_are_named():
    with pytest.raises(ValueError, match="unknown surface 'volcano'; known: saddle"):
        get_surface("volcano")
    with pytest.raises(ValueError, match=r"bowl surface only.*'saddle'"):
        get_surface("saddle", condition=10.0)


def test_default_lr_table_covers_every_surface_and_the_article_optimizers():
    assert set(DEFAULT_LRS) == set(surface_names())
    for name, row in DEFAULT_LRS.items():
        assert "*" in row
        for optimizer in ARTICLE_OPTIMIZERS:
            resolve(optimizer)  # the table's keys are registry names
            assert row[optimizer] > 0, (name, optimizer)
        surface = get_surface(name)
        assert surface.lr_for("adam") == row["adam"]
        assert surface.lr_for("mypkg.rules:lion") == row["*"]


def test_nearest_minimum_picks_the_closest():
    surface = get_surface("saddle")
    assert surface.nearest_minimum((0.1, -0.7)) == ((0.0, -1.0), pytest.approx(math.hypot(0.1, 0.3)))


def test_a_surface_without_a_default_lr_asks_for_one_by_name():
    from descentlab.landscape import trajectory
    from descentlab.tasks.surfaces import Surface

    plane = Surface(name="plane", formula="x + y", fn=lambda x, y: x + y, minima=(), window=(-9.0, 9.0, -9.0, 9.0),
                    start=(0.0, 0.0))
    with pytest.raises(ValueError, match="surface 'plane' has no default lr for 'gd'"):
        trajectory(plane, "gd", steps=2)
    assert trajectory(plane, "gd", steps=2, lr=0.5).points[-1] == pytest.approx((-1.0, -1.0))
