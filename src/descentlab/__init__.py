"""descentlab: the classic gradient-descent family as drop-in torch.optim optimizers, and a lab
to race them on real tasks and watch them move on 2-D surfaces."""

from __future__ import annotations

__version__ = "0.1.0"
