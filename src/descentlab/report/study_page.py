"""The study's report: one self-contained HTML page (the race report's style, tables and embedded
figures), a pure function of a :class:`descentlab.report.study_view.StudyPage` — the frozen view the
study builds from its races and ``claim.json``. Nothing here imports the study layer."""

from __future__ import annotations

import math

from . import study_plots
from .parts import CSS, escape, img, table
from .study_view import ClaimRow, ClaimView, EntryRow, StudyPage
from .table import format_lr, format_seconds


def _time(value: float, seconds: bool) -> str:
    if not math.isfinite(value):
        return "not reached"
    return format_seconds(value) if seconds else f"{value:.0f}"


def _metric(e: EntryRow, classification: bool) -> str:
    return e.test.format(percent=classification) + (f" ({e.test.n}/{e.seeds} seeds ok)" if e.test.n < e.seeds else "")


def _gap(row: ClaimRow) -> str:
    if row.gap is None:
        return "no result"
    if row.classification:
        text = f"{row.gap:+.1f} points"
        if row.gap_low is not None and row.gap_high is not None:
            return f"{text} [{row.gap_low:+.1f}, {row.gap_high:+.1f}]"
        return f"{text} (no interval)"
    text = f"{row.gap:.3g}x"
    if row.gap_low is not None and row.gap_high is not None:
        return f"{text} [{row.gap_low:.3g}, {row.gap_high:.3g}]"
    return f"{text} (no interval)"


def _score(value: float | None, classification: bool) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if classification else f"{value:.3g}"


def _claim_section(claim: ClaimView) -> list[str]:
    parts = ["<h2 id='claim'>The article's claim, checked</h2>",
             "<p>\"ADAM is very good to start with, with beta1 = 0.9, beta2 = 0.999, learning_rate in [1e-3, 1e-4, "
             "5e-4]\". On every workload, at a budget where the tuned best optimizer had settled, Adam with its "
             "default betas at each of those lrs, <em>untuned</em> (a race with that single lr, same seeds), at that "
             "budget and at multiples of it, against the <em>tuned best</em> (the race's optimizer with the best "
             "validation metric). Gap, paired by seed: points of test accuracy behind the tuned best (regression: "
             f"test loss over the tuned best's, geometric mean), with its {claim.confidence:.0%} t interval over the "
             f"seeds. <strong>within</strong>: the interval's upper end is at most {claim.acc_points:g} point "
             f"({claim.loss_ratio:g}x the loss); <strong>behind</strong>: its lower end is beyond that and Adam was "
             "not still improving; <strong>undecided</strong> otherwise. Still improving: its best validation "
             "value in the last quarter of the budget beat the one before by more than "
             f"{claim.settle_acc * 100:g} point ({claim.settle_loss:.0%} of the loss) on some seed. Compute: the "
             "entry's epochs over the epochs the tuned best spent on tuning alone.</p>"]
    if claim.demo:
        parts.append("<p id='claim-verdict' class='rec'><strong>A demo (--quick), not a result: no verdict on the "
                     "claim.</strong> Its budgets are far too short for any optimizer to settle.</p>")
    else:
        parts.append(f"<p id='claim-verdict' class='rec'><strong>{escape(claim.headline)}</strong></p>")
    header = ["workload", "adam lr", "budget (epochs)", "compute vs tuning", "tuned best: test", "adam: test",
              "gap [95% CI]", "seeds", "still improving", "verdict", "steps to target (tuned best incl. tuning)"]
    rows = []
    for r in claim.rows:
        compute = "-" if r.compute_ratio is None else f"{r.compute_ratio:.2g}x"
        rows.append([r.workload, f"{r.lr:g}", f"{r.budget_epochs} (x{r.multiple})", compute,
                     f"{r.best}: {_score(r.best_test, r.classification)}", _score(r.adam_test, r.classification),
                     _gap(r), _seeds(r), "yes" if r.still_improving else "no", r.verdict,
                     f"{_time(r.steps_to_target, False)} ({_time(r.best_steps_with_tuning, False)})"])
    parts.append(table(header, rows))
    return parts


def _seeds(row: ClaimRow) -> str:
    """The paired seeds, and the seeds untuned Adam diverged or failed on (they count against it)."""
    lost = f" (Adam diverged or failed on {row.adam_unfinished})" if row.adam_unfinished else ""
    return f"{row.paired_seeds}{lost}"


