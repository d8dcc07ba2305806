"""A task's data as the loop reads it, on the run's device.

In-memory tasks (tensors) are moved to the device once; each epoch permutes the training set once
(``x[perm]``) and batches are contiguous slices of it. Dataset-backed tasks are read item by item:
batch ``i`` of an epoch is ``default_collate`` of the items ``perm[i·B:(i+1)·B]``, moved to the
device. Either way the batches of a seed are the same examples in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..tasks.registry import LossFn, Task
from .evaluate import EVAL_CHUNK, evaluate

Batch = tuple[torch.Tensor, torch.Tensor]


class Data:
    def __init__(self, task: Task, device: torch.device) -> None:
        self.task, self.device = task, device
        self.n_train = task.n_train
        self.loss_fn: LossFn = task.loss_fn
        self.classification = task.kind == "classification"
        self._tensors: dict[str, Batch] = {}
        for split in ("train", "val", "test"):
            x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
            if x is not None and y is not None:
                self._tensors[split] = (x.to(device), y.to(device))

    def train_batches(self, perm: torch.Tensor | None, size: int) -> Callable[[int], Batch]:
        """Batch ``index`` of the epoch ordered by ``perm`` (None: the whole training set, in order)."""
        if "train" in self._tensors:
            x, y = self._tensors["train"]
            if perm is None:
                return lambda index: (x, y)
            order = perm.to(self.device)
            x, y = x[order], y[order]
            return lambda index: (x[index * size:(index + 1) * size], y[index * size:(index + 1) * size])
        order = torch.arange(self.n_train) if perm is None else perm
        if perm is None:
            size = self.n_train
        return lambda index: self._to_device(self.task.batch("train", order[index * size:(index + 1) * size]))

    def tensors(self, split: str) -> Batch:
        """The whole of an in-memory ``split`` as ``(inputs, targets)`` on the device."""
        if split not in self._tensors:
            raise ValueError(f"split {split!r} of task {self.task.name!r} is not in memory")
        return self._tensors[split]

    def evaluate(self, net: nn.Module, split: str) -> tuple[float, float | None]:
        if split in self._tensors:
            x, y = self._tensors[split]
            chunks = ((x[s:s + EVAL_CHUNK], y[s:s + EVAL_CHUNK]) for s in range(0, len(x), EVAL_CHUNK))
        else:
            chunks = (self._to_device(batch) for batch in self.task.chunks(split, EVAL_CHUNK))
        return evaluate(net, chunks, self.loss_fn, self.classification)

    def _to_device(self, batch: Batch) -> Batch:
        return batch[0].to(self.device), batch[1].to(self.device)
