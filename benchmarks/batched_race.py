"""The batched race engine against the per-run one, measured side by side in one run of this script.

    .venv/bin/python benchmarks/batched_race.py                 # the default race (what `make race` runs)
    .venv/bin/python benchmarks/batched_race.py --epochs 10     # the same grid on a shorter budget
    .venv/bin/python benchmarks/batched_race.py --device cuda   # on a GPU (one run at a time per engine)

Prints (first, forward + backward of the stacked model against vmap and one module at a time, and
the cost per run-step of a tuning and a confirmation batch against a run alone):
1. Wall time of the same race (protocol, grid, seeds, budget) with ``--engine batched`` and
   ``--engine per-run`` (each in a fresh directory, same ``--jobs``), their ratio, and the peak
   resident memory of the largest worker process of each.
2. Agreement over the first 20 steps: every tuning configuration of the race (optimizer × lr on
   the first seed) and every confirmation seed of Adam, trained batched and per-run for 20 steps;
   per configuration the largest relative difference of a parameter tensor, ‖w_b − w_p‖/‖w_p‖, in
   float32 and in float64 (the float64 one shows the math is the same; float32 adds rounding, which
   ReLU kinks and normalised steps can amplify).
3. The end: per optimizer, the mean test accuracy over seeds of each engine, the per-run standard
   deviation over seeds, and whether the two means are within it.
4. The rounding noise floor of that comparison: at the per-run race's selected lrs, every seed
   trained again (a) per-run with every initial weight moved by one float32 ulp, (b) per-run on two
   torch threads (another matmul blocking: other float32 rounding at every step) and (c) batched; the
   mean test accuracies of each against the per-run race's. How far rounding alone moves a 60-epoch
   run's test accuracy is the yardstick for the batched engine's differences.
5. With more seeds (``--more-seeds N``, default 10): at the per-run race's selected lrs, each
   optimizer's N seeds trained by both engines; the difference of the mean test accuracies against
   its standard error (√(s_b²/N + s_p²/N)). Three seeds cannot tell a 1-point difference from noise;
   ten can tell a real one.
6. The same race in float64 (MNIST-1D's inputs as float64, so the models are float64) on a shorter
   budget, both engines: the selected lrs and the largest difference of any run's metrics. With
   rounding out of the picture the two engines make the same race.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def race_once(engine: str, out: Path, epochs: int | None, jobs: int | None, device: str,
              ) -> tuple[float, float, float]:
    """Run the race in a child process; (wall seconds, CPU seconds of all its processes, peak RSS in MiB
    of its largest process)."""
    command = [sys.executable, "-m", "descentlab", "race", "--quiet", "--engine", engine, "--out", str(out),
               "--device", device]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    code = ("import resource, subprocess, sys, time; s = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(time.perf_counter() - s, u.ru_utime + u.ru_stime, u.ru_maxrss)")
    output = subprocess.run([sys.executable, "-c", code, *command], check=True, capture_output=True, text=True)
    wall, cpu, rss_kib = output.stdout.split()
    return float(wall), float(cpu), float(rss_kib) / 1024


def batch_of(config: Any, optimizer: str) -> int | None:
    """The race's batch size for ``optimizer`` (race v3 takes a list of them: these races have one)."""
    return config.batch_sizes_for(optimizer)[0]


def first_stage(config: Any) -> list[Any]:
    """The race's first runs: every setting of the grid on the first seed (race v3's stages; v2's tuning runs)."""
    from descentlab.racing.stages import plan_arm

    return [spec for arm in config.arms() for spec in plan_arm(config, arm, []).next_runs]


