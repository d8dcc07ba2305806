"""Section 8 of the guide, "Which to start with": the study's verdict on "Adam with lr 1e-3", from a
study's ``claim.json`` when one is given, else the shipped numbers — never worded stronger than they allow.

``claim.json`` (written by ``descentlab study``): ``entries``, one per (workload, Adam lr, budget) with
``workload``, ``lr``, ``budget_epochs``, ``within_tolerance``, ``gap``, ``still_improving`` and ``verdict``
∈ {within, behind, undecided}, and ``equal_compute`` (the entry the study's verdict counts for its workload
and lr: a study judges each workload at two budgets); an overall ``verdict``; the ``tolerance``. The
section counts one entry per workload and lr: the ``equal_compute`` one (:func:`counted_entries`). An
entry is *undecided* when the paired interval over seeds straddles the tolerance, or Adam was behind but
still improving when its budget ended (that gap may be budget, not Adam).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

VERDICTS = ("within", "behind", "undecided")

SHIPPED: dict[str, Any] = {
    "source": "the numbers shipped with descentlab (docs/study.md: the default study, 418 runs, 3 seeds)",
    "tolerance": "1 point of test accuracy (least squares: 1.1x the test loss)",
    "verdict": "undecided",
    "extra": "Tuned (lrs 3.16e-3 to 0.1, above the article's range), Adam came within 0.3 point of the tuned best "
             "on digits, ahead of it on the MNIST-1D CNN and least squares, and 6.3 points behind on the MNIST-1D MLP.",
    "entries": [
        {"workload": "mnist1d-mlp", "lr": 1e-3, "budget_epochs": 240, "within_tolerance": False, "gap": 0.085,
         "gap_text": "8.5 points behind [1.0, 16.0]", "still_improving": False, "verdict": "undecided"},
        {"workload": "mnist1d-cnn", "lr": 1e-3, "budget_epochs": 240, "within_tolerance": False, "gap": 0.088,
         "gap_text": "8.8 points behind [5.1, 12.4]", "still_improving": False, "verdict": "behind"},
        {"workload": "digits-mlp", "lr": 1e-3, "budget_epochs": 120, "within_tolerance": True, "gap": 0.0,
         "gap_text": "0.0 points behind [-0.7, 0.7]", "still_improving": False, "verdict": "within"},
        {"workload": "lstsq-linear", "lr": 1e-3, "budget_epochs": 240, "within_tolerance": False, "gap": 68.9,
         "gap_text": "68.9x the best loss [53.8x, 88.3x]", "still_improving": True, "verdict": "undecided"},
    ],
}
"""docs/study.md's result for untuned Adam at lr 1e-3 against the tuned best, at the study's equal-compute budget
(the largest multiple of the settled budget below the tuned best's tuning epochs), in claim.json's shape."""


def _fail(path: Path, why: str) -> ValueError:
    return ValueError(f"--study: {str(path)!r} {why}")


def _entry(path: Path, i: int, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(path, f"entry {i} is not an object")
    missing = [k for k in ("workload", "lr", "budget_epochs", "verdict") if k not in raw]
    if missing:
        raise _fail(path, f"entry {i} lacks {', '.join(missing)}")
    if raw["verdict"] not in VERDICTS:
        raise _fail(path, f"entry {i} has verdict {raw['verdict']!r}, not one of {', '.join(VERDICTS)}")
    for key in ("lr", "budget_epochs"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise _fail(path, f"entry {i} has {key} {value!r}, not a positive number")
    gap = raw.get("gap")
    if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float))):
        raise _fail(path, f"entry {i} has gap {gap!r}, not a number")
    basis = raw.get("equal_compute")
    multiple = raw.get("multiple")
    ratio = raw.get("compute_ratio")
    return {"workload": str(raw["workload"]), "lr": float(raw["lr"]), "budget_epochs": raw["budget_epochs"],
            "equal_compute": basis if isinstance(basis, bool) else None,
            "multiple": multiple if isinstance(multiple, int) and not isinstance(multiple, bool) else None,
            "compute_ratio": float(ratio) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
            and math.isfinite(ratio) else None,
            "within_tolerance": bool(raw.get("within_tolerance", raw["verdict"] == "within")),
            "gap": gap, "gap_text": str(raw["gap_text"]) if "gap_text" in raw else None,
            "still_improving": bool(raw.get("still_improving", False)), "verdict": raw["verdict"]}


def load_claim(study: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The claim section's data: ``DIR/claim.json`` read and checked, or :data:`SHIPPED` (with a ``note``
    saying why) when no study is given or the study has no claim.json (a study from before it existed)."""
    if study is None:
        return {**SHIPPED, "note": ""}
    folder = Path(study)
    try:
        is_dir = folder.is_dir()
        path = folder / "claim.json"
        has_claim = is_dir and path.exists()
    except OSError as error:  # e.g. a name longer than the file system takes
        raise ValueError(f"--study {str(study)!r}: cannot be used ({os.strerror(error.errno or 0)})") from None
    if not is_dir:
        raise ValueError(f"--study must be a study's output directory, got {str(study)!r}")
    if not has_claim:
        return {**SHIPPED, "note": f"{folder} has no claim.json (a study from before it was written): "
                                   "the shipped numbers are shown instead."}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"cannot be read as JSON ({type(error).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise _fail(path, "has no list of entries")
    entries = [_entry(path, i, e) for i, e in enumerate(raw["entries"])]
    tolerance = raw.get("tolerance")
    return {"source": f"the study in {folder}", "tolerance": _tolerance_words(tolerance),
            "verdict": str(raw.get("verdict", "")), "entries": entries, "note": ""}


def _tolerance_words(tolerance: Any) -> str:
    """claim.json's ``tolerance`` in words, as the shipped numbers say it ("1 point of test accuracy
    (regression: 1.1x the test loss)")."""
    if isinstance(tolerance, str):
        return tolerance
    words = []
    if isinstance(tolerance, dict):
        for kind, unit in (("classification", "point(s) of test accuracy"), ("regression", "x the test loss")):
            gap = tolerance.get(kind, {}).get("max_gap") if isinstance(tolerance.get(kind), dict) else None
            if isinstance(gap, (int, float)) and not isinstance(gap, bool) and math.isfinite(gap):
                words.append(f"{gap:g}{unit}" if unit.startswith("x") else f"{gap:g} {unit}")
    if not words:
        return "the study's tolerance"
    return words[0] if len(words) == 1 else f"{words[0]} (regression: {words[1]})"


def counted_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries the section counts: one per workload and lr, the study's equal-compute one (the verdict's
    basis). claim.json flags it; for one written before the flag, the same choice is made here as the study
    makes it (``descentlab.study.verdict.equal_compute``, which the guide does not import): the largest
    budget multiple whose compute ratio is at most 1, else the x1 entry; every entry of a claim without
    budget multiples (the shipped numbers)."""
    if any(e.get("equal_compute") is not None for e in entries):
        return [e for e in entries if e.get("equal_compute")]
    if all(e.get("multiple") is None for e in entries):
        return list(entries)
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["workload"], e["lr"]), []).append(e)
    counted = []
    for group in groups.values():
        fitting = [e for e in group if e.get("compute_ratio") is not None and e["compute_ratio"] <= 1]
        pool = fitting or [e for e in group if e.get("multiple") in (None, 1)]
        if pool:
            counted.append(max(pool, key=lambda e: e.get("multiple") or 1))
    return counted


def claim_sentences(claim: dict[str, Any]) -> list[str]:
    """Plain sentences no stronger than the entries: counts per verdict, per lr; 'holds' only when every entry
    is within, 'does not hold' only when none is undecided; otherwise undecided on this evidence."""
    out = []
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for e in counted_entries(claim["entries"]):
        by_lr.setdefault(e["lr"], []).append(e)
    for lr, entries in sorted(by_lr.items(), reverse=True):
        counts = {v: sum(e["verdict"] == v for e in entries) for v in VERDICTS}
        budgets = sorted({e["budget_epochs"] for e in entries})
        budget = f"{budgets[0]:g}" if len(budgets) == 1 else f"{budgets[0]:g}-{budgets[-1]:g}"
        sentence = (f"Untuned Adam at lr {lr:g} was within {claim['tolerance']} of the best tuned optimizer on "
                    f"{counts['within']} of {len(entries)} workloads, at budgets of {budget} epochs")
        if counts["behind"]:
            sentence += f"; behind on {counts['behind']}"
        if counts["undecided"]:
            sentence += (f"; undecided on {counts['undecided']}, where the seeds' interval straddles the tolerance "
                         "or Adam was still improving when its budget ended")
        out.append(sentence + ".")
    verdicts = [e["verdict"] for e in counted_entries(claim["entries"])]
    if all(v == "within" for v in verdicts):
        out.append("On these workloads and budgets the claim holds.")
    elif "undecided" in verdicts:
        out.append("On this evidence the claim is undecided: start with Adam at lr 1e-3, and try a few lrs around "
                   "it before you trust it.")
    else:
        out.append("On these workloads and budgets the claim does not hold: tune Adam's lr.")
    if claim.get("extra"):
        out.append(claim["extra"])
    if claim.get("verdict"):
        out.append(f"The study's own overall verdict: {claim['verdict']}.")
    return out
