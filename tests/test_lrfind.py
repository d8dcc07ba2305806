"""The lr range test: on least squares, whose stable range is known from the Hessian (GD and SGD on
½·mean((Xw − y)²) are stable for lr < 2/λ_max), the suggestion lands inside it; when the curvature is
made 10x larger the suggestion follows it down. Also the CLI (plot and numbers written, bad input refused)
and ``race --lrs auto`` (grids centred on the suggestions, saved and read back on resume)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from descentlab import race
from descentlab.cli import main
from descentlab.lrfind import auto as auto_module
from descentlab.lrfind import centred_grid, lr_find
from descentlab.tasks import from_tensors, get_task, half_mse


@pytest.mark.parametrize("optimizer,batch_size", [("gd", None), ("sgd", 64), ("momentum", 64)])
def test_on_least_squares_the_suggestion_is_inside_the_stable_range_of_the_hessian(optimizer, batch_size):
    task = get_task("lstsq")
    lam_max = float(task.info["hessian_eigenvalues"][0])
    limit = 2 / lam_max if optimizer != "momentum" else 2 * (1 + 0.9) / lam_max  # heavy ball: 2(1+ρ)/λ
    test = lr_find(task, optimizer=optimizer, batch_size=batch_size)
    assert test.suggestion is not None
    assert limit / 100 < test.suggestion < limit, (test.suggestion, limit, test.stop_reason)
    if test.stop_reason.startswith("smoothed loss above"):  # it stopped: the loss rose, only past stability
        assert test.lrs[-1] > limit


def _scaled_lstsq(scale: float):
    """lstsq with X multiplied by √scale: Hessian XᵀX/n has λ_max = scale (the built-in has 1)."""
    base = get_task("lstsq")
    root = math.sqrt(scale)
    task = from_tensors(base.x_train * root, base.y_train, base.x_val * root, base.y_val,
                        model=lambda: torch.nn.Linear(base.x_train.shape[1], 1, bias=False), loss=half_mse,
                        kind="regression", name="lstsq-scaled")
    hessian = (task.x_train.T @ task.x_train / len(task.x_train)).numpy()
    return task, float(np.linalg.eigvalsh(hessian)[-1])


def test_the_suggestion_follows_the_curvature():
    task, lam_max = _scaled_lstsq(10.0)
    assert lam_max == pytest.approx(10.0, rel=1e-6)
    base = lr_find(get_task("lstsq"), optimizer="sgd", batch_size=64)
    steep = lr_find(task, optimizer="sgd", batch_size=64)
    assert steep.suggestion < 2 / lam_max < base.suggestion


def test_the_ramp_never_costs_more_than_the_cap_and_rises_exponentially():
    test = lr_find(get_task("lstsq"), optimizer="adam", batch_size=64, max_steps=30)
    assert len(test.lrs) <= 30
    ratios = np.diff(np.log(test.lrs))
    assert np.allclose(ratios, ratios[0])
    assert test.settings["steps"] == 30 and test.settings["beta"] == pytest.approx(1 - 2 / 30)


def test_centred_grid_is_five_half_decade_points_around_the_suggestion():
    assert centred_grid(0.0123) == (0.001, 0.00316, 0.01, 0.0316, 0.1)
    assert centred_grid(0.0005) == (3.16e-05, 0.0001, 0.000316, 0.001, 0.00316)  # 10^-3.3 snaps to 10^-3.5


def test_lrfind_cli_writes_the_plot_and_the_numbers(tmp_path, capsys):
    out = tmp_path / "find.png"
    assert main(["lrfind", "--task", "lstsq", "--optimizer", "sgd", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.with_suffix(".json").read_text())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"suggested lr {saved['suggestion']:.3g}" in printed
    assert 0 < saved["suggestion"] < 2


@pytest.mark.parametrize("argv,needle", [
    (["--start-lr", "0"], "--start-lr must be a positive finite number"),
    (["--start-lr", "1", "--end-lr", "0.1"], "--end-lr must be larger than --start-lr"),
    (["--steps", "1"], "--steps must be an integer in [2, 1000000]"),
    (["--out", "x.jpg"], "--out must end in .png"),
    (["--optimizer", "nope"], "nope"),
])
def test_lrfind_cli_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("descentlab.lrfind.lr_find", lambda *a, **k: pytest.fail("the range test started"))
    assert main(["lrfind", "--task", "lstsq", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("descentlab lrfind: error: ") and needle in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_race_lrs_auto_centres_each_grid_and_resumes_without_a_new_range_test(tmp_path, monkeypatch):
    out = tmp_path / "race"
    options = dict(optimizers=["sgd", "adam"], lrs="auto", seeds=1, epochs=30, jobs=1, out=out, progress=False)
    result = race("lstsq", **options)
    saved = json.loads((out / "lrfind.json").read_text())
    for name in ("sgd", "adam"):
        suggestion = saved["suggestions"][name]
        grid = result.config.grid(name)
        assert grid == centred_grid(suggestion) and len(grid) == 5
        assert min(grid) <= suggestion <= max(grid)
        assert (out / f"lrfind-{name}.png").exists()
    assert result.config.lrs == () and result.ran == 2 * 5 + 2
    assert "--lrs auto" in (out / "report.html").read_text()
    monkeypatch.setattr(auto_module, "lr_find", lambda *a, **k: pytest.fail("the range test ran again"))
    again = race("lstsq", **options)
    assert again.ran == 0 and again.config == result.config
