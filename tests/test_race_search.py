"""Race v3's search with a fake training engine (fast): the stages (grid, edge extension, successive
halving over seeds, confirmation), the search space (--hp, batch sizes), the saturation-proof tie rule."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest

from descentlab.racing import run_race
from descentlab.racing.protocol import make_config
from descentlab.racing.record import FINAL, TUNE
from descentlab.racing.stages import plan_arm
from descentlab.train import RunResult
from test_race_core import toy_task


def made_up(score: Callable[..., float | None], calls: list | None = None):
    """A run_fn whose best validation accuracy is ``score(optimizer=, lr=, seed=, batch_size=, **hypers)``
    (None: the run diverges); its validation loss falls as the score rises, except where the test says."""
    def run(task, *, model, optimizer, schedule, lr, batch_size, epochs, seed, evaluate_test, device,
            optimizer_options, patience):
        if calls is not None:
            calls.append((optimizer, lr, seed, batch_size, dict(optimizer_options), patience, evaluate_test))
        acc = score(optimizer=optimizer, lr=lr, seed=seed, batch_size=batch_size, **optimizer_options)
        loss = None if acc is None else (acc[1] if isinstance(acc, tuple) else 1.0 - acc)
        acc = acc[0] if isinstance(acc, tuple) else acc
        history = [{"step": 0, "epoch": 0.0, "wall_s": 0.0, "val_loss": 2.0, "val_acc": 0.1}]
        if acc is not None:
            history.append({"step": 10, "epoch": 1.0, "wall_s": 0.1, "val_loss": loss, "val_acc": acc})
        best = history[-1]
        return RunResult(status="ok" if acc is not None else "diverged", diverged_at_step=None if acc else 3,
                         diverge_reason=None, epochs=1.0, steps=10, examples=0, wall_s=0.1, train_loss=None,
                         val_loss=best["val_loss"], val_acc=best["val_acc"], best_step=best["step"],
                         best_epoch=best["epoch"], best_val_loss=best["val_loss"], best_val_acc=best["val_acc"],
                         best_is_last=True, test_loss=0.3 if evaluate_test else None,
                         test_acc=(acc or 0) - 0.01 * seed if evaluate_test else None, end_test_loss=None,
                         end_test_acc=None, schedule=schedule, device=device, history=history, config={})
    return run


def race(tmp_path, score, calls=None, **options):
    options = {"optimizers": "sgd", "lrs": "0.01,0.1,1", "seeds": 3, "epochs": 1, "jobs": 1, "progress": False,
               "out": tmp_path / "race", **options}
    return run_race(toy_task(), run_fn=made_up(score, calls), **options)


def test_grid_then_the_best_third_on_a_second_seed_then_the_winner_on_every_seed(tmp_path):
    calls: list = []
    lrs = [10 ** (k / 2) for k in range(-8, 1)]  # 9 lrs: the best ⌈9/3⌉ = 3 go on to seed 1
    result = race(tmp_path, lambda lr, seed, **_: 0.9 - abs(math.log10(lr) + 2) / 10 + 0.001 * seed, calls,
                  lrs=",".join(map(str, lrs)))
    tuning = [c for c in calls if not c[-1]]
    assert sorted(c[1] for c in tuning if c[2] == 0) == pytest.approx(sorted(lrs))
    assert sorted(c[1] for c in tuning if c[2] == 1) == pytest.approx([10 ** -2.5, 1e-2, 10 ** -1.5], rel=1e-2)
    assert not [c for c in tuning if c[2] == 2]  # the third seed is for confirmation only
    finals = [c for c in calls if c[-1]]
    assert [(c[1], c[2]) for c in finals] == [(0.01, 0), (0.01, 1), (0.01, 2)]
    assert all(c[5] is None for c in finals) and all(c[5] == 3 for c in tuning)  # early stopping: tuning only
    assert result.selected[("sgd", "constant")].lr == 0.01
    assert result.summary.arms[0].selection.seeds == (0, 1)


def test_a_winner_at_the_grid_edge_extends_the_grid_until_divergence_bounds_it(tmp_path):
    calls: list = []

    def score(lr, **_):  # better and better up to lr 3.16; lr 10 diverges
        return None if lr > 5 else 0.5 + 0.1 * math.log10(lr)
    result = race(tmp_path, score, calls, lrs="0.1,0.316,1")  # a step of √10 at the top edge
    selection = result.summary.arms[0].selection
    assert selection.chosen.lr == pytest.approx(3.16) and selection.extended == (3.16, 10.0)
    assert any("extended beyond its edge to 3.16, 10" in s and "interior, or next to a learning rate that diverged" in s
               for s in _sentences(result))


def test_extension_is_bounded_and_says_so(tmp_path):
    result = race(tmp_path, lambda lr, **_: min(0.99, 0.5 + 0.01 * math.log10(lr) + 0.3), lrs="0.001,0.01")
    selection = result.summary.arms[0].selection
    assert selection.extended == (0.1, 1.0) and selection.chosen.lr == 1.0  # two steps, then it stops
    assert any("still at the new edge" in s for s in _sentences(result))


def test_a_saturated_validation_set_never_picks_the_most_confident_setting(tmp_path):
    """Seven lrs tie at 100 % validation accuracy; the largest has the lowest validation loss (saturated,
    over-confident logits). v2 took it; v3 takes the middle of the plateau and says why."""
    lrs = [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0]

    def score(lr, **_):
        if lr < 5e-4:
            return (0.8, 0.5)
        return (1.0, 1e-3 / lr)  # the larger the lr, the lower (more saturated) the validation loss
    result = race(tmp_path, score, optimizers="adam", lrs=",".join(map(str, lrs)))
    selection = result.summary.arms[0].selection
    assert selection.saturated and selection.tied == 7
    assert selection.chosen.lr == pytest.approx(3.16e-2) or selection.chosen.lr == pytest.approx(1e-2)
    assert selection.chosen.lr != 1.0
    assert any("cannot tell them apart" in s and "middle of that plateau" in s for s in _sentences(result))


def test_hp_and_batch_sizes_are_searched_where_they_apply(tmp_path):
    calls: list = []

    def score(optimizer, lr, batch_size, momentum=0.0, **_):
        return 0.7 + 0.1 * momentum + (0.05 if batch_size == 32 else 0) - abs(math.log10(lr) + 1) / 10
    result = race(tmp_path, score, calls, optimizers="sgd,adam,gd", hp=["momentum=0,0.9"], batch_size="32,128",
                  lrs="0.01,0.1,1")
    config = result.config
    assert config.hp_names == {"sgd": ("momentum",), "gd": ("momentum",)}
    assert len(config.settings("sgd")) == 3 * 2 * 2 and len(config.settings("adam")) == 3 * 2
    assert len(config.settings("gd")) == 3 * 2  # GD is full batch whatever --batch-size says
    assert {c[3] for c in calls if c[0] == "gd"} == {None}
    assert {c[3] for c in calls if c[0] == "adam"} == {32, 128} and not any("momentum" in c[4] for c in calls
                                                                           if c[0] == "adam")
    chosen = result.selected[("sgd", "constant")]
    assert (chosen.lr, chosen.batch_size, chosen.hypers) == (0.1, 32, (("momentum", 0.9),))
    records = [r for r in result.records if r.optimizer == "sgd" and r.phase == FINAL]
    assert {r.hypers["momentum"] for r in records} == {0.9} and {r.batch_size for r in records} == {32}


@pytest.mark.parametrize(("hp", "message"), [
    (["nesterov_momentum=0.9"], "hp nesterov_momentum: none of the raced optimizers (sgd, adam) has"),
    (["weight_decay"], "expected NAME=V1,V2"),
    (["weight_decay=0,abc"], "hp weight_decay: 'abc' is not a number"),
    (["lr=0.1"], "the learning rate has its own option"),
    (["betas=0.9:0.99,0.9:0.99"], "each value once"),
])
def test_bad_hp_names_the_option_and_value(hp, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_config(optimizers="sgd,adam", hp=hp)


def test_pairs_and_flags_parse_as_the_optimizers_take_them():
    config = make_config(optimizers="adam", hp=["betas=0.9:0.999,0.8:0.99", "amsgrad=true,false"])
    assert config.hp == {"amsgrad": (True, False), "betas": ((0.9, 0.999), (0.8, 0.99))}
    assert (("amsgrad", True), ("betas", (0.8, 0.99))) in config.hypers_for("adam")


def test_the_plan_is_a_pure_function_of_the_records_so_a_resume_makes_only_what_is_missing(tmp_path):
    calls: list = []
    result = race(tmp_path, lambda lr, **_: 0.8 - abs(math.log10(lr) + 1) / 10, calls)
    config, arm = result.config, ("sgd", "constant")
    assert plan_arm(config, arm, result.records).done
    partial = [r for r in result.records if not (r.phase == TUNE and r.seed == 1)]
    todo = plan_arm(config, arm, partial).next_runs
    assert todo and all(s.phase == TUNE and s.seed == 1 for s in todo)
    calls.clear()
    again = race(tmp_path, lambda lr, **_: 0.8 - abs(math.log10(lr) + 1) / 10, calls)
    assert again.ran == 0 and calls == []


def test_a_partial_of_an_optimizer_class_races_by_module_attr(tmp_path):
    result = race(tmp_path, lambda lr, **_: 0.8 - abs(math.log10(lr) + 1) / 10,
                  optimizers="race_optimizers:heavy_sgd,race_optimizers:make_sgd", hp=["momentum=0.5,0.9"])
    assert result.config.hp_names == {"race_optimizers:heavy_sgd": ("momentum",),
                                      "race_optimizers:make_sgd": ("momentum",)}
    assert all(s.selected is not None for s in result.summary.arms)


def _sentences(result) -> list[str]:
    from descentlab.report.recommend import recommendation

    return recommendation(result.summary, result.config.epochs, rows=result.records)


def test_full_batch_beside_minibatches_is_searched_and_summarized(tmp_path):
    result = race(tmp_path, lambda lr, batch_size, **_: 0.8 if batch_size is None else 0.7, batch_size="full,64",
                  lrs="0.1,1")
    assert result.selected[("sgd", "constant")].batch_size is None
    assert {p["batch_size"] for p in result.summary.arms[0].sensitivity} == {None, 64}


def test_settings_an_optimizer_refuses_are_left_out_and_all_refused_is_an_error():
    config = make_config(optimizers="sgd", hp=["nesterov=true,false", "momentum=0,0.9"])
    assert config.hp_skipped == {"sgd": [{"momentum": 0.0, "nesterov": True}]}
    assert (("momentum", 0.0), ("nesterov", True)) not in config.hypers_for("sgd")
    assert len(config.hypers_for("sgd")) == 3
    with pytest.raises(ValueError, match=re.escape("hp weight_decay: optimizer 'sgd' cannot be built with "
                                                   "weight_decay=-0.1")):
        make_config(optimizers="sgd", hp=["weight_decay=-0.1"])


def test_hp_from_python_reads_a_tuple_as_one_value_and_a_string_as_the_cli_does():
    config = make_config(optimizers="adam,sgd", hp={"betas": (0.9, 0.999), "amsgrad": True, "momentum": "0,0.9"})
    assert config.hp == {"amsgrad": (True,), "betas": ((0.9, 0.999),), "momentum": (0.0, 0.9)}
    with pytest.raises(ValueError, match="hp momentum: expected a value or a list of values, got None"):
        make_config(optimizers="sgd", hp={"momentum": None})


def test_only_lrs_an_extension_can_reach_belong_to_the_race():
    from descentlab.racing.protocol import extension_lrs
    from descentlab.racing.record import RunSpec

    config = make_config(optimizers="sgd", lrs="0.1,0.316,1")
    assert extension_lrs(config.grid("sgd")) == (3.16, 10.0, 0.0316, 0.01)
    assert config.foreign(RunSpec(TUNE, "sgd", "constant", 3.16, 0, 64)) is None
    assert "lr 100.0" in config.foreign(RunSpec(TUNE, "sgd", "constant", 100.0, 0, 64))


def test_the_winner_is_chosen_on_validation_and_a_better_test_score_is_reported(tmp_path):
    """Adam is better on validation, SGD on test on every seed: the race recommends Adam (the test split
    never chooses) and says SGD did better on test beyond the seeds' noise."""
    def score(optimizer, lr, seed, **_):
        return 0.9 if optimizer == "adam" else 0.85

    result = race(tmp_path, score, optimizers="sgd,adam", lrs="0.1,1")
    for record in result.records:  # test: sgd beats adam by 5 points on every seed
        if record.phase == FINAL:
            record.test_acc = (0.95 if record.optimizer == "sgd" else 0.90) - 0.01 * record.seed
    from descentlab.racing.summary import summarize

    summary = summarize(result.config, result.records)
    assert summary.best().optimizer == "adam" and summary.better_on_test() == [summary.by_arm("sgd")]
    from descentlab.report.recommend import recommendation

    words = recommendation(summary, 1)
    assert words[0].startswith("Use adam") and any("Better on test than the validation winner" in w for w in words)
