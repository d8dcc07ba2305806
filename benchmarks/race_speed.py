"""Time the default race (data generation included) and the same runs done by a plain sequential
PyTorch loop, and print runs/s for both and their ratio, measured in one run of this script.

    .venv/bin/python benchmarks/race_speed.py            # the default race (what `make race` runs)
    .venv/bin/python benchmarks/race_speed.py --quick    # the --quick race
    .venv/bin/python benchmarks/race_speed.py --workers  # processes vs threads vs one process, same runs

The plain loop is what one would write by hand: torch.optim's class for each optimizer (same
hyper-parameters as the registry entry), the same model, data, batch size (GD: full batch), epochs,
per-epoch validation and, for the final runs, one test evaluation; one process, one torch thread
(faster than torch's default for a model this small). The race runs them on --jobs processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F


def plain_run(task, entry, lr: float, batch_size: int | None, epochs: int, seed: int, evaluate_test: bool) -> float:
    """One run by hand; returns the final validation loss."""
    model = task.make_model("mlp", seed=seed)
    optimizer = getattr(torch.optim, entry.cls.__name__)(model.parameters(), lr=lr, **entry.preset)
    x, y = task.x_train, task.y_train
    n = len(x)
    generator = torch.Generator().manual_seed(seed)
    val_loss = float("nan")
    for _ in range(epochs):
        order = torch.arange(n) if batch_size is None else torch.randperm(n, generator=generator)
        size = n if batch_size is None else batch_size
        for start in range(0, n, size):
            index = order[start:start + size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(task.x_val), task.y_val))
        if not torch.isfinite(torch.tensor(val_loss)):
            break
    if evaluate_test:
        with torch.no_grad():
            float(F.cross_entropy(model(task.x_test), task.y_test))
    return val_loss


def compare_workers(n_runs: int = 8, epochs: int = 10) -> None:
    """The same runs four ways: how the race should use two cores (it uses forked processes)."""
    from concurrent.futures import ThreadPoolExecutor

    from descentlab.racing import RunSpec, runner
    from descentlab.racing.core import default_run
    from descentlab.tasks import get_task

    task = get_task("mnist1d")
    specs = [RunSpec("tune", "adam", "constant", 1e-3, seed, 64) for seed in range(n_runs)]
    context = runner.RaceContext(run_fn=default_run, task=task, model="mlp", epochs=epochs, device="cpu")
    runner._preload()
    default_threads = torch.get_num_threads()
    timings = {}
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        for spec in specs:
            runner.run_one(spec, context)
        timings[f"1 process, {threads} torch thread(s)"] = time.perf_counter() - start
    torch.set_num_threads(1)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda spec: runner.run_one(spec, context), specs))
    timings["2 Python threads, 1 torch thread"] = time.perf_counter() - start
    start = time.perf_counter()
    list(runner.run_all(specs, context, jobs=2))
    timings["2 forked processes, 1 torch thread each (the race)"] = time.perf_counter() - start
    torch.set_num_threads(default_threads)
    base = timings["1 process, 1 torch thread(s)"]
    print(f"{n_runs} runs of Adam, MNIST-1D MLP, {epochs} epochs, batch 64:")
    for name, seconds in timings.items():
        print(f"  {name:<52} {seconds:6.2f} s   speed-up vs 1 process/1 thread: {base / seconds:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--skip-plain", action="store_true", help="time the race only")
    parser.add_argument("--workers", action="store_true", help="only compare ways of using the cores")
    args = parser.parse_args()
    if args.workers:
        compare_workers()
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DESCENTLAB_CACHE"] = os.path.join(tmp, "cache")  # generate MNIST-1D inside the timing
        import descentlab
        from descentlab.optim import resolve
        from descentlab.report import format_table
        from descentlab.tasks import get_task

        start = time.perf_counter()
        result = descentlab.race("mnist1d", quick=args.quick, epochs=args.epochs, jobs=args.jobs,
                                 out=os.path.join(tmp, "race"), progress=sys.stderr.isatty())
        race_s = time.perf_counter() - start
        runs = result.records
        print(format_table(result.summary))
        print(f"\nrace: {len(runs)} runs, {race_s:.1f} s wall (data generation, {result.config.epochs} epochs/run, "
              f"report included) = {len(runs) / race_s:.2f} runs/s")
        busy = sum(row.wall_s or 0.0 for row in runs)
        print(f"race: the runs' own training time adds up to {busy:.1f} s = {busy / race_s:.2f} cores busy on average")
        if args.skip_plain:
            return 0

        torch.set_num_threads(1)
        task = get_task("mnist1d")
        config = result.config
        start = time.perf_counter()
        for row in runs:
            batch = None if row.optimizer in config.full_batch else config.batch_size
            plain_run(task, resolve(row.optimizer), row.lr, batch, config.epochs, row.seed, row.phase == "final")
        plain_s = time.perf_counter() - start
        print(f"plain sequential torch loop: the same {len(runs)} runs in {plain_s:.1f} s = "
              f"{len(runs) / plain_s:.2f} runs/s (training only: no data generation, no report)")
        print(f"ratio race / plain (runs/s): {plain_s / race_s:.2f}x on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
