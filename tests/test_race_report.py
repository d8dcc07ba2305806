"""The report's words and page from hand-made rows: recommendation rules, table notes, escaping."""

from __future__ import annotations

from descentlab.race.protocol import FINAL, TUNE, make_config
from descentlab.race.summary import format_table, summarize
from descentlab.report import build_html
from descentlab.report.recommend import recommendation


def rows_for(results: dict[str, list[float | None]], lr: float = 0.1) -> list[dict]:
    """Tuning rows at ``lr`` and one final row per given test accuracy (None: that seed diverged)."""
    history = [{"epoch": 0.0, "wall_s": 0.0, "val_acc": 0.1, "val_loss": 2.0},
               {"epoch": 1.0, "wall_s": 1.0, "val_acc": 0.9, "val_loss": 0.5}]
    rows = []
    for opt, accs in results.items():
        rows.append({"phase": TUNE, "optimizer": opt, "lr": lr, "seed": 0, "status": "ok", "val_loss": 0.5,
                     "val_acc": 0.9})
        rows.append({"phase": TUNE, "optimizer": opt, "lr": 1.0, "seed": 0, "status": "diverged", "val_loss": None,
                     "val_acc": None})
        for seed, acc in enumerate(accs):
            rows.append({"phase": FINAL, "optimizer": opt, "lr": lr, "seed": seed,
                         "status": "ok" if acc is not None else "diverged", "val_loss": 0.5 if acc else None,
                         "val_acc": 0.9 if acc else None, "test_acc": acc, "test_loss": 1 - acc if acc else None,
                         "steps": 10, "wall_s": 1.0, "history": history if acc else []})
    return rows


def config_for(names: str, seeds: int = 3) -> dict:
    return make_config(optimizers=names, lrs="0.1,1", seeds=seeds, epochs=1).to_json()


def test_a_clear_winner_is_named_with_its_margin():
    summary = summarize(config_for("sgd,adam"), rows_for({"sgd": [0.80, 0.81, 0.79], "adam": [0.90, 0.91, 0.89]}))
    words = recommendation(summary, epochs=1)
    assert words[0].startswith("Use adam with lr 0.1") and "90.0% ± 1.0" in words[0]
    assert "sgd" in words[1] and "10.0 points behind" in words[1] and "do not overlap" in words[1]


def test_overlapping_results_are_called_a_tie():
    summary = summarize(config_for("sgd,adam"), rows_for({"sgd": [0.88, 0.90, 0.92], "adam": [0.89, 0.91, 0.93]}))
    words = recommendation(summary, epochs=1)
    assert words[0].startswith("Use adam") and "tied" in words[1]


def test_an_optimizer_with_every_lr_diverged_is_reported_not_dropped():
    config = config_for("sgd,adam")
    rows = rows_for({"sgd": [0.8, 0.8, 0.8]})
    rows += [{"phase": TUNE, "optimizer": "adam", "lr": lr, "seed": 0, "status": "diverged", "val_loss": None}
             for lr in (0.1, 1.0)]
    summary = summarize(config, rows)
    assert "adam" in format_table(summary) and "all lrs diverged" in format_table(summary)
    assert any("adam: every learning rate of the grid diverged" in w for w in recommendation(summary, epochs=1))


def test_a_selected_lr_that_diverged_on_some_seeds_shows_how_many_finished():
    summary = summarize(config_for("sgd"), rows_for({"sgd": [0.8, None, 0.9]}))
    assert summary.optimizers[0].test_acc.n == 2
    assert "(2/3 seeds ok)" in format_table(summary)


def test_text_from_data_is_escaped():
    config = {**config_for("sgd"), "task": "<b>mine</b>"}
    page = build_html(config, rows_for({"sgd": [0.8, 0.9, 0.85]}), summarize(config, rows_for(
        {"sgd": [0.8, 0.9, 0.85]})), {"cpu": "<i>x</i>"}, "descentlab race --out 'a b'")
    assert "<b>mine</b>" not in page and "&lt;b&gt;mine&lt;/b&gt;" in page and "&lt;i&gt;x&lt;/i&gt;" in page
    assert page.count('<img class="plot"') == 3  # no GD vs SGD pair in this race


def test_seconds_read_the_same_in_the_table_and_the_recommendation():
    rows = rows_for({"sgd": [0.8, 0.8, 0.8], "gd": [0.7, 0.7, 0.7]})
    for r in rows:
        for entry in r.get("history") or []:
            entry["wall_s"] = 150.0 * entry["epoch"] + 3.0
        if r["phase"] == FINAL:
            r["wall_s"] = 153.0
    summary = summarize(config_for("gd,sgd"), rows)
    table, words = format_table(summary), " ".join(recommendation(summary, epochs=1, gd_sgd=("gd", "sgd"), rows=rows))
    assert "e+0" not in table and "e+0" not in words
    assert "153 s" in table and "epoch 1, 153 s" in words and "took 153 s" in words


def test_with_one_seed_the_recommendation_claims_no_spread():
    summary = summarize(config_for("sgd,adam", seeds=1), rows_for({"sgd": [0.80], "adam": [0.90]}))
    words = recommendation(summary, epochs=1)
    assert words[0].startswith("Use adam") and "± " not in words[0]
    assert "10.0 points behind" in words[1] and "overlap" not in words[1] and "one seed" in words[1]


def test_a_tie_where_neither_reached_the_target_names_no_faster_one():
    rows = rows_for({"sgd": [0.88, 0.90, 0.92], "adam": [0.89, 0.91, 0.93], "gd": [0.99, 0.99, 0.99]})
    for r in rows:  # gd's curve sets a target the other two never reach
        if r["optimizer"] != "gd" and r.get("history"):
            r["history"] = [{**e, "val_acc": 0.3} for e in r["history"]]
        if r["optimizer"] == "gd" and r["phase"] == FINAL:
            r["val_acc"] = 0.99
    summary = summarize(config_for("gd,sgd,adam"), rows)
    summary.optimizers = [s for s in summary.optimizers if s.optimizer != "gd"]  # the tie between the other two
    assert not any(s.reached_target for s in summary.optimizers)
    tie = recommendation(summary, epochs=1)[1]
    assert "tied" in tie and "sooner" not in tie and "neither reached the target" in tie
