"""descentlab.train: the one training loop (GD = full batch), checkpoints, divergence, metrics.

``train(task, model, optimizer, lr, batch_size, epochs | steps, seed, out, resume, ...)`` returns a
:class:`RunResult`. Files: ``loop.py`` (the loop), ``checkpoint.py`` (atomic, verified checkpoints),
``rundir.py`` (the run directory), ``divergence.py`` (when a run is lost), ``evaluate.py`` (metrics),
``setup.py`` (argument checks, optimizer factory), ``result.py`` (the result record).
"""

from __future__ import annotations

from .divergence import DEFAULT_FACTOR
from .loop import train
from .result import DIVERGED, METRIC_KEYS, OK, RunResult
from .track import DEFAULT_EPOCHS

__all__ = ["DEFAULT_EPOCHS", "DEFAULT_FACTOR", "DIVERGED", "METRIC_KEYS", "OK", "RunResult", "train"]
