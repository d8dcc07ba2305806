"""Overhead of descentlab's training loop: steps/s of ``descentlab.train.train`` vs a hand-written plain
PyTorch loop doing the same work (same task, model, optimizer, batch size, epochs; a fresh shuffle per
epoch, a running training loss, one validation pass per epoch), measured side by side in one run.

    .venv/bin/python benchmarks/loop_overhead.py [--batch-size 100] [--epochs 20] [--repeats 5] [--threads 1]

Prints the median steps/s of each and the ratio train()/plain (target >= 0.9). Runs alternate
(plain, train, plain, train, ...) so background load hits both alike.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from descentlab.optim import create
from descentlab.tasks import get_task
from descentlab.train import train


def plain_loop(task, optimizer: str, lr: float, batch_size: int, epochs: int, seed: int) -> int:
    """The loop a user would write: index a shuffled permutation per step, log the loss, evaluate per epoch."""
    model = task.make_model("mlp", seed=seed)
    opt = create(optimizer, model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    x, y, n = task.x_train, task.y_train, task.n_train
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        running = 0.0
        for start in range(0, n, batch_size):
            index = perm[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = task.loss_fn(model(x[index]), y[index])
            running += loss.item()
            loss.backward()
            opt.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            output = model(task.x_val)
            _ = (task.loss_fn(output, task.y_val).item(), (output.argmax(-1) == task.y_val).float().mean().item())
        model.train()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("mnist1d")
    expected = args.epochs * math.ceil(task.n_train / args.batch_size)

    def run_train() -> int:
        return train(task, model="mlp", optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                     epochs=args.epochs, seed=0).steps

    def run_plain() -> int:
        return plain_loop(task, args.optimizer, args.lr, args.batch_size, args.epochs, seed=0)

    run_plain(), run_train()  # warm-up (first-call imports, allocator)
    rates: dict[str, list[float]] = {"plain": [], "train": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", run_plain), ("train", run_train)):
            start = time.perf_counter()
            steps = fn()
            rates[name].append(steps / (time.perf_counter() - start))
            assert steps == expected, (name, steps, expected)
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["train"])
    print(f"MNIST-1D MLP 100-100, {args.optimizer} lr={args.lr:g}, batch {args.batch_size}, {args.epochs} epochs "
          f"({expected} steps), {args.threads} thread(s), median of {args.repeats}")
    print(f"plain PyTorch loop : {plain:8.1f} steps/s")
    print(f"descentlab train() : {ours:8.1f} steps/s")
    print(f"ratio train/plain  : {ours / plain:8.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
