"""The public pieces every report page is made of: the stylesheet, escaping, a table and an embedded
figure. The race report (:mod:`.html`) and the study page (:mod:`.study_page`) both build on these."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}th,td{padding:.3em .8em;border-bottom:1px solid #e4e4e4;
text-align:left;font-variant-numeric:tabular-nums}th{background:#f4f6f8}
tr.best td{background:#eef8ee;font-weight:600}td.bad{color:#b00}
.plot{max-width:100%;height:auto;display:block;margin:.6em 0;border:1px solid #eee}
.rec li{margin:.3em 0}code,pre{background:#f4f6f8;padding:.15em .35em;border-radius:3px}
pre{padding:.7em;overflow-x:auto;white-space:pre-wrap}.muted{color:#666;font-size:.9em}
"""


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], highlight: int | None = None) -> str:
    """An HTML table of escaped cells; row ``highlight`` marked best, cells naming a failure marked bad."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        cls = ' class="best"' if index == highlight else ""
        cells = "".join(f'<td class="bad">{escape(c)}</td>' if "diverged" in c or "failed" in c
                        else f"<td>{escape(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def img(uri: str, alt: str, name: str) -> str:
    """An embedded figure (``uri`` a data URI) with id ``plot-<name>``."""
    return f'<img class="plot" id="plot-{escape(name)}" alt="{escape(alt)}" src="{uri}">'
