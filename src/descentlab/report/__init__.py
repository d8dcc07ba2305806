"""The race report: one self-contained HTML file (CSS inline, plots as embedded PNG, no script, no
link to anything outside the file), a pure function of the race's config, run records and summary,
so it can be rebuilt from ``race.json`` and ``results.jsonl`` alone."""

from .html import build_html, write_report
from .table import format_table

__all__ = ["build_html", "format_table", "write_report"]
