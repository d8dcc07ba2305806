"""Assemble the report page. Every text that comes from data is escaped; every image is a data URI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..racing.protocol import GD_VS_SGD, RaceConfig
from ..racing.record import FINAL, RunRecord, hypers_of
from ..racing.store import REPORT
from ..racing.summary import RaceSummary
from . import plots
from .parts import CSS
from .parts import escape as _e
from .parts import img as _img
from .parts import table as _table
from .recommend import recommendation
from .reproduce import reproduction
from .table import arm_label, ranking_sentence, table_rows, target_sentence


def _final_histories(records: Sequence[RunRecord], summary: RaceSummary) -> dict[str, list[list[dict]]]:
    """Confirmation-run curves per arm label."""
    out: dict[str, list[list[dict]]] = {}
    for arm in summary.arms:
        runs = [list(r.history) for r in records if r.phase == FINAL and r.arm == arm.arm and r.history]
        if runs:
            out[arm_label(arm, summary)] = runs
    return out


def _environment(records: Sequence[RunRecord]) -> list[list[str]]:
    """What the runs were made on: every value of every environment field among the records."""
    seen: dict[str, list[str]] = {}
    for record in records:
        for key, value in {**record.versions, **record.machine, "training engine": record.engine}.items():
            if str(value) not in seen.setdefault(key, []):
                seen[key].append(str(value))
    return [[key, " | ".join(values)] for key, values in seen.items()]


def build_html(config: RaceConfig, records: Sequence[RunRecord], summary: RaceSummary) -> str:
    """The report page as a string: a pure function of the race's config, its run records and their
    summary, one section after another."""
    labels = [arm_label(s, summary) for s in summary.arms]
    colors = plots.color_map(labels)
    histories = _final_histories(records, summary)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>descentlab race: {_e(config.task)} / {_e(config.model)}</title><style>{CSS}</style>"
             "</head><body>",
             f"<h1>Which optimizer should I use for {_e(config.task)} / {_e(config.model)}?</h1>",
             *_protocol(config, records, summary), *_summary(config, summary)]
    if len(config.schedules) > 1:
        sentence = ranking_sentence(summary)
        parts += ["<h2>Did the schedule change the ranking?</h2>",
                  f"<p id='schedule-ranking'>{_e(sentence[0].upper() + sentence[1:])}.</p>"]
    parts += ["<h2>Recommendation</h2><ul class='rec'>",
              *(f"<li>{_e(sentence)}</li>" for sentence in recommendation(summary, config.epochs, GD_VS_SGD, records)),
              "</ul>"]
    parts += _curves(summary, histories, colors)
    parts += _sensitivity(config, summary, colors)
    parts += _gd_vs_sgd(config, summary, histories, colors)
    parts += _failed(records)
    parts += ["<h2>Environment and reproduction</h2>", _table(["", ""], _environment(records)),
              "<p>To redo this race (add <code>--out</code> with this report's directory to resume it: finished "
              "runs are skipped):</p>", f"<pre>{_e(reproduction(config))}</pre>"]
    if config.task_options:
        parts.append(f"<p class='muted'>Task options (Python API only): <code>{_e(config.task_options)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _protocol(config: RaceConfig, records: Sequence[RunRecord], summary: RaceSummary) -> list[str]:
    """What was raced and how it was judged."""
    sizes = ", ".join("full batch" if b is None else str(b) for b in config.batch_sizes)
    full_batch = f"; full batch for {', '.join(config.full_batch)}" if config.full_batch else ""
    rule = ("highest validation accuracy (ties: the setting whose lr neighbours did best, then the middle of the "
            "tie; never the validation loss)" if summary.classification else "lowest validation loss")
    seeds, tuning = config.seeds, config.tuning_seed_list()
    hp = "; ".join(f"{name}: {', '.join(map(str, values))}" for name, values in config.hp.items())
    stopping = ("trained its whole budget" if config.patience is None else
                f"stopped once its best point was {config.patience} evaluations old (early stopping)")
    grid = ", ".join(f"{lr:g}" for lr in config.lrs)
    extras = "; ".join(f"plus {', '.join(f'{lr:g}' for lr in v)} for {k}" for k, v in config.extra_lrs.items())
    if not config.lrs:  # race --lrs auto
        grid = "one per optimizer, centred on its lr range test (lrfind.json, lrfind-*.png)"
        extras = "; ".join(f"{k}: {', '.join(f'{lr:g}' for lr in v)}" for k, v in config.extra_lrs.items())
    trained = sum(r.wall_s or 0.0 for r in records)
    return [
        f"<p>We trained a {_e(config.model)} on {_e(config.task)} with {_e(', '.join(config.optimizers))} for the "
        f"same {config.epochs} epochs each under the schedule(s) {_e(', '.join(config.schedules))} (the lr of the "
        f"grid is the schedule's peak), on {_e(config.device)}, searching the learning rate, the batch size "
        f"({_e(sizes)}{_e(full_batch)}){_e('; ' + hp) if hp else ''}. Every run was judged at its <em>best "
        f"validation point</em>: the evaluation with the {rule}. Every setting was tried on seed {tuning[0]}, each "
        f"run {_e(stopping)}; a selected lr at the edge of its grid extended the grid; the best third of the settings "
        f"were trained on seed(s) {_e(', '.join(map(str, tuning[1:])) or '-')} too and the best on average was kept. "
        f"It was then trained on {len(seeds)} seed(s) ({_e(', '.join(map(str, seeds)))}) for the whole budget; each "
        "of those runs was scored on the test split once at its own best validation point (the headline) and once "
        "at the end of the budget. The test split never took part in any choice.</p>",
        f"<p class='muted'>Learning-rate grid: {_e(grid)}{'; ' + _e(extras) if extras else ''}. {len(records)} runs "
        f"in <code>results.jsonl</code>, {trained:.0f} s of training in all (summed over runs, which ran in "
        "parallel).</p>"]


def _summary(config: RaceConfig, summary: RaceSummary) -> list[str]:
    header, table = table_rows(summary)
    best = summary.best()
    sizes = summary.split_sizes
    split = (f" Splits: {sizes.get('n_train')} training, {sizes.get('n_val')} validation, {sizes.get('n_test')} "
             "test examples." if sizes else "")
    return ["<h2>Summary</h2>", _table(header, table, summary.arms.index(best) if best is not None else None),
            f"<p class='muted'>{_e(target_sentence(summary))}. Test metrics: mean over seeds [95 % t interval]; "
            "<em>behind the best</em>: the paired difference to the best optimizer over the seeds both finished, "
            "with its 95 % interval (<em>tie</em>: it contains 0, or the mean gap is at most one test example; the "
            "two cannot be told apart); <em>best epoch</em>: "
            "the mean epoch of the best validation point (\"last\" when it was the final evaluation); "
            f"<em>diverged</em>: tuning runs that diverged; steps: optimizer updates in one run.{_e(split)}</p>"]


def _curves(summary: RaceSummary, histories: dict[str, list[list[dict]]], colors: dict[str, str]) -> list[str]:
    metrics = ["val_loss", "val_acc"] if summary.classification else ["val_loss"]
    if not histories:
        return ["<h2>Validation curves</h2>", "<p>No selected runs finished, so there are no curves.</p>"]
    return ["<h2>Validation curves</h2>",
            "<p>Selected setting of every optimizer; line = mean over seeds, band = min..max over seeds.</p>",
            _img(plots.curves(histories, colors, "epoch", metrics, "epoch", "vs epochs (data passes)"),
                 "validation curves against epochs", "curves-epochs"),
            _img(plots.curves(histories, colors, "wall_s", metrics, "wall-clock seconds",
                              "vs wall time (one run on one core)"), "validation curves against wall time",
                 "curves-seconds")]


def _sensitivity(config: RaceConfig, summary: RaceSummary, colors: dict[str, str]) -> list[str]:
    """The lr along each selected setting's line (first tuning seed), then every other searched axis."""
    metrics = ["val_loss", "val_acc"] if summary.classification else ["val_loss"]
    first = config.tuning_seed_list()[0]
    points, selected = {}, {}
    for s in summary.arms:
        chosen = s.selected
        line = [p for p in s.sensitivity if p["seed"] == first and (chosen is None or (
            p["batch_size"] == chosen.batch_size and hypers_of(p["hypers"]) == chosen.hypers))]
        if line:
            points[arm_label(s, summary)], selected[arm_label(s, summary)] = line, s.selected_lr
    out = ["<h2>Sensitivity</h2>"]
    if not points:
        return [*out, "<p>No tuning runs finished.</p>"]
    out += [f"<p>The best validation metric of every tuning run on seed {first} along the selected setting's lr line "
            "(its batch size and other hyper-parameters): a flat curve forgives a badly chosen lr.</p>",
            _img(plots.sensitivity(points, selected, colors, ["best_" + m for m in metrics]),
                 "best validation metric per lr", "sensitivity")]
    for axis, rows in _axes(config, summary, first).items():
        out += [f"<h3>{_e(axis)}</h3>", "<p class='muted'>Per value, the best validation score (at the best point, "
                f"seed {first}) over every other setting; the selected value is marked *.</p>",
                _table(["optimizer", axis, "best " + ("validation accuracy" if summary.classification else
                                                       "validation loss")], rows)]
    return out


