"""descentlab: the classic gradient-descent family as drop-in torch.optim optimizers, and a lab
to race them on real tasks and watch them move on 2-D surfaces."""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Lazy: ``descentlab.race(...)`` (a callable package) without importing torch at ``import descentlab``.
    if name == "race":
        import importlib

        return importlib.import_module(".race", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