def agreement(steps: int) -> list[tuple[str, float | str, float | str]]:
    import torch

    from descentlab.racing.protocol import make_config
    from descentlab.tasks import get_task
    from descentlab.train import train
    from descentlab.train.batched import train_batched
    from descentlab.train.member import Config

    torch.set_num_threads(1)
    config = make_config()
    task32 = get_task(config.task)
    task64 = dataclasses.replace(task32, **{f"x_{s}": getattr(task32, f"x_{s}").double()
                                            for s in ("train", "val", "test")})
    configs = [Config(s.optimizer, s.schedule, s.lr, s.seed) for s in first_stage(config)]
    configs += [Config("adam", "constant", 1e-3, seed) for seed in config.seeds[1:]]
    rows = []
    by_dtype = {}
    for name, task in (("float32", task32), ("float64", task64)):
        groups: dict[int | None, list[Config]] = {}
        for c in configs:
            groups.setdefault(batch_of(config, c.optimizer), []).append(c)
        worst: dict[Config, float | str] = {}
        for batch_size, group in groups.items():
            results = train_batched(task, group, batch_size=batch_size, steps=steps, keep_model=True)
            for c, result in zip(group, results, strict=True):
                alone = train(task, optimizer=c.optimizer, lr=c.lr, seed=c.seed, batch_size=batch_size, steps=steps,
                              keep_model=True)
                if result.status != "ok" or alone.status != "ok":  # compared by where each was lost
                    worst[c] = f"lost at {result.diverged_at_step} / {alone.diverged_at_step}"
                    continue
                worst[c] = max(((mine - theirs).norm() / theirs.norm()).item() for mine, theirs in
                               zip(result.model.parameters(), alone.model.parameters(), strict=True))
        by_dtype[name] = worst
    for c in configs:
        rows.append((f"{c.optimizer} lr={c.lr:g} seed={c.seed}", by_dtype["float32"][c], by_dtype["float64"][c]))
    return rows


def forward_backward(k: int = 23, repeats: int = 200) -> None:
    """Forward + backward of k stacked MNIST-1D MLPs on one shared batch: the direct form against vmap,
    and k separate modules one after another."""
    import time

    import torch

    from descentlab.tasks import get_task
    from descentlab.train.stacked_model import StackedModel

    torch.set_num_threads(1)
    task = get_task("mnist1d")
    modules = [task.make_model("mlp", seed) for seed in range(k)]
    x, y = task.x_train[:64], task.y_train[:64]

    def timed(step) -> float:
        for _ in range(10):
            step()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - started) / repeats * 1e3

    def stacked_step(model: StackedModel):
        def step() -> None:
            for param in model.params:
                param.grad = None
            model.losses(x, y, task.loss_fn, shared=True).sum().backward()
        return step

    direct, through_vmap = StackedModel(modules), StackedModel(modules)
    through_vmap.direct = False

    def one_by_one() -> None:
        for module in modules:
            module.zero_grad(set_to_none=True)
            task.loss_fn(module(x), y).backward()

    print(f"\n## forward + backward, k = {k} MLPs, batch 64, one thread (ms per step of all k)")
    print(f"direct {timed(stacked_step(direct)):.2f}   vmap {timed(stacked_step(through_vmap)):.2f}   "
          f"one module at a time {timed(one_by_one):.2f}")


def batch_costs(epochs: int = 5) -> None:
    """Milliseconds per run-step of a tuning batch (23 runs of 3 optimizers on one seed, as the default
    race's second batch) and of a confirmation batch (8 runs: 3 optimizers × seeds 0-2), against a run
    trained alone; in-process, one thread, after a warm-up."""
    import time

    import torch

    from descentlab.tasks import get_task
    from descentlab.train import train
    from descentlab.train.batched import train_batched
    from descentlab.train.member import Config

    torch.set_num_threads(1)
    task = get_task("mnist1d")
    grid = (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0)
    tuning = ([Config("adagrad", "constant", lr, 0) for lr in grid[5:]]
              + [Config(name, "constant", lr, 0) for name in ("rmsprop", "adam") for lr in grid]
              + [Config("adam", "constant", 5e-4, 0)])
    confirmation = ([Config("sgd", "constant", 1.0, seed, True) for seed in range(3)]
                    + [Config("momentum", "constant", 0.1, seed, True) for seed in range(3)]
                    + [Config("adagrad", "constant", 0.0316, seed, True) for seed in range(2)])
    train_batched(task, tuning[:2], epochs=1)
    train(task, optimizer="adam", lr=1e-3, epochs=1)
    steps = epochs * 50
    print(f"\n## ms per run-step, {epochs} epochs, in-process, one thread")
    for label, configs in (("tuning batch, k = 23", tuning), ("confirmation batch, k = 8", confirmation)):
        started = time.perf_counter()
        train_batched(task, configs, epochs=epochs)
        print(f"{label}: {(time.perf_counter() - started) / len(configs) / steps * 1e3:.3f}")
    for name, lr in (("adam", 1e-3), ("momentum", 0.1)):
        started = time.perf_counter()
        train(task, optimizer=name, lr=lr, epochs=epochs, seed=1, evaluate_test=True)
        print(f"one {name} run alone: {(time.perf_counter() - started) / steps * 1e3:.3f}")


