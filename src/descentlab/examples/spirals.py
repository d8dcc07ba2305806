"""Your own task: two spirals, each point made from its index by a Dataset (no tensor holds the data)."""

import math

import torch
from torch import nn

from descentlab.tasks import Task, custom_task


class Spirals(torch.utils.data.Dataset):
    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label, t = index % 2, 2 * math.pi * torch.rand(1, generator=g).item()
        point = torch.tensor([t * math.cos(t + math.pi * label), t * math.sin(t + math.pi * label)]) / 5
        return point + 0.05 * torch.randn(2, generator=g), label


def make_task(size: int = 400) -> Task:
    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))

    return custom_task(Spirals(size, 0), Spirals(size // 4, 1), Spirals(size // 4, 2), model=model, name="spirals")
