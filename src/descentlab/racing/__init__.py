"""The race's machinery: protocol (search space, stages, selection in one place), run records, the
resumable store, the runner, the statistics and the summary. ``descentlab.race(...)`` runs it and writes
the report; :func:`run_race` runs it alone."""

from .core import RaceResult, check_bound, check_options, check_test_split, run_race
from .protocol import DEFAULT_LRS, DEFAULT_OPTIMIZERS, RaceConfig, make_config
from .record import FINAL, RESULTS_FORMAT, TUNE, RunRecord, RunSpec, Setting
from .stages import Selection, select
from .store import ResultsStore
from .summary import ArmSummary, RaceSummary, summarize

__all__ = ["DEFAULT_LRS", "DEFAULT_OPTIMIZERS", "FINAL", "RESULTS_FORMAT", "TUNE", "ArmSummary", "RaceConfig",
           "RaceResult", "RaceSummary", "ResultsStore", "RunRecord", "RunSpec", "Selection", "Setting", "make_config",
           "check_bound", "check_options", "check_test_split", "run_race", "select", "summarize"]
