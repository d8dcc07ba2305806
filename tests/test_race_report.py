"""The report's words and page from hand-made rows: recommendation rules, table notes, escaping."""

from __future__ import annotations

import dataclasses

from descentlab.racing.protocol import make_config
from descentlab.racing.record import FINAL, RunRecord
from descentlab.racing.summary import summarize
from descentlab.report import build_html
from descentlab.report.recommend import recommendation
from descentlab.report.table import format_table, ranking_sentence
from race_records import record


def rows_for(results: dict[str, list[float | None]], lr: float = 0.1, schedule: str = "constant") -> list[RunRecord]:
    """Tuning records at ``lr`` and one final record per given test accuracy (None: that seed diverged)."""
    history = [{"epoch": 0.0, "wall_s": 0.0, "val_acc": 0.1, "val_loss": 2.0},
               {"epoch": 1.0, "wall_s": 1.0, "val_acc": 0.9, "val_loss": 0.5}]
    rows = []
    for opt, accs in results.items():
        rows.append(record(lr, 0.5, 0.9, optimizer=opt, schedule=schedule))
        rows.append(record(1.0, None, None, status="diverged", optimizer=opt, schedule=schedule))
        for seed, acc in enumerate(accs):
            rows.append(record(lr, 0.5 if acc else None, 0.9 if acc else None, optimizer=opt, schedule=schedule,
                               phase=FINAL, seed=seed, status="ok" if acc is not None else "diverged",
                               test_acc=acc, test_loss=1 - acc if acc else None, steps=10, wall_s=1.0,
                               history=history if acc else [], versions={"torch": "2.x"},
                               machine={"cpu": "<i>x</i>"}))
    return rows


def config_for(names: str, seeds: int = 3, schedules: str = "constant"):
    return make_config(optimizers=names, lrs="0.1,1", seeds=seeds, epochs=1, schedules=schedules)


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
    rows += [record(lr, None, None, status="diverged") for lr in (0.1, 1.0)]
    summary = summarize(config, rows)
    assert "adam" in format_table(summary) and "all lrs diverged" in format_table(summary)
    assert any("adam: every learning rate of the grid diverged" in w for w in recommendation(summary, epochs=1))


def test_a_selected_lr_that_diverged_on_some_seeds_shows_how_many_finished():
    summary = summarize(config_for("sgd"), rows_for({"sgd": [0.8, None, 0.9]}))
    assert summary.arms[0].test_acc.n == 2
    assert "(2/3 seeds ok)" in format_table(summary)


def test_text_from_data_is_escaped():
    config = dataclasses.replace(config_for("sgd"), task="<b>mine</b>")
    rows = rows_for({"sgd": [0.8, 0.9, 0.85]})
    page = build_html(config, rows, summarize(config, rows))
    assert "<b>mine</b>" not in page and "&lt;b&gt;mine&lt;/b&gt;" in page and "&lt;i&gt;x&lt;/i&gt;" in page
    assert page.count('<img class="plot"') == 3  # no GD vs SGD pair in this race


def test_seconds_read_the_same_in_the_table_and_the_recommendation():
    rows = rows_for({"sgd": [0.8, 0.8, 0.8], "gd": [0.7, 0.7, 0.7]})
    for r in rows:
        r.history = [{**entry, "wall_s": 150.0 * entry["epoch"] + 3.0} for entry in r.history]
        if r.phase == FINAL:
            r.wall_s = 153.0
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
        if r.optimizer != "gd" and r.history:
            r.history = [{**e, "val_acc": 0.3} for e in r.history]
        if r.optimizer == "gd" and r.phase == FINAL:
            r.best_val_acc = 0.99
    summary = summarize(config_for("gd,sgd,adam"), rows)
    summary.arms = [s for s in summary.arms if s.optimizer != "gd"]  # the tie between the other two
    assert not any(s.reached_target for s in summary.arms)
    tie = recommendation(summary, epochs=1)[1]
    assert "tied" in tie and "sooner" not in tie and "neither reached the target" in tie


def test_the_report_says_whether_a_schedule_changed_the_ranking():
    config = config_for("sgd,adam", schedules="constant,cosine")
    same = rows_for({"sgd": [0.80, 0.81, 0.79], "adam": [0.90, 0.91, 0.89]}) + \
        rows_for({"sgd": [0.70, 0.71, 0.69], "adam": [0.85, 0.86, 0.84]}, schedule="cosine")
    summary = summarize(config, same)
    assert not summary.ranking_changed()
    assert ranking_sentence(summary).startswith("the schedule did not change the ranking")
    flipped = rows_for({"sgd": [0.80, 0.81, 0.79], "adam": [0.90, 0.91, 0.89]}) + \
        rows_for({"sgd": [0.95, 0.96, 0.94], "adam": [0.85, 0.86, 0.84]}, schedule="cosine")
    summary = summarize(config, flipped)
    assert summary.ranking_by_schedule() == {"constant": ["adam", "sgd"], "cosine": ["sgd", "adam"]}
    page = build_html(config, flipped, summary)
    assert "The schedule changed the ranking" in page and "cosine: sgd &gt; adam" in page
    assert "sgd / cosine" in format_table(summary)
    assert recommendation(summary, epochs=1)[0].startswith("Use sgd and the cosine schedule with lr 0.1")
