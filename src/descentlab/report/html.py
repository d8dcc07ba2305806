"""Assemble the report page. Every text that comes from data is escaped; every image is a data URI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..racing.protocol import GD_VS_SGD, RaceConfig
from ..racing.record import FINAL, RunRecord
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
    summary (see the module docstring)."""
    labels = [arm_label(s, summary) for s in summary.arms]
    colors = plots.color_map(labels)
    classification = summary.classification
    metrics = ["val_loss", "val_acc"] if classification else ["val_loss"]
    histories = _final_histories(records, summary)
    seeds = config.seeds
    epochs = config.epochs
    batch = "full batch" if config.batch_size is None else f"batch size {config.batch_size}"
    full_batch = f"; full batch for {', '.join(config.full_batch)}" if config.full_batch else ""
    grid = ", ".join(f"{lr:g}" for lr in config.lrs)
    extras = "; ".join(f"plus {', '.join(f'{lr:g}' for lr in v)} for {k}" for k, v in config.extra_lrs.items())
    best_rule = ("highest validation accuracy (ties: lower validation loss)" if classification
                 else "lowest validation loss")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>descentlab race: {_e(config.task)} / {_e(config.model)}</title><style>{CSS}</style>"
             "</head><body>"]
    parts.append(f"<h1>Which optimizer should I use for {_e(config.task)} / {_e(config.model)}?</h1>")
    schedules = ", ".join(config.schedules)
    parts.append(
        f"<p>We trained a {_e(config.model)} on {_e(config.task)} with {_e(', '.join(config.optimizers))} for the "
        f"same {epochs} epochs each ({_e(batch)}{_e(full_batch)}) under the learning-rate "
        f"schedule(s) {_e(schedules)} (the lr of the grid is the schedule's peak), on {_e(config.device)}. "
        f"Every run was judged at its <em>best validation point</em> (early stopping): the evaluation with the "
        f"{best_rule}. Every learning rate of the grid was tried on seed {seeds[0]}, and per optimizer and "
        f"schedule the one whose best point was best was kept. The kept learning rate was then trained on "
        f"{len(seeds)} seed(s) ({_e(', '.join(map(str, seeds)))}); each of those runs was scored on the test split "
        "once with the weights of its own best validation point (the headline numbers) and once with its weights at "
        "the end of the budget. The test split never took part in any choice.</p>")
    trained = sum(r.wall_s or 0.0 for r in records)
    if not config.lrs:  # race --lrs auto
        grid = "one per optimizer, centred on its lr range test (lrfind.json, lrfind-*.png)"
        extras = "; ".join(f"{k}: {', '.join(f'{lr:g}' for lr in v)}" for k, v in config.extra_lrs.items())
    parts.append(f"<p class='muted'>Learning-rate grid: {_e(grid)}{'; ' + _e(extras) if extras else ''}. "
                 f"{len(records)} runs in <code>results.jsonl</code>, {trained:.0f} s of training in all "
                 "(summed over runs, which ran in parallel).</p>")

    parts.append("<h2>Summary</h2>")
    header, table = table_rows(summary)
    ranked = summary.ranked()
    best_index = summary.arms.index(ranked[0]) if ranked else None
    parts.append(_table(header, table, best_index))
    parts.append(f"<p class='muted'>{_e(target_sentence(summary))}. Test metrics are mean ± standard deviation "
                 "over seeds; <em>best epoch</em> is the mean epoch of the best validation point (\"last\" when it "
                 f"was the final evaluation); <em>diverged</em> counts the grid's lrs that diverged on seed "
                 f"{seeds[0]}; steps are the optimizer updates in one run.</p>")
    if len(config.schedules) > 1:
        parts.append("<h2>Did the schedule change the ranking?</h2>")
        sentence = ranking_sentence(summary)
        parts.append(f"<p id='schedule-ranking'>{_e(sentence[0].upper() + sentence[1:])}.</p>")

    parts.append("<h2>Recommendation</h2><ul class='rec'>")
    parts.extend(f"<li>{_e(sentence)}</li>" for sentence in recommendation(summary, epochs, GD_VS_SGD, records))
    parts.append("</ul>")

    parts.append("<h2>Validation curves</h2>")
    if histories:
        parts.append("<p>Selected lr of every optimizer; line = mean over seeds, band = min..max over seeds.</p>")
        parts.append(_img(plots.curves(histories, colors, "epoch", metrics, "epoch", "vs epochs (data passes)"),
                          "validation curves against epochs", "curves-epochs"))
        parts.append(_img(plots.curves(histories, colors, "wall_s", metrics, "wall-clock seconds",
                                       "vs wall time (one run on one core)"),
                          "validation curves against wall time", "curves-seconds"))
    else:
        parts.append("<p>No selected runs finished, so there are no curves.</p>")

    parts.append("<h2>Learning-rate sensitivity</h2>")
    points = {arm_label(s, summary): s.sensitivity for s in summary.arms if s.sensitivity}
    selected = {arm_label(s, summary): s.selected_lr for s in summary.arms}
    if points:
        parts.append("<p>The best validation metric of every tuning run (at its best point): a flat curve forgives a "
                     "badly chosen lr.</p>")
        parts.append(_img(plots.sensitivity(points, selected, colors, ["best_" + m for m in metrics]),
                          "best validation metric per lr", "sensitivity"))
    else:
        parts.append("<p>No tuning runs finished.</p>")

    parts.append("<h2>GD vs SGD</h2>")
    first = config.schedules[0]
    pair_arms = [summary.by_arm(name, first) for name in GD_VS_SGD]
    pair = {arm_label(a, summary): histories[arm_label(a, summary)] for a in pair_arms
            if a is not None and arm_label(a, summary) in histories}
    if len(pair) == len(GD_VS_SGD):
        steps = {arm_label(a, summary): a.steps for a in pair_arms if a is not None}
        parts.append("<p>The article's comparison: full-batch Gradient Descent takes one step per pass over the "
                     "data, minibatch SGD takes many cheaper ones. Same epochs: "
                     + ", ".join(f"{_e(k)} {v} steps" for k, v in steps.items()) + ".</p>")
        parts.append(_img(plots.curves(pair, colors, "epoch", ["val_loss"], "epoch", "progress per epoch"),
                          "GD vs SGD per epoch", "gd-sgd-epochs"))
        parts.append(_img(plots.curves(pair, colors, "wall_s", ["val_loss"], "wall-clock seconds",
                                       "progress per second"), "GD vs SGD per second", "gd-sgd-seconds"))
    else:
        parts.append(f"<p>Not drawn: this race does not include both {' and '.join(GD_VS_SGD)} with a finished "
                     "selected run.</p>")

    failed = [r for r in records if r.status != "ok"]
    if failed:
        parts.append("<h2>Diverged and failed runs</h2>")
        parts.append(_table(["phase", "optimizer", "schedule", "lr", "seed", "status", "at step", "reason"], [
            [r.phase, r.optimizer, r.schedule, f"{r.lr:g}", str(r.seed), r.status,
             str(r.diverged_at_step or "-"), str(r.diverge_reason or r.error or "-")] for r in failed]))

    parts.append("<h2>Environment and reproduction</h2>")
    parts.append(_table(["", ""], _environment(records)))
    parts.append("<p>To redo this race (add <code>--out</code> with this report's directory to resume it: finished "
                 "runs are skipped):</p>")
    parts.append(f"<pre>{_e(reproduction(config))}</pre>")
    if config.task_options:
        parts.append(f"<p class='muted'>Task options (Python API only): <code>{_e(config.task_options)}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, config: RaceConfig, records: Sequence[RunRecord], summary: RaceSummary) -> Path:
    """Write ``out/report.html`` atomically and return its path."""
    path = Path(out) / REPORT
    atomic_write_text(path, build_html(config, records, summary))
    return path