def _cell(value: float | str) -> str:
    return f"{value:>10.1e}" if isinstance(value, float) else f"{value:>10}"


def end_accuracy(batched_dir: Path, per_run_dir: Path) -> list[tuple[str, float, float, float, float, float, bool]]:
    import json

    from descentlab.racing.store import RESULTS

    def finals(directory: Path) -> dict[str, tuple[float, list[float]]]:
        out: dict[str, tuple[float, list[float]]] = {}
        for line in (directory / RESULTS).read_text().splitlines():
            record = json.loads(line)
            if record["phase"] == "final" and record["test_acc"] is not None:
                out.setdefault(record["optimizer"], (record["lr"], []))[1].append(record["test_acc"])
        return out

    batched, per_run = finals(batched_dir), finals(per_run_dir)
    rows = []
    for name, (lr_p, theirs) in per_run.items():
        if name not in batched:
            continue
        lr_b, mine = batched[name]
        spread = statistics.stdev(theirs) if len(theirs) > 1 else 0.0
        gap = abs(statistics.mean(mine) - statistics.mean(theirs))
        rows.append((name, lr_b, lr_p, statistics.mean(mine), statistics.mean(theirs), spread, gap <= spread))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="budget per run (default: the race's default)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: the race's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="steps of the agreement check")
    parser.add_argument("--no-race", action="store_true", help="only the agreement check")
    parser.add_argument("--no-agreement", action="store_true", help="only the races")
    parser.add_argument("--more-seeds", type=int, default=10, help="seeds of the engines' comparison (0: skip)")
    parser.add_argument("--float64-epochs", type=int, default=10, help="budget of the float64 race (0: skip)")
    parser.add_argument("--keep", default=None, help="keep the two race directories here (default: a temporary one)")
    args = parser.parse_args()
    print(f"machine: {multiprocessing.cpu_count()} CPUs, load average {Path('/proc/loadavg').read_text().split()[:3]}")

    forward_backward()
    batch_costs()
    if not args.no_agreement:
        print_agreement(args.steps)
    if args.no_race:
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.keep) if args.keep else Path(tmp)
        races(directory, args)
        noise_floor(directory / "per-run", args.epochs)
        if args.more_seeds:
            more_seeds(directory / "per-run", args.epochs, args.more_seeds)
        if args.float64_epochs:
            float64_race(Path(tmp) / "float64", args.float64_epochs, args.jobs)


def _nudged(factory):
    """``factory`` whose modules start with every weight one float32 ulp higher."""
    import torch

    def make(**options):
        module = factory(**options)
        with torch.no_grad():
            for param in module.parameters():
                param.copy_(torch.nextafter(param, torch.full_like(param, float("inf"))))
        return module

    return make


