"""Step time under a schedule that moves a hyper-parameter every step, against the same step with fixed ones.

    .venv/bin/python benchmarks/schedule_step.py [--steps 200] [--repeats 3]

OneCycleLR with ``cycle_momentum=True`` sets Adam's and Lion's betas (SGD's momentum) anew before every
step. The step must cost about what it costs with fixed betas: the engine's per-step lookups (the shape
probe of ``optim/probe.py``, the fused kernel's) must not redo per-value work for every new value.
Layouts: six small tensors, and a small MLP (784-128-64-10). Default engine (``auto``); ``fixed`` steps the
same optimizer under OneCycleLR with ``cycle_momentum=False`` (the lr still moves). Median over repeats of
the mean ms per step of ``--steps`` steps, gradients set once (the step alone is timed), each run with the
probe's caches emptied (as in a fresh process); also how many shape probes ran in a cycled run's timed steps
(its warm-up steps probe the first values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.optim import lr_scheduler

import descentlab.optim as dl
from descentlab.examples.lion import Lion
from descentlab.optim import probe

OPTIMIZERS = {
    "Adam": lambda params: dl.Adam(params, lr=1e-3),
    "SGD momentum": lambda params: dl.SGD(params, lr=1e-2, momentum=0.9),
    "Lion (define_rule)": lambda params: Lion(params, lr=1e-4),
}


def _params(layout: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    if layout == "6 small tensors":
        shapes = [(3, 4), (17,), (), (33, 5), (8, 8), (2, 3, 4)]
        params = [nn.Parameter(torch.randn(s)) for s in shapes]
    else:
        params = list(nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                    nn.Linear(64, 10)).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def measure(name: str, layout: str, cycle: bool, steps: int) -> tuple[float, int]:
    """(mean ms per step, shape probes run) over ``steps`` steps after 5 warm-up steps."""
    for attribute, cache in vars(probe).items():  # as in a fresh process: no value probed before
        if attribute.startswith("_") and not attribute.startswith("__") and isinstance(cache, dict):
            cache.clear()
    params = _params(layout)
    opt = OPTIMIZERS[name](params)
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps + 10, cycle_momentum=cycle)
    for _ in range(5):
        opt.step()
        scheduler.step()
    runs = [0]
    original = probe._probe

    def counted(*args, **kwargs):
        runs[0] += 1
        return original(*args, **kwargs)

    probe._probe = counted
    try:
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
            scheduler.step()
        elapsed = time.perf_counter() - start
    finally:
        probe._probe = original
    return elapsed / steps * 1e3, runs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"{'optimizer':20} {'layout':16} {'fixed betas ms':>15} {'cycled betas ms':>16} {'ratio':>6} "
          f"{'probes timed':>13}")
    for layout in ("6 small tensors", "MLP 784-128-64-10"):
        for name in OPTIMIZERS:
            fixed = statistics.median(measure(name, layout, False, args.steps)[0] for _ in range(args.repeats))
            cycled_runs = [measure(name, layout, True, args.steps) for _ in range(args.repeats)]
            cycled = statistics.median(ms for ms, _ in cycled_runs)
            print(f"{name:20} {layout:16} {fixed:15.3f} {cycled:16.3f} {cycled / fixed:6.2f} "
                  f"{max(runs for _, runs in cycled_runs):13d}")


if __name__ == "__main__":
    main()
