"""The race protocol: the grid, selection (validation only, never test), option validation."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from descentlab.racing.protocol import DEFAULT_LRS, DEFAULT_OPTIMIZERS, make_config, select, select_lr
from descentlab.racing.record import FINAL, TUNE, RunSpec
from descentlab.racing.summary import summarize, time_to_target
from descentlab.report.table import format_table
from race_records import record as row


def test_default_grid_is_half_decades_from_1e_4_to_1_plus_the_articles_adam_values():
    assert len(DEFAULT_LRS) == 9
    assert DEFAULT_LRS[0] == pytest.approx(1e-4) and DEFAULT_LRS[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in itertools.pairwise(DEFAULT_LRS)]
    assert all(r == pytest.approx(math.sqrt(10), rel=1e-2) for r in ratios)
    config = make_config()
    assert config.optimizers == DEFAULT_OPTIMIZERS and config.seeds == (0, 1, 2) and config.batch_size == 64
    assert {1e-3, 5e-4, 1e-4} <= set(config.grid("adam"))
    assert len(config.grid("adam")) == 10 and len(config.grid("sgd")) == 9
    assert config.batch_size_for("gd") is None and config.batch_size_for("sgd") == 64
    tuning = config.tuning_runs()
    assert len(tuning) == 5 * 9 + 10 and all(spec.phase == TUNE and spec.seed == 0 for spec in tuning)
    assert config.schedules == ("constant",) and config.device == "cpu"
    finals = config.final_runs({("sgd", "constant"): 0.1, ("adam", "constant"): None})
    assert finals == [RunSpec(FINAL, "sgd", "constant", 0.1, s) for s in (0, 1, 2)]


def test_schedules_multiply_the_arms_and_each_arm_is_selected_on_its_own():
    config = make_config(optimizers="sgd,adam", lrs="0.01,0.1", schedules="constant,cosine", seeds=2)
    assert config.arms() == [("sgd", "constant"), ("sgd", "cosine"), ("adam", "constant"), ("adam", "cosine")]
    assert len(config.tuning_runs()) == 4 * 2
    records = [row(0.01, 0.5, 0.8, optimizer="sgd"), row(0.1, 0.5, 0.7, optimizer="sgd"),
               row(0.01, 0.5, 0.6, optimizer="sgd", schedule="cosine"),
               row(0.1, 0.5, 0.9, optimizer="sgd", schedule="cosine")]
    assert select(config, records) == {("sgd", "constant"): 0.01, ("sgd", "cosine"): 0.1, ("adam", "constant"): None,
                                       ("adam", "cosine"): None}
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_config(schedules="constant,linear")


def test_explicit_grid_is_exactly_what_the_user_gave():
    config = make_config(lrs="0.1, 0.01", optimizers="adam,sgd", seeds="3,7", epochs="2", batch_size="full")
    assert config.grid("adam") == (0.01, 0.1) and config.seeds == (3, 7) and config.epochs == 2
    assert config.batch_size is None


def test_selection_takes_the_best_points_highest_val_acc_then_lower_val_loss_then_smaller_lr():
    assert select_lr([row(1e-3, 0.9, 0.6), row(1e-2, 0.5, 0.7), row(1e-1, 0.7, 0.65)], True) == 1e-2
    assert select_lr([row(1e-3, 0.4, 0.7), row(1e-2, 0.5, 0.7)], True) == 1e-3
    assert select_lr([row(1e-2, 0.5, 0.7), row(1e-3, 0.5, 0.7)], True) == 1e-3
    assert select_lr([row(1e-3, 0.9, None), row(1e-2, 0.5, None)], False) == 1e-2  # regression: loss only


def test_selection_reads_the_best_point_not_the_last_one():
    """The issue's failure: lrs that learned and then overfit end with a worse *final* validation loss than
    an lr stuck at chance. The best point picks the one that learned."""
    learned = row(3.16e-3, val_loss=4.1, val_acc=0.55, best_val_loss=1.2, best_val_acc=0.64)
    stuck = row(0.1, val_loss=2.27, val_acc=0.186, best_val_loss=2.26, best_val_acc=0.19)
    assert select_lr([learned, stuck], True) == 3.16e-3


def test_selection_ignores_diverged_and_non_finite_and_reports_all_diverged_as_none():
    assert select_lr([row(1.0, 0.01, 0.9, status="diverged"), row(1e-2, float("nan")), row(1e-3, 2.0)], True) == 1e-3
    assert select_lr([row(1.0, None, status="diverged"), row(0.3, None, status="error")], True) is None


def test_selection_never_reads_test_metrics():
    rows = [row(1e-3, 0.9, test_acc=0.99, test_loss=0.01), row(1e-2, 0.5, test_acc=0.1, test_loss=9.0)]
    assert select_lr(rows, True) == 1e-2
    rows_without_test = [row(1e-3, 0.9), row(1e-2, 0.5)]
    assert select_lr(rows_without_test, True) == 1e-2
    config = make_config(optimizers="adam", lrs="1e-3,1e-2")
    final = row(1e-3, 0.1, 0.99, phase=FINAL)  # a final row must not change the choice
    assert select(config, [*rows, final]) == {("adam", "constant"): 1e-2}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizers": "adam,nope"}, "unknown optimizer 'nope'"),
    ({"optimizers": ""}, "at least one optimizer"),
    ({"optimizers": "adam,adam"}, "each name once"),
    ({"lrs": ""}, "grid is empty"),
    ({"lrs": "0.1,-1"}, "positive"),
    ({"lrs": "0.1,abc"}, "'abc' is not a number"),
    ({"epochs": -3}, "epochs must be a positive integer, got -3"),
    ({"epochs": "0"}, "epochs must be a positive integer"),
    ({"seeds": 0}, "a count must be in [1, 10000], got 0"),
    ({"seeds": 10_001}, "a count must be in [1, 10000], got 10001"),
    ({"seeds": [0, 2**64]}, "each seed must be in [0, 2**64 - 1], got 18446744073709551616"),
    ({"seeds": "1,1"}, "distinct"),
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": "big"}, "batch_size must be a positive integer, got 'big'"),
])
def test_bad_options_name_the_option_and_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_config(**kwargs)


def test_time_to_target_is_the_first_evaluation_meeting_it():
    history = [{"epoch": e, "wall_s": 0.5 * e, "val_acc": a} for e, a in enumerate([0.1, 0.5, 0.8, 0.7, 0.9])]
    assert time_to_target(history, "val_acc", 0.75) == (2.0, 1.0)
    assert time_to_target(history, "val_acc", 0.95) is None
    losses = [{"epoch": e, "wall_s": e, "val_loss": v} for e, v in enumerate([3.0, 1.0, 0.5])]
    assert time_to_target(losses, "val_loss", 0.9) == (2.0, 2.0)


def test_summary_counts_diverged_and_keeps_an_all_diverged_optimizer():
    config = make_config(optimizers="sgd,adam", lrs="0.1,1", seeds=2)
    hist = [{"epoch": 0, "wall_s": 0.0, "val_acc": 0.1}, {"epoch": 1, "wall_s": 1.0, "val_acc": 0.8}]
    rows = [
        row(0.1, 0.5, 0.8, optimizer="sgd"),
        row(1.0, None, None, status="diverged", optimizer="sgd"),
        row(0.1, None, None, status="diverged"),
        row(1.0, None, None, status="diverged"),
    ] + [row(0.1, 0.5, 0.8, optimizer="sgd", phase=FINAL, seed=s, test_acc=acc, test_loss=0.6, end_test_acc=0.5,
             steps=10, history=hist, best_is_last=s == 1) for s, acc in [(0, 0.7), (1, 0.9)]]
    summary = summarize(config, rows)
    sgd, adam = summary.arms
    assert sgd.selected_lr == 0.1 and sgd.diverged == 1 and sgd.test_acc.mean == pytest.approx(0.8)
    assert sgd.test_acc.std == pytest.approx(math.sqrt(0.02)) and sgd.reached_target == 2
    assert adam.all_diverged and adam.diverged == 2 and adam.grid_size == 2
    assert summary.ranked() == [sgd]
    assert sgd.end_test_acc.mean == 0.5 and sgd.best_is_last == 1 and sgd.best_epoch.mean == 1.0
    assert "(last in 1/2)" in format_table(summary) and "budget may be too short" in format_table(summary)


@pytest.mark.parametrize("kwargs", [
    {},
    {"seeds": 1},
    {"seeds": [5]},
    {"seeds": "3,7"},
    {"quick": True},
    {"optimizers": "sgd,adam", "lrs": [0.0012345678, 0.1], "batch_size": "full", "epochs": 2},
    {"optimizers": "sgd", "lrs": [1 / 3]},
    {"schedules": "warmup-cosine,constant"},
])
def test_the_reproduce_command_rebuilds_the_same_config(kwargs):
    """The report's command, parsed by the CLI, gives exactly the race's config (else rerunning it to
    resume would be refused as "another race")."""
    import shlex

    from descentlab.cli import build_parser
    from descentlab.report.reproduce import reproduce_command

    config = make_config(**kwargs)
    words = shlex.split(reproduce_command(config))
    assert words[:2] == ["descentlab", "race"]
    args = build_parser().parse_args([*words[1:], "--out", "runs/a b"])
    again = make_config(task=args.task, model=args.model, optimizers=args.optimizers, lrs=args.lrs, seeds=args.seeds,
                        epochs=args.epochs, batch_size=args.batch_size, quick=args.quick, schedules=args.schedules,
                        device=args.device)
    assert again.to_json() == config.to_json()


def test_summary_of_a_race_in_progress_does_not_call_unfinished_optimizers_diverged():
    """The summary is rebuilt from results.jsonl at any time: an optimizer tuned but not yet rerun
    on its seeds has a selected lr; one not started has no runs; neither 'diverged at every lr'."""
    config = make_config(optimizers="sgd,adam,momentum", lrs="0.1,1", seeds=2)
    rows = [row(0.1, 0.5, optimizer="sgd"), row(1.0, None, status="diverged", optimizer="sgd"),
            row(0.1, None, status="diverged"), row(1.0, None, status="error")]
    summary = summarize(config, rows)
    sgd, adam, momentum = summary.arms
    assert sgd.selected_lr == 0.1 and not sgd.all_diverged and sgd.seeds == 0
    assert adam.all_diverged and momentum.all_diverged and momentum.grid_size == 0
    table = format_table(summary)
    line = {text.split()[0]: text for text in table.splitlines()[2:]}
    assert "diverged" not in line["sgd"].replace("1/2", "") and line["sgd"].split()[1] == "0.1"
    assert "all lrs diverged or failed" in line["adam"]
    assert "no runs yet" in line["momentum"]


def test_an_optimizer_whose_every_final_run_diverged_is_not_ranked_or_recommended():
    from descentlab.report.recommend import recommendation

    config = make_config(optimizers="sgd,adam", lrs="0.1", seeds=2)
    rows = [row(0.1, 0.5, optimizer="sgd"), row(0.1, 0.6)]
    rows += [row(0.1, None, None, status="diverged", optimizer="sgd", phase=FINAL, seed=s) for s in (0, 1)]
    summary = summarize(config, rows)
    assert summary.ranked() == []
    words = recommendation(summary, epochs=1)
    assert not any(w.startswith("Use sgd") for w in words) and "nothing to recommend" in words[0]
    rows += [row(0.1, 0.6, phase=FINAL, seed=s, test_acc=0.7, test_loss=0.9) for s in (0, 1)]
    summary = summarize(config, rows)
    assert [s.optimizer for s in summary.ranked()] == ["adam"]
    assert recommendation(summary, epochs=1)[0].startswith("Use adam")


def test_a_zero_target_still_measures_time_to_target():
    """Regression that fits exactly: the best final validation loss is 0, so the target is 0 (falsy)."""
    config = make_config(optimizers="sgd", lrs="0.1", seeds=1)
    history = [{"epoch": 0.0, "wall_s": 0.0, "val_loss": 1.0}, {"epoch": 1.0, "wall_s": 0.5, "val_loss": 0.0}]
    rows = [row(0.1, 0.0, val_acc=None, optimizer="sgd"),
            row(0.1, 0.0, val_acc=None, optimizer="sgd", phase=FINAL, test_loss=0.0, history=history)]
    summary = summarize(config, rows)
    assert summary.metric == "val_loss" and summary.target == 0.0
    assert summary.arms[0].reached_target == 1 and summary.arms[0].target_epoch.mean == 1.0
