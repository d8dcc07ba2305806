"""The study's claim test (issue 25): claim.json's schema, the paired-interval verdicts (a still-improving
Adam is never ``behind``), ``--quick`` states no verdict, the plateau rule doubles a budget where the tuned
best was still improving, and the report layer does not import the study layer."""

from __future__ import annotations

import ast
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from descentlab.cli import main
from descentlab.racing.summary import Stat
from descentlab.study import run, run_study, settle, verdict
from descentlab.study.analysis import Entry, WorkloadView
from descentlab.study.verdict import ClaimEntry

SRC = Path(__file__).parents[1] / "src" / "descentlab"
ENTRY_KEYS = {"workload", "lr", "budget_epochs", "within_tolerance", "gap", "still_improving", "verdict"}


def _entry(label: str, tuned: bool, per_seed: dict[int, float], lr: float = 0.1, improving: int = 0,
           multiple: int = 1, epochs: int = 10, tuning_epochs: float = 0.0) -> Entry:
    values = list(per_seed.values())
    return Entry(label=label, optimizer=label.split()[0], tuned=tuned, lr=lr, test=Stat.of(values),
                 best_val=Stat.of(values), steps_to_target=10.0, seconds_to_target=1.0, reached=len(values),
                 seeds=len(values), improving=improving, budget_epochs=epochs * multiple, multiple=multiple,
                 tuning_epochs=tuning_epochs, per_seed=dict(per_seed))


def _view(name: str, best: dict[int, float], adam: dict[int, float], classification: bool = True,
          improving: int = 0, multiple: int = 1) -> WorkloadView:
    return WorkloadView(name, classification, 0.5, 10, [
        _entry("sgd", True, best, tuning_epochs=90.0),
        _entry("adam lr=0.001 (untuned)", False, adam, lr=1e-3, improving=improving, multiple=multiple)])


# ---- verdicts on hand-made numbers -------------------------------------------------------------------------

def test_within_needs_the_whole_interval_inside_the_tolerance_and_behind_the_whole_interval_beyond_it():
    best = {0: 0.900, 1: 0.910, 2: 0.905}
    close = verdict.judge(*_pair(best, {0: 0.898, 1: 0.907, 2: 0.902}))
    assert close.verdict == "within" and close.within_tolerance and close.gap_high <= 1.0
    far = verdict.judge(*_pair(best, {0: 0.80, 1: 0.81, 2: 0.805}))
    assert far.verdict == "behind" and far.gap == pytest.approx(10.0) and far.gap_low > 1.0
    # mean gap 1 point, but seeds disagree: the interval straddles the tolerance
    noisy = verdict.judge(*_pair(best, {0: 0.90, 1: 0.88, 2: 0.905}))
    assert noisy.verdict == "undecided" and noisy.gap_low < 1.0 < noisy.gap_high
    # one seed: no interval, so neither within nor behind however large the gap
    single = verdict.judge(*_pair({0: 0.9}, {0: 0.5}))
    assert single.verdict == "undecided" and single.gap_high == math.inf and single.paired_seeds == 1


def _pair(best: dict[int, float], adam: dict[int, float], classification: bool = True,
          improving: int = 0) -> tuple[WorkloadView, Entry]:
    v = _view("w", best, adam, classification, improving)
    return v, v.untuned()[0]


def test_regression_is_judged_on_the_paired_log_ratio_of_test_losses():
    best = {0: 0.010, 1: 0.020, 2: 0.015}
    within = verdict.judge(*_pair(best, {0: 0.0102, 1: 0.0205, 2: 0.0152}, classification=False))
    assert within.verdict == "within" and within.gap_high <= 1.1
    assert within.gap == pytest.approx((1.02 * 1.025 * (0.0152 / 0.015)) ** (1 / 3))  # geometric mean ratio
    # 3x the loss on every seed (even though the seeds' losses differ 2x): behind, with a tight interval
    behind = verdict.judge(*_pair(best, {s: 3 * v for s, v in best.items()}, classification=False))
    assert behind.verdict == "behind" and behind.gap == pytest.approx(3.0)
    assert behind.gap_low == pytest.approx(3.0) and behind.gap_high == pytest.approx(3.0)


def test_an_entry_still_improving_is_never_behind():
    best = {0: 0.90, 1: 0.91, 2: 0.92}
    adam = {0: 0.50, 1: 0.52, 2: 0.51}
    assert verdict.judge(*_pair(best, adam)).verdict == "behind"
    improving = verdict.judge(*_pair(best, adam, improving=1))
    assert improving.verdict == "undecided" and improving.still_improving