def noise_floor(per_run_dir: Path, epochs: int | None) -> None:
    import json

    import torch

    from descentlab.racing.protocol import make_config
    from descentlab.racing.store import RESULTS
    from descentlab.tasks import get_task
    from descentlab.train import train
    from descentlab.train.batched import train_batched
    from descentlab.train.member import Config

    torch.set_num_threads(1)
    config = make_config(epochs=epochs)
    task = get_task(config.task)
    nudged = dataclasses.replace(task, models={name: _nudged(f) for name, f in task.models.items()})
    finals = [json.loads(line) for line in (per_run_dir / RESULTS).read_text().splitlines()]
    finals = [r for r in finals if r["phase"] == "final" and r["status"] == "ok"]
    race_acc = {(r["optimizer"], r["seed"]): r["test_acc"] for r in finals}
    configs = sorted({Config(r["optimizer"], r["schedule"], r["lr"], r["seed"], True) for r in finals},
                     key=lambda c: (config.optimizers.index(c.optimizer), c.seed))
    batched_acc = {}
    for batch_size in {batch_of(config, c.optimizer) for c in configs}:
        group = [c for c in configs if batch_of(config, c.optimizer) == batch_size]
        for c, result in zip(group, train_batched(task, group, batch_size=batch_size, epochs=config.epochs),
                             strict=True):
            batched_acc[(c.optimizer, c.seed)] = result.test_acc
    def per_run(on: Any, threads: int) -> dict[tuple[str, int], float]:
        torch.set_num_threads(threads)
        try:
            return {(c.optimizer, c.seed): train(on, optimizer=c.optimizer, lr=c.lr, seed=c.seed,
                                                 batch_size=batch_of(config, c.optimizer), epochs=config.epochs,
                                                 evaluate_test=True).test_acc for c in configs}
        finally:
            torch.set_num_threads(1)

    nudged_acc, threads_acc = per_run(nudged, 1), per_run(task, 2)
    print("\n## rounding noise floor: mean test accuracy over seeds at the per-run race's selected lr")
    print(f"{'optimizer':10} {'lr':>8} {'per-run':>9} {'std':>7} {'+1 ulp':>8} {'2 thr':>8} {'batched':>8}  "
          "|Δ +1 ulp|  |Δ 2 threads|  |Δ batched|")
    for name in config.optimizers:
        seeds = [c.seed for c in configs if c.optimizer == name]
        if not seeds:
            continue
        lr = next(c.lr for c in configs if c.optimizer == name)
        mean = {label: statistics.mean(values[(name, s)] for s in seeds)
                for label, values in (("race", race_acc), ("nudged", nudged_acc), ("threads", threads_acc),
                                      ("batched", batched_acc))}
        spread = statistics.stdev([race_acc[(name, s)] for s in seeds]) if len(seeds) > 1 else 0.0
        gaps = [abs(mean[label] - mean["race"]) for label in ("nudged", "threads", "batched")]
        print(f"{name:10} {lr:8.3g} {mean['race']:9.4f} {spread:7.4f} {mean['nudged']:8.4f} {mean['threads']:8.4f} "
              f"{mean['batched']:8.4f}  {gaps[0]:9.4f}  {gaps[1]:12.4f}  {gaps[2]:10.4f}")


def more_seeds(per_run_dir: Path, epochs: int | None, count: int) -> None:
    import json
    import math

    import torch

    from descentlab.racing.protocol import make_config
    from descentlab.racing.store import RESULTS
    from descentlab.tasks import get_task
    from descentlab.train import train
    from descentlab.train.batched import train_batched
    from descentlab.train.member import Config

    torch.set_num_threads(1)
    config = make_config(epochs=epochs)
    task = get_task(config.task)
    rows = [json.loads(line) for line in (per_run_dir / RESULTS).read_text().splitlines()]
    selected = {r["optimizer"]: r["lr"] for r in rows if r["phase"] == "final"}
    print(f"\n## {count} seeds per optimizer at the per-run race's selected lr: mean test accuracy (best point)")
    print(f"{'optimizer':10} {'lr':>8} {'batched':>16} {'per-run':>16}  {'Δ':>8}  Δ / standard error")
    for name in config.optimizers:
        if name not in selected:
            continue
        batch_size = batch_of(config, name)
        configs = [Config(name, "constant", selected[name], seed, True) for seed in range(count)]
        batched = [r.test_acc for r in train_batched(task, configs, batch_size=batch_size, epochs=config.epochs)]
        alone = [train(task, optimizer=name, lr=c.lr, seed=c.seed, batch_size=batch_size, epochs=config.epochs,
                       evaluate_test=True).test_acc for c in configs]
        if None in batched or None in alone:
            print(f"{name:10} {selected[name]:8.3g}  a run diverged")
            continue
        gap = statistics.mean(batched) - statistics.mean(alone)
        error = math.sqrt(statistics.variance(batched) / count + statistics.variance(alone) / count)
        print(f"{name:10} {selected[name]:8.3g} {statistics.mean(batched):8.4f} ± {statistics.stdev(batched):.4f} "
              f"{statistics.mean(alone):8.4f} ± {statistics.stdev(alone):.4f}  {gap:+8.4f}  {gap / error:+.2f}")


