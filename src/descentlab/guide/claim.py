"""Section 8 of the guide, "Which to start with": the study's verdict on "Adam with lr 1e-3", from a
study's ``claim.json`` when one is given, else the shipped numbers — never worded stronger than they allow.

``claim.json`` (written by ``descentlab study``): ``entries``, one per (workload, Adam lr, budget) with
``workload``, ``lr``, ``budget_epochs``, ``within_tolerance``, ``gap``, ``still_improving`` and ``verdict``
∈ {within, behind, undecided}; an overall ``verdict``; the ``tolerance``. An entry is *undecided* when
Adam was behind but still improving when its budget ended: that gap may be budget, not Adam.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

VERDICTS = ("within", "behind", "undecided")

SHIPPED: dict[str, Any] = {
    "source": "the numbers shipped with descentlab (docs/study.md: the default study, 340 runs, 3 seeds)",
    "tolerance": "1 point of test accuracy (least squares: 1.1x the test loss)",
    "verdict": "pending the longer-budget study",
    "extra": "Tuned, Adam was within 3.8 points (1.02x the loss) of the best optimizer on every workload, at lrs of "
             "3.16e-3 to 0.1: above the article's range.",
    "entries": [
        {"workload": "mnist1d-mlp", "lr": 1e-3, "budget_epochs": 20, "within_tolerance": False, "gap": 0.077,
         "gap_text": "7.7 points behind", "still_improving": False, "verdict": "behind"},
        {"workload": "mnist1d-cnn", "lr": 1e-3, "budget_epochs": 15, "within_tolerance": False, "gap": 0.345,
         "gap_text": "34.5 points behind", "still_improving": True, "verdict": "undecided"},
        {"workload": "digits-mlp", "lr": 1e-3, "budget_epochs": 30, "within_tolerance": True, "gap": 0.002,
         "gap_text": "0.2 points behind", "still_improving": False, "verdict": "within"},
        {"workload": "lstsq-linear", "lr": 1e-3, "budget_epochs": 30, "within_tolerance": False, "gap": 308.0,
         "gap_text": "308x the best loss", "still_improving": True, "verdict": "undecided"},
    ],
}
"""docs/study.md's result for untuned Adam at lr 1e-3 against the best tuned optimizer, in claim.json's shape."""


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
    return {"workload": str(raw["workload"]), "lr": float(raw["lr"]), "budget_epochs": raw["budget_epochs"],
            "within_tolerance": bool(raw.get("within_tolerance", raw["verdict"] == "within")),
            "gap": gap, "gap_text": str(raw["gap_text"]) if "gap_text" in raw else None,
            "still_improving": bool(raw.get("still_improving", False)), "verdict": raw["verdict"]}


def load_claim(study: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The claim section's data: ``DIR/claim.json`` read and checked, or :data:`SHIPPED` (with a ``note``
    saying why) when no study is given or the study has no claim.json (a study from before it existed)."""
    if study is None:
        return {**SHIPPED, "note": ""}
    folder = Path(study)
    if not folder.is_dir():
        raise ValueError(f"--study must be a study's output directory, got {str(study)!r}")
    path = folder / "claim.json"
    if not path.exists():
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
    return {"source": f"the study in {folder}", "tolerance": tolerance if isinstance(tolerance, str) else
            json.dumps(tolerance) if tolerance is not None else "the study's tolerance",
            "verdict": str(raw.get("verdict", "")), "entries": entries, "note": ""}


def claim_sentences(claim: dict[str, Any]) -> list[str]:
    """Plain sentences no stronger than the entries: counts per verdict, per lr; 'holds' only when every entry
    is within, 'does not hold' only when none is undecided; otherwise the verdict is pending a longer budget."""
    out = []
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for e in claim["entries"]:
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
            sentence += (f"; undecided on {counts['undecided']}, where it was behind but still improving when the "
                         "budget ended (that gap may be budget, not Adam)")
        out.append(sentence + ".")
    verdicts = [e["verdict"] for e in claim["entries"]]
    if all(v == "within" for v in verdicts):
        out.append("On these workloads and budgets the claim holds.")
    elif "undecided" in verdicts:
        out.append("The verdict is pending the longer-budget study: until then, start with Adam at lr 1e-3 and "
                   "try a few lrs around it.")
    else:
        out.append("On these workloads and budgets the claim does not hold: tune Adam's lr.")
    if claim.get("extra"):
        out.append(claim["extra"])
    if claim.get("verdict"):
        out.append(f"The study's own overall verdict: {claim['verdict']}.")
    return out