def _lost(best: dict[int, float], adam: dict[int, float], diverged: tuple[int, ...],
          improving: int = 0) -> ClaimEntry:
    """Untuned Adam finished the seeds of ``adam`` and diverged on ``diverged``."""
    view = _view("w", best, adam, improving=improving)
    view.entries[1] = replace(view.entries[1], unfinished_seeds=diverged, seeds=len(adam) + len(diverged))
    return verdict.judge(view, view.entries[1])


def test_a_seed_untuned_adam_diverged_on_counts_against_it_and_is_never_dropped():
    best = {0: 0.90, 1: 0.91, 2: 0.92}
    # matched the tuned best on two seeds, diverged on the third: never within (the red team's case)
    one = _lost(best, {0: 0.90, 1: 0.91}, (2,))
    assert one.verdict == "undecided" and not one.within_tolerance
    assert one.adam_unfinished == 1 and one.paired_seeds == 2
    # diverged on two of the three seeds the tuned best finished: behind there at any budget, so behind even
    # while its one finished seed is still improving
    most = _lost(best, {0: 0.90}, (1, 2), improving=1)
    assert most.verdict == "behind" and most.still_improving and most.adam_unfinished == 2
    every = _lost(best, {}, (0, 1, 2))
    assert every.verdict == "behind" and every.paired_seeds == 0
    # a seed the tuned best did not finish either is not lost to it, but still no within
    shared = _lost({0: 0.90, 1: 0.91}, {0: 0.90, 1: 0.91}, (2,))
    assert shared.verdict == "undecided"
    assert verdict.judge(*_pair(best, {0: 0.90, 1: 0.91, 2: 0.92})).verdict == "within"


@settings(max_examples=200, deadline=None)
@given(best=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
       adam=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
       classification=st.booleans(), improving=st.integers(0, 3))
def test_no_entry_still_improving_is_behind_whatever_the_numbers(best, adam, classification, improving):
    b = {s: v + (0.0 if classification else 1e-3) for s, v in enumerate(best)}
    a = {s: v + (0.0 if classification else 1e-3) for s, v in enumerate(adam)}
    entry = verdict.judge(*_pair(b, a, classification, improving))
    assert entry.verdict in verdict.VERDICTS
    assert entry.still_improving == (improving > 0)
    if improving:
        assert entry.verdict != "behind"
    assert (entry.verdict == "within") == entry.within_tolerance


def _with_x4(views: list[WorkloadView], x4: dict[str, dict[int, float]]) -> list[WorkloadView]:
    best = {0: 0.90, 1: 0.91, 2: 0.92}
    return [WorkloadView(v.name, True, 0.5, 10, v.entries + (_view(v.name, best, x4[v.name], multiple=4).untuned()
                                                              if v.name in x4 else [])) for v in views]


def test_the_overall_verdict_counts_workloads_at_equal_budget_and_at_equal_compute():
    best = {0: 0.90, 1: 0.91, 2: 0.92}
    a, b = {0: 0.70, 1: 0.71, 2: 0.72}, {0: 0.60, 1: 0.62, 2: 0.61}
    views = [_view("a", best, a), _view("b", best, b), _view("c", best, {0: 0.90, 1: 0.91, 2: 0.92})]
    budgets = [{"workload": v.name, "epochs": 10} for v in views]
    # x4 no better than x1 on a and b: behind at both budgets; c has no x4, its x1 counts at equal compute
    flat = verdict.build(_with_x4(views, {"a": a, "b": b}), budgets, demo=False).to_json()
    assert flat["overall"]["equal_budget"]["behind"] == 2 and flat["overall"]["equal_budget"]["within"] == 1
    assert flat["overall"]["equal_budget"]["verdict"] == "does not hold" and flat["verdict"] == "does not hold"
    assert flat["overall"]["equal_compute"]["budgets"] == {"a": 40, "b": 40, "c": 10}
    # x4 (40 epochs, less than the tuned best's 90 tuning epochs) within on a and b: at equal compute the
    # claim holds, and the x1 entries, which the x4 runs show were not done, are undecided, not behind
    late = {0: 0.90, 1: 0.91, 2: 0.915}
    claim = verdict.build(_with_x4(views, {"a": late, "b": late}), budgets, demo=False)
    data = claim.to_json()
    assert data["overall"]["equal_budget"]["undecided"] == 2 and data["overall"]["equal_budget"]["behind"] == 0
    assert data["overall"]["equal_compute"]["within"] == 3 and data["verdict"] == "holds"
    assert data["verdict_basis"] == "equal_compute"
    x1 = next(e for e in data["entries"] if e["workload"] == "a" and e["multiple"] == 1)
    assert x1["still_improving"] and x1["verdict"] == "undecided" and x1["gap_low"] > 1.0
    assert "at equal budget the claim is undecided" in claim.headline()
    assert "(x4 on 2, x1 on 1)" in claim.headline() and "at equal compute the claim holds" in claim.headline()


# ---- claim.json, end to end ---------------------------------------------------------------------------------

def test_claim_json_schema_and_a_demo_states_no_verdict(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["study", "--quick", "--workloads", "lstsq-linear@2", "--optimizers", "sgd", "--seeds", "2",
                 "--jobs", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "claim.json").read_text())
    assert {"entries", "verdict", "tolerance", "overall", "demo", "headline", "budgets"} <= set(data)
    assert data["tolerance"]["classification"]["max_gap"] == 1.0 and data["tolerance"]["regression"]["max_gap"] == 1.1
    assert len(data["entries"]) == 3 + 1  # 3 article lrs at x1, the headline lr at x4 too
    for e in data["entries"]:
        assert ENTRY_KEYS <= set(e)
        assert e["verdict"] in verdict.VERDICTS and isinstance(e["within_tolerance"], bool)
        assert isinstance(e["still_improving"], bool) and e["workload"] == "lstsq-linear"
        assert e["gap"] is None or isinstance(e["gap"], float)
    assert sorted((e["lr"], e["budget_epochs"]) for e in data["entries"]) == [
        (1e-4, 2), (5e-4, 2), (1e-3, 2), (1e-3, 8)]
    # a demo: no verdict anywhere, and it says so
    assert data["demo"] is True and data["verdict"] is None and data["overall"] is None
    assert {e["verdict"] for e in data["entries"]} == {"undecided"}
    assert "demo" in printed and "no verdict on the claim" in printed
    for word in ("does not hold", "mostly holds", "claim holds"):
        assert word not in printed
    page = (out / "report.html").read_text()
    assert "no verdict on the claim" in page and "does not hold" not in page


def test_the_plateau_rule_doubles_the_budget_while_the_tuned_best_still_improves(tmp_path):
    # least squares at 2 epochs: SGD's best lr is still far from its plateau, so the race runs again at 4, 8, ...
    result = run_study("lstsq-linear@2", optimizers="sgd", seeds=2, jobs=1, out=tmp_path / "s", progress=False,
                       report=False)
    data = result.workloads[0]
    tried = [t.epochs for t in data.tried]
    assert tried[0] == 2 and len(tried) >= 2 and tried == [2 * 2 ** i for i in range(len(tried))]
    assert not data.tried[0].settled
    assert data.tried[-1].settled or tried[-1] == 2 * 2 ** settle.MAX_DOUBLINGS
    assert all(not t.settled for t in data.tried[:-1])
    assert data.race.config.epochs == tried[-1] and len(data.earlier) == len(tried) - 1
    for epochs in tried[1:]:
        assert (tmp_path / "s" / "lstsq-linear" / f"race-e{epochs}" / "results.jsonl").exists()
    # before each doubling, the tuned best alone at twice the budget gained beyond the margin
    for step in data.tried[:-1]:
        assert step.extension_epochs == 2 * step.epochs and step.extension_gained is True
        assert settle.gained(step.extension_first_best_val, step.extension_best_val, False)
        assert (tmp_path / "s" / "lstsq-linear" / f"extend-e{2 * step.epochs}" / "results.jsonl").exists()
    # untuned Adam at the headline lr runs at x1 and x4
    assert sorted((lr, race.config.epochs) for (lr, _), race in data.claim.items()) == [
        (1e-4, tried[-1]), (5e-4, tried[-1]), (1e-3, tried[-1]), (1e-3, 4 * tried[-1])]
    claim = json.loads((tmp_path / "s" / "claim.json").read_text())
    assert [t["epochs"] for t in claim["budgets"][0]["tried"]] == tried
    assert [t["settled_by"] for t in claim["budgets"][0]["tried"][:-1]] == [None] * (len(tried) - 1)
    assert {e["budget_epochs"] for e in claim["entries"]} == {tried[-1], 4 * tried[-1]}
    assert claim["verdict"] in verdict.OVERALL


def test_an_extension_that_gains_nothing_settles_the_budget(tmp_path, monkeypatch):
    # validation saturates at 100 % on these blobs: the plateau rule is made to say "still improving" (as a
    # late noisy best would), so the tuned best alone is trained at twice the budget; it cannot gain, so the
    # budget stays and no race runs at twice it.
    monkeypatch.setattr(run, "settled", lambda histories, epochs, classification: False)
    result = run_study("race_tasks:small_validation@4", optimizers="sgd", seeds=2, jobs=1, out=tmp_path / "s",
                       progress=False, report=False)
    data = result.workloads[0]
    step = data.tried[0]
    assert step.best_val == 1.0, "the task should saturate validation at 4 epochs"
    assert [t.epochs for t in data.tried] == [4] and not step.plateau
    assert step.extension_epochs == 8 and step.extension_gained is False and step.settled
    assert step.extension_first_best_val == step.extension_best_val == 1.0
    folder = tmp_path / "s" / "race_tasks_small_validation"
    assert (folder / "extend-e8" / "results.jsonl").exists() and not (folder / "race-e8").exists()
    extension = data.extensions[0]
    assert {(r.optimizer, r.lr, r.epochs) for r in extension.records} == {("sgd", step.lr, 8)}
    assert sorted({r.seed for r in extension.records}) == [0, 1]
    assert sorted(data.claim) == [(1e-4, 1), (5e-4, 1), (1e-3, 1), (1e-3, 4)]
    assert all(race.config.epochs == 4 * multiple for (_, multiple), race in data.claim.items())
    budgets = json.loads((tmp_path / "s" / "claim.json").read_text())["budgets"][0]
    assert budgets["settled"] is True and budgets["epochs"] == 4
    assert budgets["tried"][0]["settled_by"] == "extension" and budgets["tried"][0]["extension_gained"] is False


def test_continued_compares_each_run_with_its_own_first_part():
    climbing = _curve([0.1, 0.5, 0.6, 0.7, 0.8])  # epochs 0-4
    flat = _curve([0.1, 0.9, 0.9, 0.9, 0.9])
    assert settle.best_within(climbing, 2, True) == 0.6 and settle.best_within(climbing, math.inf, True) == 0.8
    first, whole = settle.continued([climbing, flat], 2, True)
    assert first == pytest.approx(0.75) and whole == pytest.approx(0.85) and settle.gained(first, whole, True)
    assert settle.continued([flat], 2, True) == (0.9, 0.9) and not settle.gained(0.9, 0.9, True)
    loss = _curve([2.0, 1.0, 0.5, 0.25], "val_loss")
    assert settle.continued([loss], 1, False) == (1.0, 0.25) and settle.gained(1.0, 0.25, False)
    assert settle.continued([[]], 1, True) == (None, None)


def test_gained_is_the_plateau_margin_on_means():
    assert settle.gained(0.90, 0.90 + settle.SETTLE_ACC * 1.5, True)
    assert not settle.gained(0.90, 0.90 + settle.SETTLE_ACC * 0.5, True) and not settle.gained(0.9, 0.8, True)
    assert settle.gained(1.0, 1.0 - settle.SETTLE_LOSS * 1.5, False)
    assert not settle.gained(1.0, 1.0 - settle.SETTLE_LOSS * 0.5, False) and not settle.gained(1.0, 1.2, False)
    assert not settle.gained(None, 0.5, True) and not settle.gained(0.5, float("nan"), True)


# ---- the plateau rule on hand-made curves -------------------------------------------------------------------

def _curve(values: list[float], key: str = "val_acc") -> list[dict]:
    return [{"epoch": float(i), key: v, "val_loss": 1.0 if key == "val_acc" else v} for i, v in enumerate(values)]


def test_still_improving_compares_the_last_quarter_with_the_rest_beyond_a_margin():
    flat = _curve([0.1, 0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])  # budget 8: last quarter = epochs 7, 8
    assert not settle.still_improving(flat, 8, True)
    climbing = _curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert settle.still_improving(climbing, 8, True)
    tiny = _curve([0.1, 0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 0.79, 0.804])  # +0.4 point: inside the margin, no trend
    assert not settle.still_improving(tiny, 8, True)
    # a slow steady fall, 0.3 % per epoch: within the 1 % margin, but the whole last quarter beats the rest
    slow = _curve([2.0 * 0.997 ** i for i in range(9)], "val_loss")
    assert settle.still_improving(slow, 8, False)
    noisy = _curve([0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.52, 0.497], "val_loss")  # a lucky last point, no trend
    assert not settle.still_improving(noisy, 8, False)
    loss = _curve([2.0, 1.0, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1], "val_loss")
    assert settle.still_improving(loss, 8, False)
    assert settle.still_improving(_curve([2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1005, 0.098], "val_loss"), 8, False)
    assert settle.settled([flat, tiny], 8, True) and not settle.settled([flat, climbing], 8, True)
    assert settle.next_budget(10, 10) == 20 and settle.next_budget(80, 10) is None


# ---- layers -------------------------------------------------------------------------------------------------

def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
            names += [f"{'.' * node.level}{node.module or ''}:{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_the_report_layer_does_not_import_the_study_layer_nor_html_private_helpers():
    for path in (SRC / "report").glob("*.py"):
        for name in _imports(path):
            assert "study." not in name.replace("study_", "") and not name.startswith("..study"), (path.name, name)
    for name in _imports(SRC / "report" / "study_page.py"):
        assert not name.startswith(".html"), name
        assert ":_" not in name, name
