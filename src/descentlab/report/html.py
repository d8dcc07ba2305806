"""Assemble the report page. Every text that comes from data is escaped; every image is a data URI."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..race.protocol import FINAL, GD_VS_SGD
from ..race.store import REPORT
from ..race.summary import RaceSummary, table_rows, target_sentence
from . import plots
from .recommend import recommendation

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}th,td{padding:.3em .8em;border-bottom:1px solid #e4e4e4;
text-align:left;font-variant-numeric:tabular-nums}th{background:#f4f6f8}
tr.best td{background:#eef8ee;font-weight:600}td.bad{color:#b00}
.plot{max-width:100%;height:auto;display:block;margin:.6em 0;border:1px solid #eee}
.rec li{margin:.3em 0}code,pre{background:#f4f6f8;padding:.15em .35em;border-radius:3px}
pre{padding:.7em;overflow-x:auto;white-space:pre-wrap}.muted{color:#666;font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], highlight: int | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        cls = ' class="best"' if index == highlight else ""
        cells = "".join(f'<td class="bad">{_e(c)}</td>' if "diverged" in c or "failed" in c else f"<td>{_e(c)}</td>"
                        for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str, alt: str, name: str) -> str:
    return f'<img class="plot" id="plot-{_e(name)}" alt="{_e(alt)}" src="{uri}">'


def _final_histories(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[list[dict]]]:
    out: dict[str, list[list[dict]]] = {}
    for name in names:
        runs = [list(r.get("history") or []) for r in rows if r.get("phase") == FINAL and r["optimizer"] == name]
        runs = [h for h in runs if h]
        if runs:
            out[name] = runs
    return out


def build_html(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], summary: RaceSummary,
               environment: Mapping[str, str], command: str, wall_s: float | None = None,
               ran: int | None = None) -> str:
    """The report page as a string (see the module docstring)."""
    names = list(config["optimizers"])
    colors = plots.color_map(names)
    classification = summary.metric == "val_acc"
    metrics = ["val_loss", "val_acc"] if classification else ["val_loss"]
    histories = _final_histories(rows, names)
    seeds = config["seeds"]
    selected = {s.optimizer: s.selected_lr for s in summary.optimizers}
    epochs = config["epochs"]
    batch = "full batch" if config["batch_size"] is None else f"batch size {config['batch_size']}"
    full_batch = ", ".join(config.get("full_batch") or []) or "none"
    grid = ", ".join(f"{lr:g}" for lr in config["lrs"])
    extras = "; ".join(f"plus {', '.join(f'{lr:g}' for lr in v)} for {k}" for k, v in config["extra_lrs"].items())
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>descentlab race: {_e(config['task'])} / {_e(config['model'])}</title><style>{CSS}</style>"
             "</head><body>"]
    parts.append(f"<h1>Which optimizer should I use for {_e(config['task'])} / {_e(config['model'])}?</h1>")
    parts.append(
        f"<p>We trained a {_e(config['model'])} on {_e(config['task'])} with {_e(', '.join(names))} for the same "
        f"{epochs} epochs each ({_e(batch)}; full batch for {_e(full_batch)}), trying every learning rate of the "
        f"grid on seed {seeds[0]} and keeping, per optimizer, the one with the best validation loss. "
        f"The kept learning rate was then trained on {len(seeds)} seed(s) ({_e(', '.join(map(str, seeds)))}) and "
        "only those runs were scored on the test split, which never took part in the choice.</p>")
    parts.append(f"<p class='muted'>Learning-rate grid: {_e(grid)}{'; ' + _e(extras) if extras else ''}. "
                 f"{len(rows)} runs in <code>results.jsonl</code>"
                 + (f"; this invocation trained {ran} of them in {wall_s:.1f} s" if wall_s is not None else "")
                 + f". Written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>")

    parts.append("<h2>Summary</h2>")
    header, table = table_rows(summary)
    ranked = summary.ranked()
    best_index = summary.optimizers.index(ranked[0]) if ranked else None
    parts.append(_table(header, table, best_index))
    parts.append(f"<p class='muted'>{_e(target_sentence(summary))}. Test metrics are mean ± standard deviation "
                 "over seeds; <em>diverged</em> counts the grid's lrs that diverged on seed "
                 f"{seeds[0]}; steps are the optimizer updates in one run.</p>")

    parts.append("<h2>Recommendation</h2><ul class='rec'>")
    parts.extend(f"<li>{_e(sentence)}</li>" for sentence in recommendation(summary, epochs, GD_VS_SGD, rows))
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
    points = {s.optimizer: s.sensitivity for s in summary.optimizers if s.sensitivity}
    if points:
        parts.append("<p>The final validation metric of every tuning run: a flat curve forgives a badly chosen lr.</p>")
        parts.append(_img(plots.sensitivity(points, selected, colors, metrics), "final validation metric per lr",
                          "sensitivity"))
    else:
        parts.append("<p>No tuning runs finished.</p>")

    parts.append("<h2>GD vs SGD</h2>")
    pair = {name: histories[name] for name in GD_VS_SGD if name in histories}
    if len(pair) == len(GD_VS_SGD):
        steps = {s.optimizer: s.steps for s in summary.optimizers if s.optimizer in pair}
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

    failed = [r for r in rows if r.get("status") not in ("ok", None)]
    if failed:
        parts.append("<h2>Diverged and failed runs</h2>")
        parts.append(_table(["phase", "optimizer", "lr", "seed", "status", "at step", "reason"], [
            [str(r.get("phase")), str(r["optimizer"]), f"{r['lr']:g}", str(r["seed"]), str(r.get("status")),
             str(r.get("diverged_at_step") or "-"), str(r.get("diverge_reason") or r.get("error") or "-")]
            for r in failed]))

    parts.append("<h2>Environment and reproduction</h2>")
    parts.append(_table(["", ""], [[k, v] for k, v in environment.items()]))
    parts.append("<p>To reproduce (or resume: finished runs are skipped):</p>")
    parts.append(f"<pre>{_e(command)}</pre>")
    if config.get("task_options"):
        parts.append(f"<p class='muted'>Task options (Python API only): <code>{_e(config['task_options'])}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: str | Path, config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 summary: RaceSummary, environment: Mapping[str, str], command: str, wall_s: float | None = None,
                 ran: int | None = None) -> Path:
    """Write ``out/report.html`` atomically and return its path."""
    path = Path(out) / REPORT
    atomic_write_text(path, build_html(config, rows, summary, environment, command, wall_s, ran))
    return path