def _profiles_section(page: StudyPage) -> list[str]:
    parts = ["<h2 id='profiles'>Performance profiles</h2>",
             "<p>For each optimizer, ρ(τ) is the share of workloads on which its time to the target was within τ "
             "times the fastest one's (AlgoPerf's performance profile). Target per workload: "
             f"{page.target_fraction:.0%} of the best tuned optimizer's mean best validation accuracy (regression: "
             f"its mean best validation loss / {page.target_fraction:g}); time: median over seeds, a seed that "
             "never got there counting as infinite. Score: AlgoPerf's normalised area under ρ for τ from 1 to "
             f"{page.tau_max:g}, (1/{page.tau_max - 1:g})∫ρ(τ)dτ — 1 is fastest everywhere, 0 never within "
             f"{page.tau_max:g}x. Seconds are what a user waits (runs shared the cores, so they are noisy); steps "
             "favour full-batch GD, whose one step is a whole pass over the data. <em>Tuning counted</em> adds "
             "every tuning run of a tuned optimizer to its steps (AlgoPerf's external-tuning cost); untuned Adam "
             "spent none.</p>"]
    for p in page.profiles:
        parts.append(img(study_plots.profiles(p.curves, page.taus, p.scores, p.title), p.title, f"profile-{p.unit}"))
    if page.profiles:
        names = list(page.profiles[0].scores)
        order = sorted(names, key=lambda n: -page.profiles[0].scores[n])
        header = ["optimizer", *[f"score ({p.unit})" for p in page.profiles], "reached the target on"]
        rows = [[n, *[f"{p.scores.get(n, 0.0):.2f}" for p in page.profiles],
                 f"{page.profiles[0].reached.get(n, 0)} of {len(page.workloads)}"] for n in order]
        parts.append(table(header, rows, 0 if order else None))
    return parts


def _workload_section(page: StudyPage) -> list[str]:
    parts = ["<h2 id='workloads'>Per workload</h2>"]
    for w in page.workloads:
        what = "accuracy" if w.classification else "loss"
        target = "-" if w.target is None else (f"{w.target:.1%} validation accuracy" if w.classification
                                               else f"validation loss {w.target:.3g}")
        tried = "; ".join(f"{b.epochs} epochs: {b.best or '-'} {'settled' if b.settled else 'still improving'}"
                          + (f" ({b.how})" if b.how else "") for b in w.budgets)
        parts.append(f"<h3>{escape(w.name)}</h3><p class='muted'>Task {escape(w.task)}, model {escape(w.model)}, "
                     f"{w.epochs} epochs per run (budgets tried, tuned best: {escape(tried)}); target "
                     f"{escape(target)}. The race: <a href='{escape(w.race_folder)}/report.html'>"
                     f"{escape(w.race_folder)}/report.html</a>.</p>")
        rows = [[e.label, format_lr(e.lr), str(e.budget_epochs), _metric(e, w.classification),
                 e.best_val.format(percent=w.classification), _time(e.steps_to_target, False),
                 _time(e.seconds_to_target, True), _time(e.steps_with_tuning, False), f"{e.reached}/{e.seeds}",
                 f"{e.improving}/{e.seeds}"] for e in w.rows]
        parts.append(table(["optimizer", "lr", "epochs", f"test {what} (best val point)", f"best val {what}",
                            "steps to target", "seconds to target", "steps incl. tuning", "seeds that reached it",
                            "seeds still improving"], rows, w.best_index))
    return parts


def _sensitivity_section(page: StudyPage) -> list[str]:
    s = page.sensitivity
    parts = ["<h2 id='sensitivity'>Learning-rate sensitivity across workloads</h2>",
             "<p>Selected lr of every optimizer on every workload (the race's best-validation protocol), and how far "
             "it moves: the spread, in decades, between the smallest and the largest selected lr.</p>",
             table(list(s.header), [list(r) for r in s.rows])]
    if s.panels:
        parts.append(img(study_plots.sensitivity(s.panels, s.selected), "lr sensitivity across workloads",
                         "sensitivity"))
    return parts


def build_study_html(page: StudyPage) -> str:
    """The page (see the module docstring)."""
    budgets = ", ".join(f"{w.name} {w.epochs} epochs" for w in page.workloads)
    n = len(page.workloads)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>descentlab study: {n} workloads</title><style>{CSS}</style></head><body>",
             f"<h1>Is Adam with lr 1e-3 a good default? A study over {n} workload{'s' if n != 1 else ''}</h1>",
             f"<p>One race per workload ({escape(budgets)}): every optimizer of {escape(', '.join(page.optimizers))} "
             "tuned by the race on the validation split, each run judged at its best validation point, the selected "
             f"setting confirmed on {page.seeds} seed(s) and scored on the test split at that point (the race "
             "protocol, docs/race-protocol.md); each budget extended until the tuned best had settled (its last "
             "quarter no better than the rest, or its setting alone at twice the budget no better). Beside each "
             "race, Adam at each of the article's lrs, untuned. The test split never took part in any choice.</p>",
             f"<p class='muted'>{page.runs} runs, {page.train_seconds:.0f} s of training in all (summed over runs, "
             f"which ran in parallel){'; --quick: a demo budget, not a result' if page.demo else ''}.</p>"]
    parts += _claim_section(page.claim)
    parts += _profiles_section(page)
    parts += _workload_section(page)
    parts += _sensitivity_section(page)
    parts.append("<h2>Reproduction</h2><p>To redo this study (the same --out resumes it: finished races are "
                 "read back, an interrupted one resumes):</p>")
    parts.append(f"<pre>{escape(page.command)}</pre></body></html>")
    return "\n".join(parts)