def _axes(config: RaceConfig, summary: RaceSummary, first: int) -> dict[str, list[list[str]]]:
    """For the batch size (when several) and every ``--hp``: each arm's best first-seed score per value."""
    axes: dict[str, list[list[str]]] = {}
    key = "best_val_acc" if summary.classification else "best_val_loss"
    names = (["batch size"] if len(config.batch_sizes) > 1 else []) + list(config.hp)
    for axis in names:
        rows = []
        for s in summary.arms:
            chosen = s.selected
            chosen_value = None if chosen is None else _axis_value(chosen.batch_size, chosen.hypers, axis)
            by_value: dict[Any, list[float]] = {}
            for p in s.sensitivity:
                if p["seed"] == first and p.get("status") == "ok" and p.get(key) is not None:
                    by_value.setdefault(_axis_value(p["batch_size"], hypers_of(p["hypers"]), axis), []).append(p[key])
            for value, scores in sorted(by_value.items(), key=lambda kv: str(kv[0])):
                if value is None and axis != "batch size":
                    continue
                best = max(scores) if summary.classification else min(scores)
                shown = f"{best:.1%}" if summary.classification else f"{best:.3g}"
                mark = " *" if value == chosen_value else ""
                rows.append([arm_label(s, summary), f"{'full' if value is None else value}{mark}", shown])
        axes[axis] = rows
    return axes


