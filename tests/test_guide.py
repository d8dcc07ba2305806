"""The guide without a browser: the closed-form theory against independent computations and the library's
own trajectories, the minibatch task, section 8's claim reading, the spec, the command, the import layers.
(The page in Chromium: test_guide_browser.py.)"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from descentlab.cli import main
from descentlab.guide import load_claim, minibatch, render_guide, theory
from descentlab.guide.claim import SHIPPED, claim_sentences
from descentlab.guide.numbers import section_numbers
from descentlab.guide.sections import SECTIONS, bowl_eigenvalues, default_state, map_axes
from descentlab.landscape import trajectory
from descentlab.landscape_noise import SplitMix64

SRC = Path(__file__).resolve().parents[1] / "src" / "descentlab"


# -- theory ----------------------------------------------------------------------------------------------

def test_the_closed_form_rate_equals_the_roots_of_the_characteristic_polynomial_over_the_map():
    lrs, rhos = map_axes()
    for condition in (1.0, 10.0, 100.0, 1000.0):
        eigs = bowl_eigenvalues(condition)
        closed = theory.rate_map(lrs, rhos, eigs)
        by_roots = np.array([[theory.momentum_rate_by_roots(lr, rho, eigs) for lr in lrs] for rho in rhos])
        np.testing.assert_allclose(closed, by_roots, rtol=1e-9, atol=1e-12)
        assert closed.shape == (len(rhos), len(lrs)) and (closed >= 1).any() and (closed < 1).any()


@pytest.mark.parametrize(("lr", "rho", "condition"), [(0.5, 0.9, 100.0), (1.0, 0.5, 10.0), (0.05, 0.0, 10.0),
                                                      (3.5, 0.9, 100.0)])
def test_the_library_momentum_contracts_at_the_closed_form_rate(lr, rho, condition):
    """The envelope of ‖w_k‖ under descentlab.optim's momentum on the bowl shrinks by the predicted rate per
    step (max over a window: complex roots make the norm oscillate); above 1 it grows."""
    from descentlab.tasks.surfaces import get_surface

    predicted = theory.momentum_rate(lr, rho, bowl_eigenvalues(condition))
    t = trajectory(get_surface("bowl", condition=condition), "momentum", start=(-8.0, 1.0), steps=400, lr=lr,
                   hyperparams={"momentum": rho})
    norms = np.linalg.norm(t.points, axis=1)
    if predicted < 1:
        measured = (norms[300:350].max() / norms[100:150].max()) ** (1 / 200)
        assert measured == pytest.approx(predicted, rel=0.01), (measured, predicted)
    else:
        assert t.status == "diverged" or norms[-1] > 1e6 * norms[0]


def test_gd_crosses_its_stability_limit_at_two_over_l():
    below, above = (section_numbers("gd", {**default_state("gd"), "lr": lr}) for lr in (1.9, 2.1))
    assert below["limit"] == 2.0 and max(below["factors"]) < 1 and max(above["factors"]) > 1
    # y0 = 1: |y| after 60 steps is 0.9^60 below the limit, 1.1^60 above it
    assert abs(below["gd"]["points"][-1][1]) < 0.01 and abs(above["gd"]["points"][-1][1]) > 100


def test_adam_without_bias_correction_takes_a_first_step_of_about_three_times_lr():
    numbers = section_numbers("adam", default_state("adam"))
    lr = default_state("adam")["lr"]
    assert numbers["adam_steps"][0] == pytest.approx(lr * math.sqrt(2), rel=1e-6)  # |sign(g)| in 2-D: √2·lr
    assert numbers["plain_steps"][0] / numbers["adam_steps"][0] == pytest.approx(0.1 / math.sqrt(0.001), rel=1e-4)


def test_effective_lrs_decay_forever_for_adagrad_and_settle_for_rmsprop():
    n = section_numbers("rmsprop", default_state("rmsprop"))
    a, r = np.asarray(n["adagrad_effective"]), np.asarray(n["rmsprop_effective"])
    assert (np.diff(a, axis=0) <= 0).all()  # AdaGrad's sum only grows
    assert (np.diff(r[:, 1]) > 0).any()  # RMSProp's leaky average lets it grow back
    assert a.shape == r.shape == (SECTIONS["rmsprop"]["steps"], 2)


# -- the minibatch task -----------------------------------------------------------------------------------

def test_epoch_orders_are_permutations_from_the_shared_stream():
    orders = minibatch.epoch_orders(3, 442, 2)
    assert all(sorted(o) == list(range(442)) for o in orders) and orders[0] != orders[1]
    assert minibatch.epoch_orders(3, 442, 2) == orders and minibatch.epoch_orders(4, 442, 2) != orders
    g = SplitMix64(3)  # the first swap: i = 441, j = ⌊u·442⌋
    j = math.floor(g.uniform() * 442)
    assert orders[0][441] == j or j == 441


def test_gradient_noise_formula_equals_the_spread_over_every_batch_of_a_small_set():
    """E‖g_B − g‖² without replacement, brute force over all batches of 2 from 6 samples."""
    from itertools import combinations

    x, y = np.array([0.1, -1.2, 0.7, 2.0, -0.3, 0.5]), np.array([0.3, -0.8, 1.1, 1.4, 0.2, -0.1])
    w = (0.4, -0.2)
    r = w[0] * x + w[1] - y
    g = np.stack([r * x, r], axis=1)
    spread = np.mean([np.sum((g[list(c)].mean(axis=0) - g.mean(axis=0)) ** 2) for c in combinations(range(6), 2)])
    assert minibatch.gradient_noise(w, 2, x, y) == pytest.approx(math.sqrt(spread), rel=1e-12)
    assert minibatch.gradient_noise(w, 6, x, y) == 0.0


def test_smaller_batches_take_more_steps_and_make_more_progress_per_epoch():
    n = section_numbers("sgd", default_state("sgd"))
    runs = n["runs"]
    assert [runs[b]["steps_per_epoch"] for b in ("32", "64", "128", "442")] == [14, 7, 4, 1]
    assert runs["32"]["losses"][-1] < runs["128"]["losses"][-1] < runs["442"]["losses"][-1]
    assert n["noise"]["32"] > n["noise"]["64"] > n["noise"]["128"] > n["noise"]["442"] == 0.0


# -- section 8 ------------------------------------------------------------------------------------------------

def _claim(tmp_path: Path, entries: list, **extra) -> Path:
    (tmp_path / "claim.json").write_text(json.dumps({"entries": entries, **extra}))
    return tmp_path


def entry(verdict: str, workload: str = "w", **kw) -> dict:
    return {"workload": workload, "lr": 1e-3, "budget_epochs": 60, "within_tolerance": verdict == "within",
            "gap": 0.01, "still_improving": verdict == "undecided", "verdict": verdict, **kw}


def test_shipped_claim_says_undecided_not_failed():
    text = " ".join(claim_sentences(load_claim(None)))
    assert "within 1 point of test accuracy" in text and "on 1 of 4 workloads" in text
    assert "budgets of 120-240 epochs" in text and "On this evidence the claim is undecided" in text
    assert "behind on 1" in text and "does not hold" not in text
    assert [e["verdict"] for e in SHIPPED["entries"]].count("undecided") == 2


@pytest.mark.parametrize(("verdicts", "says", "never"), [
    (["within", "within"], "the claim holds", "does not hold"),
    (["within", "behind"], "does not hold", "undecided"),
    (["within", "undecided"], "On this evidence the claim is undecided", "does not hold"),
])
def test_a_study_claim_is_worded_no_stronger_than_its_entries(tmp_path, verdicts, says, never):
    claim = load_claim(_claim(tmp_path, [entry(v, f"w{i}") for i, v in enumerate(verdicts)], verdict="mixed",
                              tolerance="1 point"))
    text = " ".join(claim_sentences(claim))
    assert says in text and never not in text and "overall verdict: mixed" in text
    assert f"on {verdicts.count('within')} of {len(verdicts)} workloads" in text


def test_a_study_without_claim_json_falls_back_to_the_shipped_numbers_and_says_so(tmp_path):
    claim = load_claim(tmp_path)
    assert claim["entries"] == SHIPPED["entries"] and "has no claim.json" in claim["note"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot be read as JSON"),
    ('{"entries": []}', "has no list of entries"),
    ('{"entries": [{"workload": "w", "lr": 0.001, "budget_epochs": 5, "verdict": "maybe"}]}', "verdict 'maybe'"),
    ('{"entries": [{"workload": "w", "lr": -1, "budget_epochs": 5, "verdict": "within"}]}', "lr -1"),
    ('{"entries": [{"workload": "w"}]}', "lacks lr, budget_epochs, verdict"),
])
def test_guide_refuses_a_bad_claim_json_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, content,
                                                                        message):
    study = tmp_path / "study"
    study.mkdir()
    (study / "claim.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    assert main(["guide", "--study", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("descentlab guide: error: --study")
    assert not (tmp_path / "guide.html").exists()


# -- the page file and the command ----------------------------------------------------------------------

def embedded_spec(html: str) -> dict:
    found = re.search(r'<script id="spec" type="application/json">(.*?)</script>', html, re.S)
    assert found
    return json.loads(found.group(1))


def test_the_guide_is_one_file_with_the_landscape_maths_inline():
    html = render_guide()
    assert not re.search(r"<(link|img|iframe)\b", html, re.I) and not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assets = SRC / "landscape_assets"
    for name in ("landscape_math.js", "guide_math.js", "d3.v7.9.2.min.js"):
        assert (assets / name).read_text() in html
    spec = embedded_spec(html)
    assert list(spec["sections"]) == ["gd", "sgd", "momentum", "adagrad", "rmsprop", "adam", "saddle"]
    assert len(spec["regression"]["x"]) == 442 and spec["map"]["lrs"] == map_axes()[0]
    for update in ("√s + ε", "s ← s + g²", "m̂ = m / (1 − β1ᵗ)"):
        assert update in html


def test_guide_command_writes_the_page_with_the_study_claim(tmp_path, monkeypatch, capsys):
    study = _claim(tmp_path, [entry("within", "digits-mlp"), entry("undecided", "mnist1d-cnn")], verdict="pending",
                   tolerance="1 point")
    monkeypatch.chdir(tmp_path)
    assert main(["guide", "--out", "g.html", "--study", str(study)]) == 0
    assert "wrote g.html" in capsys.readouterr().out
    claim = embedded_spec((tmp_path / "g.html").read_text())["claim"]
    assert [e["workload"] for e in claim["entries"]] == ["digits-mlp", "mnist1d-cnn"]
    assert claim["source"] == f"the study in {study}"


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "guide.png"], "--out must end in .html, got 'guide.png'"),
    (["--study", "missing"], "--study must be a study's output directory, got 'missing'"),
    (["--out", "afile/g.html"], "--out"),
])
def test_guide_command_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["guide", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_guide_help_imports_no_torch():
    code = ("import sys, argparse; from descentlab.cli import guide; p = argparse.ArgumentParser(); "
            "guide.add_parser(p.add_subparsers()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_landscape_all_links_both_pages_from_the_index(tmp_path):
    assert main(["landscape", "--all", "--optimizers", "gd,adam,nesterov", "--steps", "5", "--dpi", "20",
                 "--lr", "adam=0.1,nesterov=0.01", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<a href="landscape.html">' in index and '<a href="guide.html">' in index
    assert embedded_spec((tmp_path / "guide.html").read_text(encoding="utf-8"))["sections"]
    state = embedded_spec((tmp_path / "landscape.html").read_text(encoding="utf-8"))["state"]
    assert state["surface"] == "saddle" and state["on"] == ["gd", "adam"] and state["lr"] == {"adam": 0.1}


# -- import layers ----------------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """Every descentlab module ``path`` imports (relative imports resolved), at any depth of the file."""
    package = "descentlab." + ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    package = package.rstrip(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("descentlab")}


def test_layers_flow_down_landscape_never_imports_the_pages_or_the_guide():
    landscape = _imports(SRC / "landscape.py")
    assert not {m for m in landscape if m.startswith(("descentlab.landscape_page", "descentlab.guide"))}, landscape
    page = _imports(SRC / "landscape_page.py")
    assert "descentlab.landscape" in page and not any(m.startswith("descentlab.guide") for m in page)
    for module in (SRC / "guide").glob("*.py"):
        assert not any(m.startswith("descentlab.cli") for m in _imports(module)), module


def test_the_readme_headline_states_the_shipped_study_numbers():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    head = readme[:readme.index("## Set up and run")]
    by_workload = {e["workload"]: e for e in SHIPPED["entries"]}
    cnn, digits = by_workload["mnist1d-cnn"], by_workload["digits-mlp"]
    assert cnn["verdict"] == "behind" and digits["verdict"] == "within" and SHIPPED["verdict"] == "undecided"
    assert f"{cnn['gap'] * 100:.1f} points [5.1, 12.4]" in head and "Undecided" in head
    assert "8.8 points behind [5.1, 12.4]" == cnn["gap_text"]


def test_a_claim_without_the_equal_compute_flag_is_counted_as_the_study_counts_it():
    """A claim.json written before entries carried ``equal_compute``: the guide picks, per workload and lr, the
    largest budget multiple within the tuning compute (else x1), as the study's verdict does — one entry per
    workload, the one the study's own overall verdict rests on."""
    from descentlab.guide.claim import counted_entries

    def entry(workload: str, multiple: int, ratio: float | None) -> dict:
        return {"workload": workload, "lr": 1e-3, "multiple": multiple, "compute_ratio": ratio, "verdict": "within"}

    entries = [entry("a", 1, 0.25), entry("a", 4, 1.0), entry("b", 1, 0.5), entry("b", 4, 2.0), entry("c", 1, None)]
    counted = {(e["workload"], e["multiple"]) for e in counted_entries(entries)}
    assert counted == {("a", 4), ("b", 1), ("c", 1)}
