"""The interactive landscape page without a browser: the shared noise stream, the spec the page reads,
the opening state's checks, the file the command writes. (The page in Chromium: test_landscape_page_browser.py.)"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from descentlab.cli import main
from descentlab.landscape import trajectory, write_all
from descentlab.landscape_noise import SplitMix64, gradient_noise
from descentlab.landscape_page import D3, PAGE_OPTIMIZERS, SLIDERS, page_spec, page_state, render_page
from descentlab.optim import resolve
from descentlab.tasks.surfaces import get_surface, surface_names

# -- the noise stream --------------------------------------------------------------------------------


def test_splitmix64_gives_the_published_reference_outputs():
    """The first outputs of SplitMix64 for seeds 0 and 1234567, as in its reference implementation."""
    zero, other = SplitMix64(0), SplitMix64(1234567)
    assert [zero.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert other.next_u64() == 6457827717110365317


def test_gradient_noise_is_standard_normal_seeded_and_reproducible():
    xi = gradient_noise(5, 20_000)
    assert xi.shape == (20_000, 2) and xi.dtype == np.float64
    assert abs(xi.mean()) < 0.02 and abs(xi.std() - 1) < 0.02
    assert abs(np.corrcoef(xi[:, 0], xi[:, 1])[0, 1]) < 0.03
    assert abs(np.mean(np.abs(xi) > 1.96) - 0.05) < 0.005  # normal tails, not uniform ones
    np.testing.assert_array_equal(gradient_noise(5, 100), xi[:100])  # a prefix of the same stream
    assert not np.array_equal(gradient_noise(6, 100), xi[:100])
    np.testing.assert_array_equal(gradient_noise(-1, 10), gradient_noise(2**64 - 1, 10))  # seed mod 2^64


def test_a_noisy_trajectory_adds_sigma_times_the_stream_to_the_gradient():
    surface = get_surface("bowl")
    start, lr, sigma = (-8.0, 1.0), 0.1, 0.5
    t = trajectory(surface, "sgd", start=start, lr=lr, steps=3, noise=sigma, seed=11)
    xi = gradient_noise(11, 3)
    w = torch.tensor(start, dtype=torch.float64)
    for k in range(3):
        g = torch.tensor(surface.grad(*w.tolist()), dtype=torch.float64).add(torch.from_numpy(xi[k]), alpha=sigma)
        w = w.add(g, alpha=-lr)
        np.testing.assert_array_equal(t.points[k + 1], w.numpy())


# -- the spec ----------------------------------------------------------------------------------------


def test_spec_holds_every_surface_as_descentlab_defines_it():
    spec = page_spec()
    assert [s["name"] for s in spec["surfaces"]] == surface_names()
    for s in spec["surfaces"]:
        surface = get_surface(s["name"])
        assert s["minima"] == surface.minima and s["saddles"] == surface.saddles and s["window"] == surface.window
        assert s["start"] == surface.start and s["levels"] == surface.levels
        assert s["lrs"] == {o.name: surface.lr_for(o.name) for o in PAGE_OPTIMIZERS}
    bowl = next(s for s in spec["surfaces"] if s["name"] == "bowl")
    assert bowl["parameter"]["key"] == "condition" and bowl["params"] == {"condition": 100.0}
    local = next(s for s in spec["surfaces"] if s["name"] == "local-minima")
    assert local["saddles"] and local["params"]["tilt"] == 0.3


def test_spec_holds_the_six_optimizers_from_the_registry():
    spec = page_spec()
    assert [o["name"] for o in spec["optimizers"]] == ["gd", "sgd", "momentum", "adagrad", "rmsprop", "adam"]
    for o in spec["optimizers"]:
        entry = resolve(o["name"])
        assert o["rule"] == entry.cls.rule.name and o["noisy"] == (not entry.full_batch)
        for key in o["sliders"]:
            slider = SLIDERS[key]
            default = entry.defaults[slider.hyper]
            assert o["defaults"][key] == (default if slider.index is None else default[slider.index])
        # what landscape_math.js leaves out must sit at torch's neutral value for these six
        neutral = {"weight_decay": 0.0, "dampening": 0.0, "nesterov": False, "lr_decay": 0.0, "maximize": False,
                   "initial_accumulator_value": 0.0, "centered": False, "amsgrad": False}
        assert {k: v for k, v in entry.defaults.items() if k in neutral} == {
            k: v for k, v in neutral.items() if k in entry.defaults}
        if o["rule"] == "RMSprop":
            assert entry.defaults["momentum"] == 0.0
    assert [o["noisy"] for o in spec["optimizers"]].count(False) == 1  # GD, full batch
    rules = {o["name"]: o["update"] for o in spec["optimizers"]}
    assert "√ŝ + ε" in rules["adam"] and "1 − β2ᵗ" in rules["adam"] and "√s + ε" in rules["adagrad"]
    assert "(1 − α)·g²" in rules["rmsprop"] and "ρ·b + g" in rules["momentum"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizers": ["gd", "lion"]}, "optimizers on the page must be among gd,sgd,momentum,adagrad,rmsprop,adam, "
                                     "got gd,lion"),
    ({"optimizers": []}, "got none"),
    ({"lrs": {"adam": 0.1}, "optimizers": ["gd"]}, "lr given for adam, which is not among the optimizers gd"),
    ({"lrs": {"gd": 50.0}}, "lr for gd must be a number in [1e-05, 10] on the page, got 50.0"),
    ({"steps": 0}, "steps must be a number in [1, 1000] on the page, got 0"),
    ({"noise": math.nan}, "noise must be a number in [0, 5] on the page, got nan"),
    ({"seed": -1}, "seed must be a number in [0, 2147483647] on the page, got -1"),
    ({"start": (5.0, 0.0)}, "start (5, 0) is outside the saddle window"),
    ({"condition": 10.0}, "condition applies to the bowl surface only"),
    ({"tol": 0.0}, "tol must be a finite number > 0, got 0.0"),
])
def test_page_state_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError) as error:
        page_state("saddle", **kwargs)
    assert message in str(error.value)


# -- the file ----------------------------------------------------------------------------------------


def embedded_spec(html: str) -> dict:
    found = re.search(r'<script id="spec" type="application/json">(.*?)</script>', html, re.S)
    assert found
    return json.loads(found.group(1))


def test_the_page_is_one_file_with_everything_inline():
    html = render_page()
    assert not re.search(r"<(link|img|iframe)\b", html, re.I) and not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assert "@import" not in html
    d3 = (Path(__file__).resolve().parents[1] / "src/descentlab/landscape_assets" / D3["file"]).read_text()
    assert d3 in html and d3.startswith("// https://d3js.org v7.9.2 ")
    assert "Permission to use, copy, modify, and/or distribute this software" in html  # d3's ISC notice
    assert 250_000 < len(d3.encode()) < 300_000  # the size the README states (about 281 kB)
    assert embedded_spec(html)["state"]["on"] == [o.name for o in PAGE_OPTIMIZERS]


def test_html_command_writes_the_page_opening_on_the_options(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["landscape", "--html", "--surface", "bowl", "--condition", "1000", "--optimizers", "gd,adam",
                 "--lr", "adam=0.2", "--start=-5,1.5", "--steps", "300", "--noise", "0.1", "--seed", "4"]) == 0
    assert "wrote landscape.html" in capsys.readouterr().out
    state = embedded_spec((tmp_path / "landscape.html").read_text(encoding="utf-8"))["state"]
    assert state == {"surface": "bowl", "start": [-5.0, 1.5], "steps": 300, "noise": 0.1, "seed": 4,
                     "on": ["gd", "adam"], "tol": 0.01, "lr": {"adam": 0.2}, "condition": 1000.0}


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "page.png"], "--out must end in .html with --html, got 'page.png'"),
    (["--gif"], "--gif cannot be combined with --html"),
    (["--all"], "--html cannot be combined with --all"),
    (["--optimizers", "gd,nesterov"], "optimizers on the page must be among"),
    (["--steps", "2000"], "steps must be a number in [1, 1000] on the page, got 2000"),
    (["--surface", "rosenbrock", "--condition", "10"], "--condition applies to --surface bowl only"),
])
def test_html_command_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["landscape", "--html", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_all_writes_the_page_and_links_it_from_the_index(tmp_path):
    """The CLI composes --all: pictures and index (descentlab.landscape), then the page and the guide."""
    assert main(["landscape", "--all", "--optimizers", "gd,adam,nesterov", "--steps", "5", "--dpi", "20",
                 "--lr", "adam=0.1,nesterov=0.01", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<a href="landscape.html">' in index
    state = embedded_spec((tmp_path / "landscape.html").read_text(encoding="utf-8"))["state"]
    assert state["surface"] == "saddle" and state["on"] == ["gd", "adam"] and state["lr"] == {"adam": 0.1}
    assert state["steps"] == 5


def test_write_all_draws_pictures_and_the_index_only(tmp_path):
    write_all(tmp_path, ["gd"], surfaces=["saddle"], steps=2, dpi=20, links={"x.html": "a page"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "saddle.png"]
    assert '<a href="x.html">a page</a>' in (tmp_path / "index.html").read_text(encoding="utf-8")
