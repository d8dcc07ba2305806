"""The race protocol: the grid, selection (validation only, never test), option validation."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from descentlab.racing.protocol import DEFAULT_LRS, DEFAULT_OPTIMIZERS, make_config
from descentlab.racing.record import FINAL, TUNE, RunSpec, Setting
from descentlab.racing.stages import plan_arm, select
from descentlab.racing.summary import summarize, time_to_target
from descentlab.report.table import format_table
from race_records import drive, outcome_of
from race_records import record as row

ADAM = ("adam", "constant")


def chosen(config, table, records=(), arm=ADAM):
    """The lr the stages select for ``arm`` when every run of lr ``x`` scores ``table[x]`` = (best val loss,
    best val acc) on every seed (an lr not in ``table`` diverges); ``records`` are made first, as given."""
    records = drive(config, outcome_of(lambda spec: table.get(spec.lr)), list(records))
    selection = select(config, records)[arm]
    assert selection is not None, "tuning finished, so the arm has a selection"
    return selection.chosen.lr if selection.chosen is not None else None


def test_default_grid_is_half_decades_from_1e_4_to_1_plus_the_articles_adam_values():
    assert len(DEFAULT_LRS) == 9
    assert DEFAULT_LRS[0] == pytest.approx(1e-4) and DEFAULT_LRS[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in itertools.pairwise(DEFAULT_LRS)]
    assert all(r == pytest.approx(math.sqrt(10), rel=1e-2) for r in ratios)
    config = make_config()
    assert config.optimizers == DEFAULT_OPTIMIZERS and config.seeds == (0, 1, 2) and config.batch_sizes == (64,)
    assert {1e-3, 5e-4, 1e-4} <= set(config.grid("adam"))
    assert len(config.grid("adam")) == 10 and len(config.grid("sgd")) == 9
    assert config.batch_sizes_for("gd") == (None,) and config.batch_sizes_for("sgd") == (64,)
    # v3: the first stage is the grid on the first tuning seed (v2 tuned on seed 0 only; v3 tunes on two
    # seeds, the second by successive halving, and stops tuning runs early)
    assert config.tuning_seed_list() == (0, 1) and config.patience == 15
    tuning = [spec for arm in config.arms() for spec in plan_arm(config, arm, []).next_runs]
    assert len(tuning) == 5 * 9 + 10 and all(spec.phase == TUNE and spec.seed == 0 for spec in tuning)
    assert {spec.batch_size for spec in tuning if spec.optimizer == "gd"} == {None}
    assert {spec.batch_size for spec in tuning if spec.optimizer != "gd"} == {64}
    assert config.schedules == ("constant",) and config.device == "cpu"
    finals = config.final_runs({("sgd", "constant"): Setting(0.1, 64), ADAM: None})
    assert finals == [RunSpec(FINAL, "sgd", "constant", 0.1, s, 64) for s in (0, 1, 2)]


def test_schedules_multiply_the_arms_and_each_arm_is_selected_on_its_own():
    config = make_config(optimizers="sgd,adam", lrs="0.01,0.1", schedules="constant,cosine", seeds=2)
    assert config.arms() == [("sgd", "constant"), ("sgd", "cosine"), ("adam", "constant"), ("adam", "cosine")]
    assert sum(len(plan_arm(config, arm, []).next_runs) for arm in config.arms()) == 4 * 2
    scores = {("sgd", "constant"): {0.01: 0.8, 0.1: 0.7, 0.001: 0.5}, ("sgd", "cosine"): {0.01: 0.6, 0.1: 0.9}}

    def score(spec):
        acc = scores.get(spec.arm, {}).get(spec.lr)
        return None if acc is None else (0.5, acc)  # adam diverges everywhere, so does sgd/cosine at lr 1

    records = drive(config, outcome_of(score))
    selections = select(config, records)
    assert {arm: s.chosen for arm, s in selections.items()} == {
        ("sgd", "constant"): Setting(0.01, 64), ("sgd", "cosine"): Setting(0.1, 64), ("adam", "constant"): None,
        ("adam", "cosine"): None}
    # each winner sat on an edge of its own grid, so its own grid grew there (v3's edge extension)
    assert selections[("sgd", "constant")].extended == (0.001,) and selections[("sgd", "cosine")].extended == (1.0,)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_config(schedules="constant,linear")


def test_explicit_grid_is_exactly_what_the_user_gave():
    config = make_config(lrs="0.1, 0.01", optimizers="adam,sgd", seeds="3,7", epochs="2", batch_size="full")
    assert config.grid("adam") == (0.01, 0.1) and config.seeds == (3, 7) and config.epochs == 2
    assert config.batch_sizes == (None,)
    assert make_config(batch_size="128,32,full").batch_sizes == (32, 128, None)


def test_selection_takes_the_best_points_highest_val_acc():
    config = make_config(optimizers="adam", lrs="1e-3,1e-2,1e-1", seeds=1)
    assert chosen(config, {1e-3: (0.9, 0.6), 1e-2: (0.5, 0.7), 1e-1: (0.7, 0.65)}) == 1e-2
    # regression (no accuracy): the lowest best validation loss; 1e-1 wins and extends its edge to 1 (diverged)
    assert chosen(config, {1e-3: (0.9, None), 1e-2: (0.7, None), 1e-1: (0.5, None)}) == 1e-1


def test_equal_accuracies_are_not_decided_by_the_validation_loss():
    """v2 broke an accuracy tie by the lower validation loss; v3 never does (on a saturated validation set the
    lowest loss is the most over-confident lr). Ties go to the lr whose neighbours do well, then to the
    middle of the tied plateau, then to the smaller lr."""
    config = make_config(optimizers="adam", lrs="1e-4,1e-3,1e-2,1e-1", seeds=1)
    # neighbours: 1e-3 sits next to 0.5 and 0.7 (mean 0.6), 1e-2 next to 0.7 and 0.6 (0.65); v2 took 1e-3
    assert chosen(config, {1e-4: (0.9, 0.5), 1e-3: (0.1, 0.7), 1e-2: (0.5, 0.7), 1e-1: (0.9, 0.6)}) == 1e-2
    # same neighbourhood, same distance from the plateau's middle: the smaller lr; v2 took 1e-2 (lower loss)
    assert chosen(config, {1e-4: (0.9, 0.7), 1e-3: (0.5, 0.9), 1e-2: (0.1, 0.9), 1e-1: (0.9, 0.7)}) == 1e-3
    # a saturated plateau (every lr at 100 %): its middle, not the edge with the lowest loss (v2's pick)
    config = make_config(optimizers="adam", lrs="1e-4,1e-3,1e-2,1e-1,1", seeds=1)
    table = {1e-4: (0.3, 1.0), 1e-3: (0.2, 1.0), 1e-2: (0.1, 1.0), 1e-1: (0.05, 1.0), 1.0: (0.01, 1.0)}
    assert chosen(config, table) == 1e-2
    records = drive(config, outcome_of(lambda spec: table.get(spec.lr)))
    selection = select(config, records)[ADAM]
    assert selection.saturated and selection.tied == 5 and selection.extended == ()


def test_selection_reads_the_best_point_not_the_last_one():
    """The issue's failure: lrs that learned and then overfit end with a worse *final* validation loss than
    an lr stuck at chance. The best point picks the one that learned."""
    config = make_config(optimizers="adam", lrs="3.16e-3,0.1", seeds=1)
    learned = row(3.16e-3, val_loss=4.1, val_acc=0.55, best_val_loss=1.2, best_val_acc=0.64)
    stuck = row(0.1, val_loss=2.27, val_acc=0.186, best_val_loss=2.26, best_val_acc=0.19)
    assert chosen(config, {}, [learned, stuck]) == 3.16e-3  # its edge extension (1e-4) diverged


def test_selection_ignores_diverged_and_non_finite_and_reports_all_diverged_as_none():
    config = make_config(optimizers="adam", lrs="1e-3,1e-2,1", seeds=1)
    rows = [row(1.0, 0.01, 0.9, status="diverged"), row(1e-2, float("nan"), float("nan")), row(1e-3, 2.0)]
    assert chosen(config, {}, rows) == 1e-3
    records = [row(1e-3, None, status="diverged"), row(1e-2, None, status="diverged"), row(1.0, None, status="error")]
    selection = select(config, records)[ADAM]
    assert selection is not None and selection.chosen is None  # tuning is over and nothing can be selected
    assert plan_arm(config, ADAM, records).next_runs == []


def test_selection_never_reads_test_metrics():
    config = make_config(optimizers="adam", lrs="1e-3,1e-2,1e-1", seeds=2)
    rows = [row(1e-3, 0.9, 0.6, test_acc=0.99, test_loss=0.01), row(1e-2, 0.5, 0.7, test_acc=0.1, test_loss=9.0),
            row(1e-1, 0.5, 0.65, test_acc=0.5, test_loss=1.0)]
    # the best two of the three (successive halving) also trained on the second tuning seed
    rows += [row(1e-2, 0.5, 0.7, seed=1, test_acc=0.1, test_loss=9.0),
             row(1e-1, 0.5, 0.65, seed=1, test_acc=0.9, test_loss=0.1)]
    assert plan_arm(config, ADAM, rows).next_runs == [config.spec(FINAL, ADAM, Setting(1e-2, 64), s) for s in (0, 1)]
    assert select(config, rows)[ADAM].chosen == Setting(1e-2, 64)
    stripped = [row(r.lr, r.best_val_loss, r.best_val_acc, seed=r.seed) for r in rows]
    assert select(config, stripped)[ADAM].chosen == Setting(1e-2, 64)
    final = row(1e-3, 0.1, 0.99, phase=FINAL, test_acc=1.0, test_loss=0.0)  # a final row must not change the choice
    assert select(config, [*rows, final])[ADAM].chosen == Setting(1e-2, 64)


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
    ({"batch_size": "32,32"}, "each batch size once"),
    ({"patience": -1}, "patience must be a positive integer, got -1"),
    ({"hp": ["lr=0.1"]}, "the learning rate has its own option"),
    ({"hp": ["weight_decay"]}, "expected NAME=V1,V2"),
    ({"hp": ["weight_decay=0,x"]}, "hp weight_decay: 'x' is not a number"),
    ({"optimizers": "sgd", "hp": ["betas=0.9:0.999"]}, "none of the raced optimizers (sgd) has a hyper-parameter"),
])
def test_bad_options_name_the_option_and_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_config(**kwargs)


def test_time_to_target_is_the_first_evaluation_meeting_it():
    # v3 also gives the step (exact on every machine): (epoch, seconds, step)
    history = [{"epoch": e, "step": 10 * e, "wall_s": 0.5 * e, "val_acc": a}
               for e, a in enumerate([0.1, 0.5, 0.8, 0.7, 0.9])]
    assert time_to_target(history, "val_acc", 0.75) == (2.0, 1.0, 20)
    assert time_to_target(history, "val_acc", 0.95) is None
    losses = [{"epoch": e, "step": 3 * e, "wall_s": e, "val_loss": v} for e, v in enumerate([3.0, 1.0, 0.5])]
    assert time_to_target(losses, "val_loss", 0.9) == (2.0, 2.0, 6)


def test_summary_counts_diverged_and_keeps_an_all_diverged_optimizer():
    config = make_config(optimizers="sgd,adam", lrs="0.1,1", seeds=2)
    hist = [{"epoch": 0, "step": 0, "wall_s": 0.0, "val_acc": 0.1}, {"epoch": 1, "step": 10, "wall_s": 1.0,
                                                                      "val_acc": 0.8}]
    test_acc = {0: 0.7, 1: 0.9}

    def outcome(spec):  # sgd learns at 0.1 (and a little at 0.01, the grid's extension), diverges at 1; adam never
        if spec.phase == FINAL:
            return row(spec.lr, 0.5, 0.8, optimizer=spec.optimizer, phase=FINAL, seed=spec.seed,
                       test_acc=test_acc[spec.seed], test_loss=0.6, end_test_acc=0.5, steps=10, history=hist,
                       best_is_last=spec.seed == 1)
        score = {0.1: (0.5, 0.8), 0.01: (0.7, 0.6)}.get(spec.lr) if spec.optimizer == "sgd" else None
        return outcome_of(lambda _: score)(spec)

    rows = drive(config, outcome)
    summary = summarize(config, rows)
    sgd, adam = summary.arms
    assert sgd.selected_lr == 0.1 and sgd.diverged == 1 and sgd.test_acc.mean == pytest.approx(0.8)
    assert sgd.test_acc.std == pytest.approx(math.sqrt(0.02)) and sgd.reached_target == 2
    assert adam.all_diverged and adam.diverged == 2 and adam.grid_size == 2
    assert adam.no_result_reason() == "all settings diverged"
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
    {"optimizers": "sgd,adam", "batch_size": "32,full,128", "epochs": 8},
    {"optimizers": "adam,momentum", "hp": ["weight_decay=0,0.0001", "betas=0.9:0.999,0.8:0.99"]},
    {"patience": 7},
    {"patience": "none"},
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
                        device=args.device, hp=args.hp, patience=args.patience)
    assert again.to_json() == config.to_json()


def test_summary_of_a_race_in_progress_does_not_call_unfinished_optimizers_diverged():
    """The summary is rebuilt from results.jsonl at any time: an optimizer tuned but not yet rerun
    on its seeds has a selected setting; one still tuning and one not started have none; none of them is
    'diverged at every lr'."""
    config = make_config(optimizers="sgd,adam,momentum,rmsprop", lrs="0.1,1", seeds=2)

    def score(spec):
        if spec.optimizer == "adam":
            return None
        return {0.1: (0.5, 0.5), 0.01: (0.6, 0.4)}.get(spec.lr)

    # v3: "tuned" takes the grid, its edge extension and the second tuning seed (not just the grid on seed 0)
    rows = [r for r in drive(config, outcome_of(score)) if r.phase != FINAL and r.optimizer in ("sgd", "adam")]
    rows = [r if not (r.optimizer == "adam" and r.lr == 1.0) else row(1.0, None, status="error") for r in rows]
    rows += [row(0.1, 0.5, optimizer="rmsprop")]  # rmsprop: the grid is not even finished
    summary = summarize(config, rows)
    sgd, adam, momentum, rmsprop = summary.arms
    assert sgd.selected_lr == 0.1 and not sgd.all_diverged and sgd.seeds == 0
    assert adam.all_diverged and momentum.all_diverged and momentum.grid_size == 0
    assert adam.no_result_reason() == "all settings diverged or failed"
    assert rmsprop.all_diverged and rmsprop.no_result_reason() == "tuning not finished"
    table = format_table(summary)
    line = {text.split()[0]: text for text in table.splitlines()[2:]}
    assert "diverged" not in line["sgd"].replace(f"{sgd.diverged}/{len(sgd.sensitivity)}", "")
    assert line["sgd"].split()[1:5] == ["lr", "0.1,", "batch", "64"]
    assert "all settings diverged or failed" in line["adam"]
    assert "no runs yet" in line["momentum"]
    assert "tuning not finished" in line["rmsprop"] and "diverged" not in line["rmsprop"].replace("0/1", "")


def test_an_optimizer_whose_every_final_run_diverged_is_not_ranked_or_recommended():
    from descentlab.report.recommend import recommendation

    config = make_config(optimizers="sgd,adam", lrs="0.1", seeds=2)
    # v3 tunes on two seeds: both arms are tuned (and their lr selected) only once seed 1 ran too
    rows = [row(0.1, 0.5, optimizer="sgd", seed=s) for s in (0, 1)] + [row(0.1, 0.6, seed=s) for s in (0, 1)]
    rows += [row(0.1, None, None, status="diverged", optimizer="sgd", phase=FINAL, seed=s) for s in (0, 1)]
    summary = summarize(config, rows)
    assert [s.selected_lr for s in summary.arms] == [0.1, 0.1]
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