def _axis_value(batch_size: int | None, hypers: tuple, axis: str) -> Any:
    return batch_size if axis == "batch size" else dict(hypers).get(axis)


def _gd_vs_sgd(config: RaceConfig, summary: RaceSummary, histories: dict[str, list[list[dict]]],
               colors: dict[str, str]) -> list[str]:
    pair_arms = [summary.by_arm(name, config.schedules[0]) for name in GD_VS_SGD]
    pair = {arm_label(a, summary): histories[arm_label(a, summary)] for a in pair_arms
            if a is not None and arm_label(a, summary) in histories}
    out = ["<h2>GD vs SGD</h2>"]
    if len(pair) != len(GD_VS_SGD):
        return [*out, f"<p>Not drawn: this race does not include both {' and '.join(GD_VS_SGD)} with a finished "
                "selected run.</p>"]
    steps = {arm_label(a, summary): a.steps for a in pair_arms if a is not None}
    return [*out, "<p>The article's comparison: full-batch Gradient Descent takes one step per pass over the data, "
            "minibatch SGD takes many cheaper ones. Same epochs: " + ", ".join(f"{_e(k)} {v} steps"
                                                                                for k, v in steps.items()) + ".</p>",
            _img(plots.curves(pair, colors, "epoch", ["val_loss"], "epoch", "progress per epoch"),
                 "GD vs SGD per epoch", "gd-sgd-epochs"),
            _img(plots.curves(pair, colors, "wall_s", ["val_loss"], "wall-clock seconds", "progress per second"),
                 "GD vs SGD per second", "gd-sgd-seconds")]


def _failed(records: Sequence[RunRecord]) -> list[str]:
    failed = [r for r in records if r.status != "ok"]
    if not failed:
        return []
    return ["<h2>Diverged and failed runs</h2>", _table(
        ["phase", "optimizer", "schedule", "setting", "seed", "status", "at step", "reason"],
        [[r.phase, r.optimizer, r.schedule, r.setting.describe(), str(r.seed), r.status,
          str(r.diverged_at_step or "-"), str(r.diverge_reason or r.error or "-")] for r in failed])]


def write_report(out: str | Path, config: RaceConfig, records: Sequence[RunRecord], summary: RaceSummary) -> Path:
    """Write ``out/report.html`` atomically and return its path."""
    path = Path(out) / REPORT
    atomic_write_text(path, build_html(config, records, summary))
    return path
