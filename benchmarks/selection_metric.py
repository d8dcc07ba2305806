"""Which validation metric should pick a run's best point (early stopping) and an optimizer's lr on a
classification task: accuracy or cross-entropy? And after how many epochs has the answer settled?

Trains MNIST-1D's MLP with each optimizer at every lr of the race's default grid, for EPOCHS epochs on
two seeds, recording validation *and* test loss/accuracy after every epoch (the test split is read
here only to measure the selection rule; the race never does this). Then, per optimizer and rule:

- tune on seed 0: the lr whose best-validation point (by the rule) is best;
- confirm on seed 1 at that lr: the test accuracy at seed 1's best-validation point (by the rule).

Prints, per optimizer, the selected lr, best epoch and confirmed test accuracy under each rule, and
the epoch at which seed 0's best validation accuracy at the selected lr came within 0.5 point of its
final best (where the curve has plateaued). Curves go to ``--save`` (JSON) so the analysis reruns
without training (``--load``).

    .venv/bin/python benchmarks/selection_metric.py --save /tmp/curves.json        # ~15 min on one core
    .venv/bin/python benchmarks/selection_metric.py --load /tmp/curves.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam")
LRS = (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0)
EPOCHS = 150
SEEDS = (0, 1)


def curve(task, name: str, lr: float, seed: int, epochs: int) -> list[dict[str, float]]:
    """Per-epoch val/test loss and accuracy of one run (GD: full batch, else batch 64)."""
    from descentlab.optim import resolve

    entry = resolve(name)
    model = task.make_model("mlp", seed=seed)
    optimizer = entry.create(list(model.parameters()), lr=lr)
    x, y, n = task.x_train, task.y_train, task.n_train
    size = n if entry.full_batch else 64
    generator = torch.Generator().manual_seed(seed)
    points = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, size):
            index = order[start:start + size]
            loss = F.cross_entropy(model(x[index]), y[index])
            if not math.isfinite(loss.item()):
                return points
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            point = {"epoch": epoch}
            for split, (xs, ys) in {"val": (task.x_val, task.y_val), "test": (task.x_test, task.y_test)}.items():
                out = model(xs)
                point[f"{split}_loss"] = float(F.cross_entropy(out, ys))
                point[f"{split}_acc"] = float((out.argmax(1) == ys).float().mean())
        if not math.isfinite(point["val_loss"]):
            return points
        points.append(point)
    return points


def best_point(points: list[dict[str, float]], rule: str) -> dict[str, float] | None:
    """The best-validation point by ``rule``: highest val_acc (ties: lower val_loss) or lowest val_loss."""
    if not points:
        return None
    if rule == "val_acc":
        return max(points, key=lambda p: (p["val_acc"], -p["val_loss"]))
    return min(points, key=lambda p: p["val_loss"])


def analyse(curves: dict[str, list[dict[str, float]]], epochs: int) -> None:
    print(f"{'optimizer':<10} {'rule':<8} {'lr':>8} {'best ep (seed 1)':>16} {'test acc (seed 1)':>18} "
          f"{'plateau ep':>10}")
    for name in OPTIMIZERS:
        for rule in ("val_acc", "val_loss"):
            tuned = {lr: best_point(curves.get(f"{name}|{lr}|0", []), rule) for lr in LRS}
            tuned = {lr: p for lr, p in tuned.items() if p is not None}
            if not tuned:
                continue
            sign = -1 if rule == "val_acc" else 1
            lr = min(tuned, key=lambda k: (sign * tuned[k][rule], k))
            confirm = best_point(curves.get(f"{name}|{lr}|1", []), rule)
            seed0 = curves[f"{name}|{lr}|0"]
            top = max(p["val_acc"] for p in seed0)
            plateau = next(p["epoch"] for p in seed0 if p["val_acc"] >= top - 0.005)
            print(f"{name:<10} {rule:<8} {lr:>8g} {confirm['epoch'] if confirm else '-':>16} "
                  f"{confirm['test_acc'] * 100 if confirm else float('nan'):>17.1f}% {plateau:>10}")
    for budget in (30, 60, 100, epochs):
        row = []
        for name in OPTIMIZERS:
            tuned = {lr: best_point(curves.get(f"{name}|{lr}|0", [])[:budget], "val_acc") for lr in LRS}
            tuned = {lr: p for lr, p in tuned.items() if p is not None}
            lr = min(tuned, key=lambda k: (-tuned[k]["val_acc"], k))
            confirm = best_point(curves.get(f"{name}|{lr}|1", [])[:budget], "val_acc")
            row.append(f"{name} {confirm['test_acc'] * 100:.1f}%" if confirm else f"{name} -")
        print(f"budget {budget:>3} epochs, val_acc rule, test acc on seed 1: " + ", ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", default=None, help="write the curves to this JSON file")
    parser.add_argument("--load", default=None, help="analyse curves saved earlier instead of training")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    if args.load:
        with open(args.load, encoding="utf-8") as handle:
            curves = json.load(handle)
    else:
        from descentlab.tasks import get_task

        torch.set_num_threads(1)
        task = get_task("mnist1d")
        curves = {}
        started = time.perf_counter()
        for name in OPTIMIZERS:
            for lr in LRS:
                for seed in SEEDS:
                    curves[f"{name}|{lr}|{seed}"] = curve(task, name, lr, seed, args.epochs)
            print(f"{name}: done after {time.perf_counter() - started:.0f} s", flush=True)
        if args.save:
            with open(args.save, "w", encoding="utf-8") as handle:
                json.dump(curves, handle)
    analyse(curves, args.epochs)


if __name__ == "__main__":
    main()
