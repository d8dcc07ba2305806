"""descentlab: the classic gradient-descent family as drop-in torch.optim optimizers, and a lab
to race them on real tasks and watch them move on 2-D surfaces.

``descentlab.race`` is :func:`descentlab.lab.race`; ``__version__`` comes from :mod:`descentlab.version`
(the bottom of the import layers, so no module below this one needs to import the package root)."""

from __future__ import annotations

from .lab import race
from .version import __version__

__all__ = ["__version__", "race"]
