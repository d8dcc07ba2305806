"""``descentlab study``: races across a suite of workloads, performance profiles, the article's claim
about Adam's default learning rates checked, and lr sensitivity across workloads. :mod:`.run` runs it,
:mod:`.analysis`, :mod:`.profiles` and :mod:`.claim` compute what the report (``descentlab.report.
study_page``) shows."""

from .run import StudyResult, run_study
from .suite import SUITE, Workload, default_suite, parse_workloads

__all__ = ["SUITE", "StudyResult", "Workload", "default_suite", "parse_workloads", "run_study"]
