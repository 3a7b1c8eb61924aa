"""`agentfile report [RUN] [--html FILE]`: a finished build's table and timeline."""

from __future__ import annotations

import sys
from typing import Any

from agentfile import ui
from agentfile.commands.common import write_output
from agentfile.commands.history import layout_for, read_store
from agentfile.errors import EXIT_OK, UsageError
from agentfile.report import html_page


def report(*, file: str | None, run: str | None, html: str | None) -> int:
    layout = layout_for(file)
    store = read_store(layout)
    try:
        info = store.run(run) if run else store.last_run(finished=True)
        if info is None:
            raise UsageError(f"no run {run}" if run else "no finished build yet")
        attempts = store.attempts(info["id"])
        rows: list[dict[str, Any]] = []
        for outcome in store.outcomes(info["id"]):
            rows.append({
                "target": outcome.target, "status": outcome.status,
                "attempts": outcome.attempts, "duration_s": outcome.duration_s,
                "cost_usd": outcome.cost_usd, "tokens": outcome.tokens,
                "peak_rss_bytes": outcome.peak_rss_bytes, "detail": outcome.detail,
                "attempt_rows": [a for a in attempts if a["target"] == outcome.target],
            })
    finally:
        store.close()
    rows.sort(key=lambda r: min((a["started"] for a in r["attempt_rows"]), default=1e18))
    if html:
        write_output(html, html_page(info, rows))
        print(f"wrote {html}")
        return EXIT_OK
    console = ui.console_for(sys.stdout)
    ui.print_summary(console, rows, {
        "run": info["id"], "targets": len(rows), "counts": _counts(rows),
        "cost_usd": info["cost_usd"] or 0, "tokens": info["tokens"] or 0,
        "duration_s": info["duration_s"] or 0, "sequential_s": info["sequential_s"] or 0})
    ui.print_timeline(console, rows, float(info["started"]),
                      float(info["finished"] or info["started"]))
    return EXIT_OK


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts
