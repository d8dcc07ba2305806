"""The report's words and page from hand-made rows: recommendation rules, table notes, escaping."""

from __future__ import annotations

import dataclasses

from descentlab.racing.protocol import make_config
from descentlab.racing.record import FINAL, RunRecord
from descentlab.racing.summary import summarize
from descentlab.report import build_html
from descentlab.report.recommend import recommendation
from descentlab.report.table import format_table, ranking_sentence
from race_records import drive, outcome_of, record


def rows_for(results: dict[str, list[float | None]], lr: float = 0.1, schedule: str = "constant") -> list[RunRecord]:
    """Tuning records selecting ``lr`` and one final record per given test accuracy (None: that seed diverged).

    v3: tuning is the grid (0.1, 1: 1 diverges), its extension beyond the winner's edge (0.01, worse) and the
    second tuning seed for the best of them (v2 had the grid on seed 0 only)."""
    history = [{"epoch": 0.0, "step": 0, "wall_s": 0.0, "val_acc": 0.1, "val_loss": 2.0},
               {"epoch": 1.0, "step": 10, "wall_s": 1.0, "val_acc": 0.9, "val_loss": 0.5}]
    rows = []
    tuning = outcome_of(lambda spec: {lr: (0.5, 0.9), lr / 10: (1.0, 0.6)}.get(spec.lr))
    for opt, accs in results.items():
        config = make_config(optimizers=opt, lrs=f"{lr},1", seeds=max(1, len(accs)), epochs=1, schedules=schedule)
        rows += [r for r in drive(config, tuning) if r.phase != FINAL]
        for seed, acc in enumerate(accs):
            # the validation score follows the test score: the winner is chosen on validation (v3)
            rows.append(record(lr, 0.5 if acc else None, acc, optimizer=opt, schedule=schedule,
                               batch_size=config.batch_sizes_for(opt)[0],
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
    # v3 states the winner's setting and a 95 % t interval over seeds (v2: mean ± std), and the gap to the
    # others paired by seed with its interval (v2: whether mean ± std ranges overlapped)
    assert words[0].startswith("Use adam with lr 0.1, batch 64") and "90.0% [87.5, 92.5] over 3 seed(s)" in words[0]
    assert "behind it on test beyond the seeds' noise" in words[1]
    assert "the nearest, sgd, by 10.0 [10.0, 10.0] points" in words[1]


def test_overlapping_results_are_called_a_tie():
    # v3 compares paired by seed: adam must not be ahead by the same margin on every seed (that is a clear
    # win, however close), so the seeds here disagree about which is better
    summary = summarize(config_for("sgd,adam"), rows_for({"sgd": [0.88, 0.92, 0.90], "adam": [0.89, 0.91, 0.93]}))
    words = recommendation(summary, epochs=1)
    assert words[0].startswith("Use adam") and "Cannot be told from adam" in words[1] and "sgd (" in words[1]
    assert summary.tied_with_best() == [summary.by_arm("sgd")]


def test_an_optimizer_with_every_lr_diverged_is_reported_not_dropped():
    config = config_for("sgd,adam")
    rows = rows_for({"sgd": [0.8, 0.8, 0.8]})
    rows += [record(lr, None, None, status="diverged") for lr in (0.1, 1.0)]
    summary = summarize(config, rows)
    assert "adam" in format_table(summary) and "all settings diverged" in format_table(summary)
    assert any("adam: all settings diverged, so it has no result; it is listed, not dropped" in w
               for w in recommendation(summary, epochs=1))


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
    # v3 words give the time to target as the quickest median in seconds (the table: steps, epoch, seconds)
    assert "steps, 153 s)" in table and "sgd's 153 s" in words and "took 153 s" in words


def test_with_one_seed_the_recommendation_claims_no_spread():
    summary = summarize(config_for("sgd,adam", seeds=1), rows_for({"sgd": [0.80], "adam": [0.90]}))
    words = recommendation(summary, epochs=1)
    assert words[0].startswith("Use adam") and "± " not in words[0]
    assert "no spread over seeds" in words[1] and "behind" not in " ".join(words) and "one finished seed" in words[1]


def test_a_tie_where_neither_reached_the_target_names_no_faster_one():
    rows = rows_for({"sgd": [0.88, 0.92, 0.90], "adam": [0.89, 0.91, 0.93]})
    for r in rows:  # best points set a target their own curves never reach
        if r.history:
            r.history = [{**e, "val_acc": 0.3} for e in r.history]
        if r.phase == FINAL:
            r.best_val_acc = 0.995 if r.optimizer == "adam" else 0.99  # adam stays the validation winner
    # v3 pairs every arm with the best when summarizing, so the tie is made here (v2 dropped a third arm, gd,
    # that had set the target, after summarizing)
    summary = summarize(config_for("sgd,adam"), rows)
    assert not any(s.reached_target for s in summary.arms)
    words = recommendation(summary, epochs=1)
    assert "Cannot be told from adam" in words[1]
    assert not any("Fewest epochs" in w or "got there first" in w for w in words)
    assert "Did not reach it on most seeds within 1 epochs: adam, sgd." in words


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


def test_a_gap_of_one_test_example_on_every_seed_is_a_tie_not_a_finding():
    """With identical per-seed gaps the t interval is a point; on a 40-example test split a gap of one example
    (2.5 points) on both seeds is all the split can resolve, so it is not "beyond the seeds' noise". The same
    runs on a 400-example split (one example = 0.25 points) are a clear gap."""
    rows = rows_for({"momentum": [0.950, 0.925], "adam": [0.975, 0.950]})
    small = dataclasses.replace(config_for("momentum,adam", seeds=2), binding={"n_train": 100, "n_val": 40,
                                                                                "n_test": 40})
    summary = summarize(small, rows)
    assert summary.best().optimizer == "adam"
    assert summary.tied_with_best() == [summary.by_arm("momentum")] and not summary.better_on_test()
    assert not any("beyond the seeds' noise" in w for w in recommendation(summary, epochs=1))
    large = dataclasses.replace(small, binding={"n_train": 100, "n_val": 40, "n_test": 400})
    assert summarize(large, rows).tied_with_best() == []


def test_a_tie_on_validation_says_per_arm_which_later_key_put_the_winner_first():
    """Three arms tie on validation; the winner reached the target as soon as one and had its best point
    earlier, and reached the target sooner than the other: each gets its own reason, not "its name"."""
    from descentlab.racing.summary import Stat
    from descentlab.report.recommend import _tie_break

    summary = summarize(config_for("sgd,adam,momentum"),
                        rows_for({"sgd": [0.9, 0.9, 0.9], "adam": [0.9, 0.9, 0.9], "momentum": [0.9, 0.9, 0.9]}))
    best, *_ = summary.ranked()
    others = [s for s in summary.ranked() if s is not best]
    assert {s.optimizer for s in summary.tied_on_validation(best)} == {s.optimizer for s in others}
    best = dataclasses.replace(best, best_epoch=Stat(1.0, 0.0, 3))
    same_time = dataclasses.replace(others[0], best_epoch=Stat(2.0, 0.0, 3))
    slower = dataclasses.replace(others[1], target_epochs={seed: 5.0 for seed in others[1].target_epochs})
    words = _tie_break(best, [same_time, slower], summary)
    assert f"before {same_time.optimizer} because its best point came earlier" in words
    assert f"before {slower.optimizer} because it reached the target in fewer epochs" in words


def test_a_race_still_running_with_one_seed_recorded_is_not_told_to_race_more_seeds():
    """The race asked for 3 seeds and has recorded one confirmation run per optimizer so far: the report says
    the race has not finished, not "race with --seeds 3 or more" to a user who did."""
    summary = summarize(config_for("sgd,adam", seeds=3), rows_for({"sgd": [0.8], "adam": [0.9]}))
    words = " ".join(recommendation(summary, epochs=1))
    assert "race with --seeds 3 or more" not in words
    assert "Only 1 of adam's 3 confirmation seeds has a finished run so far" in words
