"""``descentlab study``: races across a suite of workloads at budgets where the tuned best settled
(:mod:`.settle`), performance profiles, the article's claim about Adam's default learning rates judged
per (workload, lr, budget) into ``claim.json`` (:mod:`.verdict`), and lr sensitivity across workloads.
:mod:`.run` runs it; :mod:`.analysis`, :mod:`.profiles` and :mod:`.verdict` compute what the report shows;
:mod:`.page` hands the report layer a frozen view (``descentlab.report.study_view``) to draw."""

from .run import StudyResult, run_study
from .suite import SUITE, Workload, default_suite, parse_workloads

__all__ = ["SUITE", "StudyResult", "Workload", "default_suite", "parse_workloads", "run_study"]
