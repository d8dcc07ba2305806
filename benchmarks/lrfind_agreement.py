"""How often does the lr range test's suggestion land within half a decade of the lr the race selects?

Reads a finished study (``descentlab study --out DIR``), and for every workload and optimizer runs
``descentlab.lrfind.lr_find`` as ``race --lrs auto`` would (the race's batch size for that optimizer,
capped at one race run's steps, seed 0), then compares the suggestion with the race's selected lr:
"agrees" when |log10(suggestion / selected)| <= 0.5 (plus 0.001: the grid's lrs have 3 significant digits,
1 and 0.316 are 0.5003 decades apart). Also counts the pairs whose selected lr lies inside the grid
``race --lrs auto`` would centre on the suggestion (5 half-decade points, ±1 decade). Prints one row per
pair and the counts.

    PYTHONPATH=src python benchmarks/lrfind_agreement.py runs/study
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from descentlab.lrfind import centred_grid, lr_find
from descentlab.racing import RaceConfig, ResultsStore, select
from descentlab.racing.store import CONFIG
from descentlab.tasks import resolve_task

ROUNDING = 1e-3


def settled_races(study: Path) -> list[tuple[Path, RaceConfig]]:
    """Per workload of the study, its race at the budget the plateau rule settled on (the largest of
    ``race``, ``race-e<E>``)."""
    out = []
    for workload in sorted(p for p in study.iterdir() if p.is_dir()):
        races = [(d, RaceConfig.from_json(json.loads((d / CONFIG).read_text())))
                 for d in workload.glob("race*") if (d / CONFIG).exists()]
        if races:
            out.append(max(races, key=lambda item: item[1].epochs))
    return out


def main(study: Path) -> None:
    torch.set_num_threads(1)
    rows, agree, inside, total = [], 0, 0, 0
    for race_dir, config in settled_races(study):
        with ResultsStore.open(race_dir, config.to_json()) as store:
            chosen = select(config, store.records)
        task = resolve_task(config.task, **config.task_options)
        n = task.n_train
        for (optimizer, _schedule), selection in chosen.items():
            setting = selection.chosen if selection is not None else None  # race v3: a Selection of a Setting
            selected = setting.lr if setting is not None else None
            size = setting.batch_size if setting is not None else config.batch_sizes_for(optimizer)[0]
            steps = config.epochs * math.ceil(n / (n if size is None else min(size, n)))
            test = lr_find(task, model=config.model, optimizer=optimizer, batch_size=size, max_steps=steps)
            if selected is None or test.suggestion is None:
                rows.append((race_dir.parent.name, optimizer, selected, test.suggestion, None))
                continue
            decades = math.log10(test.suggestion / selected)
            total += 1
            agree += abs(decades) <= 0.5 + ROUNDING
            inside += selected in centred_grid(test.suggestion)
            rows.append((race_dir.parent.name, optimizer, selected, test.suggestion, decades))
    print(f"{'workload':<14} {'optimizer':<10} {'selected':>9} {'suggested':>10} {'decades':>8}")
    for workload, optimizer, selected, suggestion, decades in rows:
        print(f"{workload:<14} {optimizer:<10} {selected or float('nan'):>9.3g} {suggestion or float('nan'):>10.3g} "
              f"{'-' if decades is None else f'{decades:+.2f}':>8}")
    print(f"within half a decade of the race's selected lr: {agree} of {total}")
    print(f"selected lr inside the auto grid centred on the suggestion: {inside} of {total}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__)
        sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    main(Path(sys.argv[1]))
