"""`agentfile report [RUN] [--html FILE]`: a finished build's table and timeline."""

from __future__ import annotations

import json
import sys
from typing import Any

from agentfile import ui
from agentfile.commands.common import print_json, write_output
from agentfile.commands.history import decode_run, layout_for, read_store
from agentfile.errors import EXIT_OK, UsageError
from agentfile.records.state import Store
from agentfile.report import html_page

# How far back `report` looks for a build that ran something, past no-op builds.
LOOK_BACK = 200


def report(*, file: str | None, run: str | None, html: str | None,
           as_json: bool = False) -> int:
    layout = layout_for(file)
    store = read_store(layout)
    try:
        info = store.run(run) if run else _last_that_ran(store)
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
    if as_json:
        run_row = dict(info)
        decode_run(run_row)
        print_json({"run": run_row, "targets": rows})
        return EXIT_OK
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


def _last_that_ran(store: Store) -> dict[str, Any] | None:
    """The newest finished build that ran a target, past no-op builds (all up to date);
    the newest finished build when none did."""
    finished = [r for r in store.runs(LOOK_BACK) if r.get("finished") is not None]
    for row in finished:
        counts = json.loads(row["counts"]) if row.get("counts") else {}
        if any(status != "up-to-date" for status in counts):
            return row
    return finished[0] if finished else None


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts
