"""descentlab.landscape and ``descentlab landscape``: the article's geometric claims, checked on the
trajectories; then pictures, animations, the --all index and bad input."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest
import torch
from PIL import Image

from descentlab.cli import main
from descentlab.landscape import (
    CONVERGED,
    DIVERGED,
    format_summary,
    plot,
    run,
    save_gif,
    save_png,
    trajectory,
    write_all,
)
from descentlab.tasks.surfaces import Surface, bowl, get_surface

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def distance_from(point, t):
    return float(np.hypot(*(t.points[-1] - np.asarray(point))))


# -- the behaviours ---------------------------------------------------------------------------

def test_saddle_gd_lingers_while_momentum_and_adam_escape():
    """Start (1, 1e-3), almost on the stable axis: after 150 steps GD is still within 0.1 of the
    saddle (y grows only by (1 + lr)^k), momentum and Adam are ≥ 10x farther, at a minimum."""
    result = run("saddle", ["gd", "momentum", "adam"], steps=150)
    assert result.start == (1.0, 1e-3)
    gd, momentum, adam = (result.trajectories[n] for n in ("gd", "momentum", "adam"))
    d_gd = distance_from((0.0, 0.0), gd)
    assert d_gd < 0.1
    for escaped in (momentum, adam):
        assert distance_from((0.0, 0.0), escaped) > 10 * d_gd
        assert escaped.distance < 0.05  # sitting in one of the minima (0, ±1)
    assert gd.steps_to_tol is None and adam.steps_to_tol is not None


def test_saddle_gradient_noise_escapes_where_exact_gd_cannot():
    """Exactly on the stable axis GD's y stays 0 forever; minibatch-like noise kicks it off."""
    surface = get_surface("saddle")
    exact = trajectory(surface, "gd", start=(1.0, 0.0), lr=0.05, steps=200)
    assert np.all(exact.points[:, 1] == 0.0)
    for seed in range(3):
        noisy = trajectory(surface, "sgd", start=(1.0, 0.0), lr=0.05, steps=200, noise=0.1, seed=seed)
        assert abs(noisy.points[-1, 1]) > 0.9  # fell into (0, ±1)


def test_local_minima_gd_settles_locally_momentum_carries_to_the_global():
    """From (2.2, 1), high on the outer slope, GD (lr 0.01) stops in the local well; heavy-ball
    momentum 0.9 at the same lr arrives there fast enough to cross the barrier."""
    surface = get_surface("local-minima")
    (global_min,) = surface.global_minima
    (local_min,) = [m for m in surface.minima if m not in surface.global_minima]
    result = run(surface, ["gd", "momentum"], steps=200, lrs={"gd": 0.01, "momentum": 0.01})
    assert result.trajectories["momentum"].hyperparams == {}  # the registry's preset: momentum=0.9
    gd, momentum = result.trajectories["gd"], result.trajectories["momentum"]
    assert gd.nearest_minimum == local_min and gd.points[:, 0].min() > surface.saddles[0][0]
    assert momentum.nearest_minimum == global_min and momentum.status == CONVERGED


@pytest.mark.parametrize("start", [(1.5, 0.0), "local minimum"])
def test_local_minima_momentum_started_low_stays_local(start):
    """What the picture honestly shows: momentum keeps kinetic energy, it does not search. From a
    start low in the local well (f(1.5, 0) ≈ 2 vs a barrier ≈ 1 above the local minimum) it stays."""
    surface = get_surface("local-minima")
    (local_min,) = [m for m in surface.minima if m not in surface.global_minima]
    start = local_min if start == "local minimum" else start
    t = trajectory(surface, "momentum", start=start, lr=0.01, steps=200)
    assert t.nearest_minimum == local_min


@pytest.mark.parametrize("condition", [100.0, 1000.0])
def test_bowl_adaptive_methods_cross_the_flat_direction_far_faster_than_gd(condition):
    """κ = condition, curvatures 1/κ (x) and 1 (y). GD at lr 1.8 (stable limit 2) shrinks x by
    (1 − 1.8/κ) per step; RMSProp and Adam take ~lr-sized steps along x whatever its curvature."""
    surface = bowl(condition)
    result = run(surface, ["gd", "rmsprop", "adam"], steps=60)
    gd = result.trajectories["gd"]
    assert gd.lr == 1.8
    assert abs(gd.points[-1, 0]) == pytest.approx(8 * (1 - 1.8 / condition) ** 60, rel=1e-9)
    for name in ("rmsprop", "adam"):
        assert abs(result.trajectories[name].points[-1, 0]) < abs(gd.points[-1, 0]) / 5, name


def test_bowl_gd_lr_1_8_is_stable_and_above_2_is_not():
    surface = bowl(100.0)
    stable = trajectory(surface, "gd", lr=1.8, steps=100)
    unstable = trajectory(surface, "gd", lr=2.05, steps=100)
    assert abs(stable.points[-1, 1]) < 1e-3
    assert abs(unstable.points[-1, 1]) > 10


def plane() -> Surface:
    return Surface(name="plane", formula="0.5·x + 0.3·y", fn=lambda x, y: 0.5 * x + 0.3 * y, minima=(),
                   window=(-100.0, 100.0, -100.0, 100.0), start=(0.0, 0.0), lrs={"*": 0.1})


def test_adagrad_step_shrinks_monotonically_on_a_constant_slope():
    """Constant g: s_t = t·g², so each coordinate moves lr·g/(√t·|g| + ε) ≈ lr/√t."""
    t = trajectory(plane(), "adagrad", lr=0.1, steps=50)
    steps = t.step_lengths
    assert np.all(np.diff(steps) < 0)
    k = np.arange(1, 51)
    assert steps == pytest.approx(0.1 * math.sqrt(2) / np.sqrt(k), rel=1e-6)
    gd = trajectory(plane(), "gd", lr=0.1, steps=50).step_lengths  # contrast: GD's step is lr·‖g‖, constant
    assert gd == pytest.approx(np.full(50, 0.1 * math.hypot(0.5, 0.3)), rel=1e-9)


# -- the runner -------------------------------------------------------------------------------

def test_noise_is_seeded_and_shared_by_all_optimizers():
    a = run("rosenbrock", ["gd", "adam"], steps=30, noise=0.5, seed=3)
    b = run("rosenbrock", ["gd", "adam"], steps=30, noise=0.5, seed=3)
    c = run("rosenbrock", ["gd", "adam"], steps=30, noise=0.5, seed=4)
    clean = run("rosenbrock", ["gd"], steps=30)
    for name in ("gd", "adam"):
        np.testing.assert_array_equal(a.trajectories[name].points, b.trajectories[name].points)
        assert not np.allclose(a.trajectories[name].points, c.trajectories[name].points)
    assert not np.allclose(a.trajectories["gd"].points, clean.trajectories["gd"].points)


def test_any_registry_name_or_import_path_drives_the_same_way():
    surface = get_surface("rosenbrock")
    ours = trajectory(surface, "adam", lr=0.05, steps=25)
    by_path = trajectory(surface, "descentlab.optim:Adam", lr=0.05, steps=25)
    torch_adam = trajectory(surface, "torch.optim:Adam", lr=0.05, steps=25)
    np.testing.assert_array_equal(ours.points, by_path.points)
    np.testing.assert_allclose(ours.points, torch_adam.points, rtol=1e-12, atol=1e-12)
    assert by_path.lr == 0.05
    assert trajectory(surface, "torch.optim:SGD", steps=3).lr == surface.lr_for("*")


def test_lr_override_and_hyperparams_reach_the_optimizer():
    result = run("bowl", ["gd", "momentum"], steps=20, lrs={"gd": 0.5},
                 hyperparams={"momentum": {"momentum": 0.0}})
    assert result.trajectories["gd"].lr == 0.5
    assert result.trajectories["momentum"].lr == get_surface("bowl").lr_for("momentum")
    # momentum=0 turns the momentum preset into GD at the same lr
    plain = trajectory(get_surface("bowl"), "gd", lr=result.trajectories["momentum"].lr, steps=20)
    np.testing.assert_array_equal(result.trajectories["momentum"].points, plain.points)


def test_non_finite_values_cut_the_trajectory_and_mark_it_diverged(tmp_path):
    result = run("rosenbrock", ["gd", "adam"], steps=50, lrs={"gd": 1.0})
    gd = result.trajectories["gd"]
    assert gd.status == DIVERGED and gd.diverged_at is not None and gd.diverged_at <= 50
    assert len(gd.points) <= gd.diverged_at and len(gd.losses) == len(gd.points)
    assert np.isfinite(gd.points).all() and np.isfinite(gd.losses).all()
    assert "diverged at step" in gd.label
    assert result.trajectories["adam"].status != DIVERGED and len(result.trajectories["adam"].points) == 51
    path = save_png(result, tmp_path / "diverged.png", dpi=40)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert "diverged at step" in format_summary(result)


def test_summary_reports_every_optimizer_and_unreached_tolerance():
    result = run("saddle", ["gd", "adam"], steps=100)
    text = format_summary(result)
    lines = text.splitlines()
    assert len(lines) == 3 and "steps to 0.01" in lines[0]
    assert lines[1].startswith("gd ") and "did not" in lines[1]
    adam = result.trajectories["adam"]
    assert lines[2].startswith("adam ") and f" {adam.steps_to_tol} " in lines[2] + " "


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizers": ["gd", "nope"]}, "unknown optimizer 'nope'"),
    ({"optimizers": []}, "at least one optimizer"),
    ({"optimizers": ["gd", "gd"]}, "must not repeat"),
    ({"start": (9.0, 0.0)}, r"start \(9, 0\) is outside the saddle window"),
    ({"start": (math.nan, 0.0)}, "start must be finite"),
    ({"steps": 0}, r"steps must be an integer in \[1, 100000\], got 0"),
    ({"noise": -1.0}, "noise must be a finite number >= 0, got -1.0"),
    ({"lrs": {"adam": 0.1}}, "lr given for adam, which is not among the optimizers gd"),
    ({"lrs": {"gd": -0.1}}, "lr for gd must be a finite number > 0, got -0.1"),
])
def test_bad_input_is_named(kwargs, message):
    kwargs = {"optimizers": ["gd"], **kwargs}
    with pytest.raises(ValueError, match=message):
        run("saddle", kwargs.pop("optimizers"), **kwargs)


# -- pictures -------------------------------------------------------------------------------

def assert_not_blank(pixels: np.ndarray) -> None:
    rgb = pixels[..., :3].astype(float)
    assert rgb.std() > 0.05 * (255 if rgb.max() > 1 else 1)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # contours, lines, markers: many colours


def test_plot_marks_start_minima_and_labels_each_trajectory(tmp_path):
    result = run("local-minima", ["gd", "momentum", "adam"], steps=40)
    fig = plot(result, figsize=(6.0, 4.0), dpi=50)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["minima", "saddle", "start"]
    assert labels[3:] == [f"gd (lr={result.trajectories['gd'].lr:g})", "momentum (lr=0.01)", "adam (lr=0.05)"]
    path = save_png(result, tmp_path / "local.png", dpi=40)
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (200, 320)  # the default 8 x 5 inch figure at 40 dpi
    assert_not_blank(pixels)


def test_gif_animates_the_trajectories(tmp_path):
    result = run("saddle", ["gd", "adam"], steps=30)
    path = save_gif(result, tmp_path / "saddle.gif", frames=3, dpi=30)
    assert path.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (192, 120)  # 6.4 x 4 inches at 30 dpi
        assert 2 <= gif.n_frames <= 3
        frames = []
        for i in (0, gif.n_frames - 1):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert_not_blank(frames[-1])
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0  # the paths advanced


# -- the command ----------------------------------------------------------------------------

def test_cli_writes_png_gif_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "saddle.png"
    code = main(["landscape", "--surface", "saddle", "--optimizers", "gd,momentum,torch.optim:Adam", "--steps", "40",
                 "--start", "1,0.001", "--lr", "torch.optim:Adam=0.05", "--out", str(out), "--gif", "--frames", "2",
                 "--dpi", "30", "--noise", "0.01", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("gd", "momentum", "torch.optim:Adam"):
        assert any(line.startswith(name + " ") for line in printed.splitlines())
    assert matplotlib.image.imread(out).shape[:2] == (150, 240)
    assert out.with_suffix(".gif").read_bytes()[:3] == b"GIF"


def test_cli_all_writes_one_picture_per_surface_and_an_index(tmp_path, capsys):
    code = main(["landscape", "--all", "--optimizers", "gd,adam", "--steps", "15", "--out", str(tmp_path / "all"),
                 "--dpi", "30", "--condition", "10"])
    assert code == 0
    names = ["saddle", "local-minima", "rosenbrock", "bowl", "rastrigin"]
    index = (tmp_path / "all" / "index.html").read_text()
    for name in names:
        png = tmp_path / "all" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f'src="{name}.png"' in index
    assert "x²/10 " in index  # the bowl got the condition number
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--surface", "volcano"], "unknown surface 'volcano'"),
    (["--optimizers", "gd,nope"], "unknown optimizer 'nope'"),
    (["--start", "5,5"], "outside the saddle window"),
    (["--start", "1"], "--start must be X,Y"),
    (["--lr", "adam"], "--lr must be NAME=VALUE"),
    (["--lr", "rmsprop=0.1", "--optimizers", "gd"], "lr given for rmsprop"),
    (["--steps", "-3"], "steps must be an integer"),
    (["--noise", "-1"], "noise must be"),
    (["--condition", "10"], "--condition applies to --surface bowl only"),
    (["--out", "picture.jpg"], "--out must end in .png"),
    (["--gif", "--frames", "0", "--steps", "2"], "frames must be an integer in [1, 10000], got 0"),
    (["--all", "--gif", "--frames", "0", "--steps", "2"], "frames must be"),
    (["--all", "--condition", "0.5", "--steps", "2", "--optimizers", "gd"], "condition must be a finite number >= 1"),
])
def test_cli_usage_errors_exit_2_with_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["landscape", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("descentlab landscape: error: ")
    assert message in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_list_shows_every_surface(capsys):
    assert main(["landscape", "--list"]) == 0
    printed = capsys.readouterr().out
    for name in ("saddle", "local-minima", "rosenbrock", "bowl", "rastrigin"):
        assert f"{name}: f = " in printed


def test_write_all_refuses_a_file_as_directory(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ValueError, match="must be a directory"):
        write_all(target, ["gd"], steps=2)


def test_trajectories_use_float64_and_leave_torch_defaults_alone():
    before = torch.get_default_dtype()
    t = trajectory(get_surface("bowl"), "adam", steps=3)
    assert t.points.dtype == np.float64 and torch.get_default_dtype() == before


def test_a_one_frame_gif_shows_the_finished_trajectories(tmp_path):
    result = run("saddle", ["gd", "adam"], steps=30)
    frames = {}
    for n in (1, 2):
        with Image.open(save_gif(result, tmp_path / f"{n}.gif", frames=n, dpi=20)) as gif:
            assert gif.n_frames == n
            for i in range(n):
                gif.seek(i)
                frames[n, i] = np.asarray(gif.convert("RGB")).astype(int)
    start, end = frames[2, 0], frames[2, 1]
    assert np.abs(start - end).mean() > 0.1
    assert np.abs(frames[1, 0] - end).mean() < 0.1 * np.abs(start - end).mean()  # the end, not the start
