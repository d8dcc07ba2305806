"""The learning-rate range test (``descentlab lrfind``) and ``race --lrs auto``, which centres a
shorter grid per optimizer on its suggestion. See :mod:`.ramp` for the test and its suggestion rule,
:mod:`.auto` for the grid."""

from .auto import AutoGrids, auto_grids, centred_grid, is_auto
from .ramp import RangeTest, lr_find, suggest

__all__ = ["AutoGrids", "RangeTest", "auto_grids", "centred_grid", "is_auto", "lr_find", "suggest"]
