"""The race report: one self-contained HTML file (CSS inline, plots as embedded PNG, no script, no
link to anything outside the file), rebuilt from ``results.jsonl`` alone."""

from .html import build_html, write_report

__all__ = ["build_html", "write_report"]
