"""The guide page in headless Chromium (Debian's, driven by Playwright, as test_landscape_page_browser.py).

- conformance: every number each section computes in the page (descentlabGuide.compute) against
  descentlab.guide.numbers (descentlab.optim's torch classes, the NumPy reference, the closed-form rate),
  for several states per section: within 1e-9 (relative above 1), same statuses and diverged-at steps; the
  momentum section's (lr, ρ) map against the closed form; wrong variants of guide_math.js fail the table;
- the page as a person uses it: drag a start point, move sliders with the keyboard, click the rate map,
  reload the URL; no network request; slider recompute time (median ≤ 16 ms, printed); the docs screenshot.

DESCENTLAB_UPDATE_DOCS=1 rewrites docs/img/guide.png.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from descentlab.cli import main
from descentlab.guide.numbers import section_numbers
from descentlab.guide.sections import default_state
from test_landscape_page_browser import Session, browser  # noqa: F401  (the shared chromium fixture)

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "guide.png"
TOLERANCE = 1e-9

pytestmark = pytest.mark.browser


class GuideSession(Session):
    def open(self, path: Path, fragment: str = "") -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(path.as_uri() + fragment)
        page.wait_for_function("() => window.descentlabGuide !== undefined", timeout=10_000)
        return page


@pytest.fixture
def session(browser: Any) -> Iterator[GuideSession]:  # noqa: F811
    s = GuideSession(browser)
    try:
        yield s
    finally:
        s.context.close()
    assert s.errors == [], s.errors


@pytest.fixture(scope="module")
def guide_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guide") / "guide.html"
    assert main(["guide", "--out", str(path)]) == 0
    return path


# -- the conformance table --------------------------------------------------------------------------

def _state(name: str, **changes: Any) -> dict[str, Any]:
    return {**default_state(name), **changes}


TABLE: list[tuple[str, dict[str, Any]]] = [
    ("gd", _state("gd")), ("gd", _state("gd", lr=2.5, start=[3.0, -1.5])), ("gd", _state("gd", lr=0.05)),
    ("sgd", _state("sgd")), ("sgd", _state("sgd", lr=0.7, epochs=12, seed=5, start=[2.0, -1.0])),
    ("momentum", _state("momentum")), ("momentum", _state("momentum", lr=3.9, rho=0.3, condition=10.0)),
    ("momentum", _state("momentum", lr=0.02, rho=0.0, condition=1000.0, start=[5.0, -1.5])),
    ("adagrad", _state("adagrad")), ("adagrad", _state("adagrad", lr=4.0, start=[6.0, 1.8])),
    ("rmsprop", _state("rmsprop")), ("rmsprop", _state("rmsprop", adagrad_lr=0.3, rmsprop_lr=0.5, alpha=0.9)),
    ("adam", _state("adam")), ("adam", _state("adam", lr=0.01, beta1=0.5, beta2=0.99, eps=0.1)),
    ("saddle", _state("saddle")), ("saddle", _state("saddle", lr=0.05, rho=0.5, noise=1.5, seed=9)),
    ("saddle", _state("saddle", surface="local-minima", start=[2.2, 1.0])),
    ("saddle", _state("saddle", surface="local-minima", start=[-1.8, -1.0], lr=0.02, rho=0.95, noise=0.0)),
]
"""Per section: the opening state and states that move every control (diverging GD and momentum included)."""


def differences(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where two nested structures of numbers differ by more than TOLERANCE (relative above 1)."""
    if isinstance(theirs, dict):
        if not isinstance(ours, dict) or set(ours) != set(theirs):
            return [f"{where}: keys {sorted(ours) if isinstance(ours, dict) else ours} vs {sorted(theirs)}"]
        return [d for k in theirs for d in differences(ours[k], theirs[k], f"{where}.{k}")]
    if isinstance(theirs, (list, tuple)) and theirs and isinstance(theirs[0], (list, tuple, dict)):
        if not isinstance(ours, list) or len(ours) != len(theirs):
            return [f"{where}: length {len(ours) if isinstance(ours, list) else ours} vs {len(theirs)}"]
        pairs = enumerate(zip(ours, theirs, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(theirs, (list, tuple)):
        a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        if a.shape != b.shape:
            return [f"{where}: shape {a.shape} vs {b.shape}"]
        scaled = np.abs(a - b) / np.maximum(1.0, np.abs(b)) if b.size else np.zeros(0)
        bad = ~(scaled <= TOLERANCE) & ~(a == b)
        return [f"{where}: differs by {np.nanmax(scaled):.3g} at {int(np.argmax(bad))}"] if bad.any() else []
    if isinstance(theirs, float) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return [] if ours == theirs or abs(ours - theirs) / max(1.0, abs(theirs)) <= TOLERANCE else \
            [f"{where}: {ours} vs {theirs}"]
    return [] if ours == theirs else [f"{where}: {ours!r} vs {theirs!r}"]


def page_numbers(page: Any, rows: list[tuple[str, dict[str, Any]]], via: str = "descentlabGuide.compute") -> list[Any]:
    if via == "math":  # the maths script as it now stands in the page (a wrong variant once injected)
        via = "((n, s) => descentlabGuideMath.compute(n, s, descentlabGuide.spec))"
    expr = f"rows => JSON.stringify(rows.map(([n, s]) => {via}(n, s)))"
    return json.loads(page.evaluate(expr, rows))


@pytest.fixture(scope="module")
def python_table() -> list[dict[str, Any]]:
    return [section_numbers(name, state) for name, state in TABLE]


def test_every_number_of_every_section_equals_the_library(browser, guide_file, session, python_table):  # noqa: F811
    page = session.open(guide_file)
    ours = page_numbers(page, TABLE)
    problems = {f"{i}:{TABLE[i][0]}": d[:3] for i, (a, b) in enumerate(zip(ours, python_table, strict=True))
                if (d := differences(a, b))}
    assert problems == {}
    statuses = [n.get("gd", n.get("momentum", {})).get("status") for n in python_table]
    assert {"converged", "not converged"} <= set(statuses)  # the table crosses both sides of each limit:
    assert max(n["rate"] for n in python_table if "rate" in n) > 1 > min(n["rate"] for n in python_table if "rate" in n)
    assert max(max(n["factors"]) for n in python_table if "factors" in n) > 1
    assert session.outside_requests(guide_file) == []


MUTATIONS = [
    # (what is wrong, text of guide_math.js, replacement, sections that must fail)
    ("rate with b instead of |b|", "(Math.abs(b) + Math.sqrt(disc)) / 2", "(b + Math.sqrt(disc)) / 2", ("momentum",)),
    ("with-replacement noise (no (N − B) factor)", "((n - batch) / (batch * (n - 1)))", "(1 / batch)", ("sgd",)),
    ("shuffle off by one", "Math.floor(uniform() * (i + 1))", "Math.floor(uniform() * i)", ("sgd",)),
    ("the article's Adam corrected after all", "(h.lr * s.exp_avg[i]) / (Math.sqrt(s.exp_avg_sq[i]) + h.eps)",
     "(h.lr * s.exp_avg[i] / (1 - Math.pow(beta1, t))) / (Math.sqrt(s.exp_avg_sq[i] / (1 - Math.pow(beta2, t)))"
     " + h.eps)", ("adam",)),
    ("effective lr without the root", "hypers.lr / (Math.sqrt(state[key][i]) + hypers.eps)",
     "hypers.lr / (state[key][i] + hypers.eps)", ("adagrad", "rmsprop")),
]


def test_wrong_variants_of_the_guide_maths_fail_the_table(browser, guide_file, session, python_table):  # noqa: F811
    page = session.open(guide_file)
    maths = resources.files("descentlab").joinpath("landscape_assets", "guide_math.js").read_text("utf-8")
    assert maths in guide_file.read_text(encoding="utf-8")
    for what, right, wrong, broken in MUTATIONS:
        assert maths.count(right) == 1, f"the wrong variant no longer applies: {right!r}"
        page.add_script_tag(content=maths.replace(right, wrong))
        failed = {TABLE[i][0] for i, (a, b) in enumerate(zip(page_numbers(page, TABLE, "math"), python_table,
                                                              strict=True)) if differences(a, b)}
        assert failed == set(broken), what
    page.add_script_tag(content=maths)
    assert all(not differences(a, b) for a, b in zip(page_numbers(page, TABLE, "math"), python_table, strict=True))


# -- the page as a person uses it ----------------------------------------------------------------------

def assert_section_matches_python(page: Any, name: str) -> dict[str, Any]:
    state = page.evaluate(f"descentlabGuide.state[{json.dumps(name)}]")
    shown = json.loads(page.evaluate(f"JSON.stringify(descentlabGuide.numbers[{json.dumps(name)}])"))
    assert differences(shown, section_numbers(name, state)) == [], name
    return state


def wait_for_hash(page: Any) -> str:
    page.wait_for_function("() => location.hash === descentlabGuide.toHash()", timeout=5_000)
    return page.evaluate("location.hash")


def test_drag_keyboard_map_click_and_the_link_restores_everything(browser, guide_file, session):  # noqa: F811
    page = session.open(guide_file)
    # drag the GD start point
    page.locator("#gd").scroll_into_view_if_needed()
    x, y = page.evaluate("descentlabGuide.clientPoint('gd', descentlabGuide.state.gd.start)")
    tx, ty = page.evaluate("descentlabGuide.clientPoint('gd', [4, -1.5])")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(tx, ty, steps=6)
    page.mouse.up()
    dragged = assert_section_matches_python(page, "gd")
    assert dragged["start"] == pytest.approx([4, -1.5], abs=0.1)
    # GD's lr across 2/L with the keyboard: the readout says so
    page.focus("#gd-lr")
    for _ in range(25):
        page.keyboard.press("ArrowRight")
    moved = assert_section_matches_python(page, "gd")
    assert moved["lr"] > 2 and "≥ 2/L" in page.text_content('.figure[data-section="gd"] .readout')
    # the start point with the arrow keys
    before = page.evaluate("descentlabGuide.state.adagrad.start")
    page.focus('.figure[data-section="adagrad"] svg.plot')
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowUp")
    after = assert_section_matches_python(page, "adagrad")["start"]
    assert after[0] > before[0] and after[1] > before[1]
    # the momentum map: a click sets (lr, ρ) and the sliders follow
    box = page.locator("canvas.map").bounding_box()
    page.locator("canvas.map").scroll_into_view_if_needed()
    box = page.locator("canvas.map").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.25)
    clicked = assert_section_matches_python(page, "momentum")
    assert clicked["rho"] == pytest.approx(0.99 * 0.75, abs=0.02) and 0.1 < clicked["lr"] < 0.4
    assert float(page.input_value("#momentum-rho")) == pytest.approx(clicked["rho"])
    # the saddle section's other surface, SGD's epochs
    page.select_option("#saddle-surface", "local-minima")
    page.locator("#sgd-epochs").fill("9")
    assert assert_section_matches_python(page, "saddle")["surface"] == "local-minima"
    assert assert_section_matches_python(page, "sgd")["epochs"] == 9
    # the link reproduces every section in a fresh page
    link = wait_for_hash(page)
    again = session.open(guide_file, link)
    assert again.evaluate("descentlabGuide.state") == page.evaluate("descentlabGuide.state")
    numbers = "JSON.stringify(descentlabGuide.numbers)"
    assert again.evaluate(numbers) == page.evaluate(numbers)
    assert session.outside_requests(guide_file) == []


def test_a_link_with_bad_values_keeps_the_rest_and_says_what_it_ignored(browser, guide_file, session):  # noqa: F811
    page = session.open(guide_file, "#momentum.lr=1.5&momentum.rho=2&gd.start=99,0&sgd.epochs=2.5&adam.nope=1"
                                    "&saddle.surface=rastrigin&sgd.seed=4")
    state = page.evaluate("descentlabGuide.state")
    assert state["momentum"]["lr"] == 1.5 and state["sgd"]["seed"] == 4
    assert state["momentum"]["rho"] == 0.9 and state["gd"]["start"] == [-8.0, 1.0] and state["sgd"]["epochs"] == 5
    message = page.text_content("#hash-errors")
    for bad in ("momentum.rho=2", "gd.start=99,0", "sgd.epochs=2.5", "adam.nope=1", "saddle.surface=rastrigin"):
        assert bad in message
    assert_section_matches_python(page, "momentum")


def test_a_slider_move_recomputes_its_figure_in_under_16_ms_median(browser, guide_file, session, capsys):  # noqa: F811
    page = session.open(guide_file)
    sliders = {"gd": "gd-lr", "sgd": "sgd-lr", "momentum": "momentum-lr", "adagrad": "adagrad-lr",
               "rmsprop": "rmsprop-alpha", "adam": "adam-beta2", "saddle": "saddle-rho"}
    medians = {}
    for name, slider in sliders.items():
        page.evaluate(f"descentlabGuide.timings[{json.dumps(name)}].length = 0")
        page.focus(f"#{slider}")
        for key in ["ArrowLeft"] * 15 + ["ArrowRight"] * 15:
            page.keyboard.press(key)
        timings = page.evaluate(f"descentlabGuide.timings[{json.dumps(name)}]")
        assert len(timings) >= 25, (name, len(timings))
        medians[name] = statistics.median(timings)
    with capsys.disabled():
        print("\nguide recompute on a slider move, median ms over 30 moves: "
              + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    assert max(medians.values()) <= 16.0, medians


def test_every_section_renders_its_figures_and_the_claim(browser, guide_file, session, tmp_path):  # noqa: F811
    from PIL import Image

    page = session.open(guide_file)
    counts = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.figure[data-section]')].map(f =>
        [f.dataset.section, {contours: f.querySelectorAll('svg.plot path[d]').length,
         paths: f.querySelectorAll('path.trajectory').length, charts: f.querySelectorAll('svg.chart').length,
         sliders: f.querySelectorAll('input[type=range]').length,
         rows: f.querySelectorAll('table.claim tbody tr').length}]))""")
    expected_paths = {"gd": 1, "sgd": 4, "momentum": 1, "adagrad": 1, "rmsprop": 2, "adam": 2, "saddle": 3}
    for name, paths in expected_paths.items():
        c = counts[name]
        assert c["paths"] == paths and c["contours"] > 8 and c["charts"] >= 1 and c["sliders"] >= 1, (name, c)
    assert counts["choice"]["rows"] == 4
    assert "On this evidence the claim is undecided" in page.text_content("#claim")
    assert page.locator("code.rule[data-update=adam]").text_content().count("1 − β1ᵗ") == 1
    shot = tmp_path / "guide.png"
    page.locator("#momentum").screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert pixels.mean(axis=2).std() > 15 and 0.01 < colourful.mean() < 0.6, colourful.mean()
    if os.environ.get("DESCENTLAB_UPDATE_DOCS"):
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(colors=256).save(DOCS_SCREENSHOT, optimize=True)
