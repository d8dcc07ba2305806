"""Issue 8's "done when": a rule written here in under 15 lines trains an MNIST-1D MLP through
``descentlab race``, shows up in the report, and draws a path in a landscape picture — by import path,
with nothing registered by hand."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from matplotlib import image

from descentlab.cli import main
from descentlab.landscape import run

RULE_SOURCE = textwrap.dedent('''
    from descentlab.optim import define_rule

    @define_rule(hypers={"lr": 0.01, "beta": 0.9}, buffers=["velocity"])
    def heavy_ball(param, grad, state, *, step, lr, beta):
        """Polyak's heavy ball: v <- beta*v + g; w <- w - lr*v."""
        velocity = state["velocity"].mul(beta).add(grad)
        return param.add(velocity, alpha=-lr), {"velocity": velocity}
''')
RULE = "e2e_user_rules:heavy_ball"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    assert len(RULE_SOURCE.strip().splitlines()) < 15
    (tmp_path / "e2e_user_rules.py").write_text(RULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield RULE
    sys.modules.pop("e2e_user_rules", None)


def test_user_rule_races_on_mnist1d_and_appears_in_the_report(tmp_path, user_module):
    out = tmp_path / "race"
    args = ["race", "--optimizers", f"sgd,{user_module}", "--lrs", "0.01,0.1", "--seeds", "2", "--epochs", "3",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["optimizer"] == user_module]
    # the grid, plus a step beyond whichever edge won (race v3 extends a grid whose winner sits on its edge)
    assert {0.01, 0.1} <= {r["lr"] for r in mine if r["phase"] == "tune"} <= {0.001, 0.01, 0.1, 1.0, 10.0}
    finals = [r for r in mine if r["selected"]]
    assert len(finals) == 2 and all(r["status"] == "ok" for r in finals)
    assert all(r["test_acc"] > 0.2 for r in finals), [r["test_acc"] for r in finals]  # chance is 0.1
    html = (out / "report.html").read_text()
    assert html.count(user_module) >= 2  # summary table and elsewhere


def test_user_rule_draws_a_path_on_a_landscape(tmp_path, user_module):
    result = run("bowl", ["gd", user_module], steps=80, lrs={user_module: 0.3})
    path = result.trajectories[user_module]
    assert path.diverged_at is None
    assert path.losses[-1] < 1e-2 * path.losses[0]
    picture = tmp_path / "bowl.png"
    assert main(["landscape", "--surface", "bowl", "--optimizers", f"gd,{user_module}", "--steps", "40",
                 "--out", str(picture), "--dpi", "50"]) == 0
    pixels = image.imread(picture)
    assert pixels.ndim == 3 and float(np.var(pixels)) > 1e-3
