"""A finished build as a self-contained HTML page: a per-target table and a timeline."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agentfile.ui import money, plural

_COLOURS = {"succeeded": "#2e7d32", "up-to-date": "#9e9e9e", "failed": "#c62828",
            "timeout": "#ef6c00", "over-budget": "#6a1b9a", "oom": "#ad1457",
            "conflict": "#f9a825", "violation": "#d84315", "blocked": "#bdbdbd",
            "interrupted": "#757575"}
_ROW = 22
_WIDTH = 900
_LABEL = 220


def timeline_svg(rows: Sequence[Mapping[str, Any]], start: float, end: float) -> str:
    """One bar per attempt, from its start to its end, coloured by status."""
    span = max(end - start, 1e-6)
    scale = (_WIDTH - _LABEL - 20) / span
    bars = []
    for index, row in enumerate(rows):
        y = index * _ROW + 20
        bars.append(f'<text x="4" y="{y + 14}" font-size="12">{html.escape(row["target"])}'
                    "</text>")
        for attempt in row.get("attempt_rows", []):
            x = _LABEL + (attempt["started"] - start) * scale
            width = max((attempt["finished"] - attempt["started"]) * scale, 1.5)
            colour = _COLOURS.get(attempt["status"], "#607d8b")
            title = (f"{row['target']} attempt {attempt['attempt']}: {attempt['status']}, "
                     f"{attempt['finished'] - attempt['started']:.1f}s")
            bars.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_ROW - 6}" '
                        f'fill="{colour}"><title>{html.escape(title)}</title></rect>')
    ticks = []
    for i in range(6):
        x = _LABEL + i * (_WIDTH - _LABEL - 20) / 5
        # The last label ends at its tick: starting there, it would run off the picture.
        anchor = "end" if i == 5 else "start"
        ticks.append(f'<text x="{x:.0f}" y="12" font-size="10" fill="#555" '
                     f'text-anchor="{anchor}">{span * i / 5:.1f}s</text>')
    height = len(rows) * _ROW + 30
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}">'
            + "".join(ticks) + "".join(bars) + "</svg>")


def html_page(run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    started = float(run["started"])
    finished = float(run.get("finished") or max(
        (a["finished"] for r in rows for a in r.get("attempt_rows", [])), default=started))
    nodes = any(row.get("node") for row in rows)  # some ran on a cluster: where
    cells = []
    for row in rows:
        colour = _COLOURS.get(row["status"], "#607d8b")
        cells.append(
            "<tr>" + f"<td>{html.escape(row['target'])}</td>"
            f'<td style="color:{colour}"><b>{html.escape(row["status"])}</b></td>'
            f"<td>{row['attempts']}</td><td>{row['duration_s']:.1f}s</td>"
            f"<td>{money(row['cost_usd'])}</td><td>{row['tokens'] or '-'}</td>"
            f"<td>{_size(row.get('peak_rss_bytes'))}</td>"
            + (f"<td>{html.escape(row.get('node') or '-')}</td>" if nodes else "")
            + f"<td>{html.escape(row.get('detail') or '')}</td></tr>")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>agentfile build {html.escape(run['id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
</style></head><body>
<h1>agentfile build {html.escape(run['id'])}</h1>
<p>started {when} · status <b>{html.escape(str(run.get('status')))}</b> ·
wall {float(run.get('duration_s') or finished - started):.1f}s ·
sequential estimate {float(run.get('sequential_s') or 0):.1f}s ·
spent {money(float(run.get('cost_usd') or 0)) if run.get('cost_usd') else '$0'} ·
{plural(int(run.get('tokens') or 0), 'token')}</p>
<h2>Targets</h2>
<table><tr><th>target</th><th>status</th><th>attempts</th><th>time</th><th>cost</th>
<th>tokens</th><th>peak memory</th>{"<th>node</th>" if nodes else ""}<th>detail</th></tr>
{''.join(cells)}
</table>
<h2>Timeline</h2>
{timeline_svg(rows, started, finished)}
</body></html>
"""


def _size(size: int | None) -> str:
    if not size:
        return "-"
    return f"{size / 2**20:.1f} MiB"