def float64_race(directory: Path, epochs: int, jobs: int | None) -> None:
    import time

    from descentlab.racing.core import run_race
    from descentlab.tasks import get_task

    task = get_task("mnist1d")
    task = dataclasses.replace(task, **{f"x_{s}": getattr(task, f"x_{s}").double() for s in ("train", "val", "test")})
    results = {}
    for engine in ("batched", "per-run"):
        started = time.perf_counter()
        results[engine] = run_race(task, epochs=epochs, jobs=jobs, out=directory / engine, progress=False,
                                   engine=engine)
        print(f"\nfloat64, {epochs} epochs, {engine}: {time.perf_counter() - started:.1f} s", flush=True)
    batched, per_run = results["batched"], results["per-run"]
    print(f"selected lrs equal: {batched.selected == per_run.selected} ({per_run.selected})")
    theirs = {r.spec: r for r in per_run.records}
    worst = 0.0
    for record in batched.records:
        twin = theirs[record.spec]
        for metric in ("best_val_acc", "best_val_loss", "val_loss", "test_acc", "test_loss", "end_test_loss"):
            mine, other = getattr(record, metric), getattr(twin, metric)
            if mine is not None and other is not None:
                worst = max(worst, abs(mine - other) / max(abs(other), 1e-12))
            elif (mine is None) != (other is None):
                worst = float("inf")
    print(f"largest relative difference of any run's metric: {worst:.1e} over {len(batched.records)} runs; "
          f"status equal: {all(r.status == theirs[r.spec].status for r in batched.records)}")


def print_agreement(steps: int) -> None:
    print(f"\n## agreement over the first {steps} steps (max over tensors of ‖w_b − w_p‖/‖w_p‖)")
    rows = agreement(steps)
    print(f"{'configuration':32} {'float32':>10} {'float64':>10}")
    for label, f32, f64 in rows:
        print(f"{label:32} {_cell(f32)} {_cell(f64)}")
    f32s = [r[1] for r in rows if isinstance(r[1], float)]
    f64s = [r[2] for r in rows if isinstance(r[2], float)]
    lost = sum(isinstance(r[1], str) for r in rows)
    print(f"float32: {sum(v <= 1e-5 for v in f32s)}/{len(f32s)} trained configurations within 1e-5 (median "
          f"{statistics.median(f32s):.1e}, max {max(f32s):.1e}); float64: max {max(f64s):.1e}; {lost} diverged "
          "(batched step / per-run step)")


def races(directory: Path, args: argparse.Namespace) -> None:
    results = {}
    for engine in ("batched", "per-run"):
        results[engine] = race_once(engine, directory / engine, args.epochs, args.jobs, args.device)
        wall, cpu, rss = results[engine]
        print(f"\n{engine}: {wall:.1f} s wall, {cpu:.1f} CPU-seconds, largest process peak RSS {rss:.0f} MiB "
              f"(load average now {Path('/proc/loadavg').read_text().split()[:3]})", flush=True)
    print(f"\n## per-run / batched: wall time {results['per-run'][0] / results['batched'][0]:.2f}x, "
          f"CPU time {results['per-run'][1] / results['batched'][1]:.2f}x")
    print("\n## end: mean test accuracy over seeds (best validation point), at each engine's selected lr")
    print(f"{'optimizer':10} {'lr b':>8} {'lr p':>8} {'batched':>9} {'per-run':>9} {'per-run std':>12}  within one std")
    for name, lr_b, lr_p, mine, theirs, spread, ok in end_accuracy(directory / "batched", directory / "per-run"):
        print(f"{name:10} {lr_b:8.3g} {lr_p:8.3g} {mine:9.4f} {theirs:9.4f} {spread:12.4f}  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
