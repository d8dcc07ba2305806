"""Suite-wide settings: one torch thread per test worker (``make test`` runs two workers on two
cores; small models are faster on one thread and oversubscription slows them 10x or more)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
