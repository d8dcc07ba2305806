"""The race: tune every optimizer's learning rate on one seed, rerun the winner on every seed, and
report which optimizer to use (see :mod:`descentlab.race.protocol` for the protocol)."""

import sys
import types
from typing import Any

from .core import RaceResult, race
from .protocol import DEFAULT_LRS, DEFAULT_OPTIMIZERS, RaceConfig, make_config, select_lr
from .store import ResultsStore
from .summary import RaceSummary, format_table, summarize

__all__ = ["DEFAULT_LRS", "DEFAULT_OPTIMIZERS", "RaceConfig", "RaceResult", "RaceSummary", "ResultsStore",
           "format_table", "make_config", "race", "select_lr", "summarize"]


class _CallableModule(types.ModuleType):
    """``descentlab.race`` is this package *and* the function: ``descentlab.race(...)`` calls
    :func:`descentlab.race.core.race` (a package attribute cannot be a function, since importing any
    submodule rebinds it to the package)."""

    def __call__(self, *args: Any, **kwargs: Any) -> RaceResult:
        return race(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
