"""`agentfile report [RUN] [--html FILE]`: a build's table and timeline; of a build that died,
what it finished and what it was running then."""

from __future__ import annotations

import json
import sys
from typing import Any

from agentfile import ui
from agentfile.commands.common import print_json, write_output
from agentfile.commands.history import decode_run, layout_for, live_run, read_store, settle
from agentfile.errors import EXIT_OK, UsageError
from agentfile.records.events import read_events, unfinished
from agentfile.records.layout import Layout, RunFiles
from agentfile.records.state import Store
from agentfile.report import html_page

# How far back `report` looks for a build that ran something, past no-op builds.
LOOK_BACK = 200


def report(*, file: str | None, run: str | None, html: str | None,
           as_json: bool = False) -> int:
    layout = layout_for(file)
    store = read_store(layout)
    try:
        live = live_run(layout)
        info = store.run(run) if run else _last_that_ran(store, live)
        if info is None:
            raise UsageError(f"no run {run}" if run else "no finished build yet")
        settle(info, live)
        attempts = store.attempts(info["id"])
        rows: list[dict[str, Any]] = []
        for outcome in store.outcomes(info["id"]):
            rows.append({
                "target": outcome.target, "status": outcome.status,
                "attempts": outcome.attempts, "duration_s": outcome.duration_s,
                "cost_usd": outcome.cost_usd, "tokens": outcome.tokens,
                "peak_rss_bytes": outcome.peak_rss_bytes, "detail": outcome.detail,
                "node": outcome.node,
                "attempt_rows": [a for a in attempts if a["target"] == outcome.target],
            })
        if info["status"] == "died":
            info["finished"] = _died_rows(layout, store, info["id"], rows)
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
        # A build that died wrote no totals: its rows' sums.
        "cost_usd": info["cost_usd"] or sum(r["cost_usd"] or 0 for r in rows),
        "tokens": info["tokens"] or sum(r["tokens"] or 0 for r in rows),
        "duration_s": info["duration_s"] or 0, "sequential_s": info["sequential_s"] or 0,
        "variables": json.loads(info.get("variables") or "{}")})
    ui.print_timeline(console, rows, float(info["started"]),
                      float(info["finished"] or info["started"]))
    return EXIT_OK


def _last_that_ran(store: Store, live: str | None) -> dict[str, Any] | None:
    """The newest finished build that ran a target, past no-op builds (all up to date), or
    one that died (it was running some); the newest finished build when none did."""
    runs = [r for r in store.runs(LOOK_BACK) if r["id"] != live]
    finished = [r for r in runs if r.get("finished") is not None]
    for row in runs:
        if row.get("finished") is None:  # not live: it died
            return row
        counts = json.loads(row["counts"]) if row.get("counts") else {}
        if any(status != "up-to-date" for status in counts):
            return row
    return finished[0] if finished else None


def _died_rows(layout: Layout, store: Store, run_id: str,
               rows: list[dict[str, Any]]) -> float | None:
    """What a build that died had not written: work it finished and committed, and the
    targets it was running; the time it was last heard of."""
    events = read_events(RunFiles(layout.run_dir(run_id)).events)
    last = events[-1]["time"] if events else None
    listed = {r["target"] for r in rows}
    for work in store.finished_work(run_id):
        if work.target not in listed:
            listed.add(work.target)
            rows.append(_row(work.target, "succeeded", work.attempts,
                             detail=f"committed on {work.branch}; the build died before "
                                    "merging it"))
    for name, started in unfinished(events).items():
        if name not in listed:
            rows.append(_row(name, "running", [{"started": started, "finished": last or started,
                                                "status": "running"}],
                             detail="running when the build died"))
    return last


def _row(target: str, status: str, attempts: list[dict[str, Any]], *,
         detail: str) -> dict[str, Any]:
    return {"target": target, "status": status, "attempts": len(attempts),
            "duration_s": sum(a["finished"] - a["started"] for a in attempts),
            "cost_usd": sum(a.get("cost_usd") or 0 for a in attempts),
            "tokens": sum(a.get("tokens") or 0 for a in attempts),
            "peak_rss_bytes": None, "detail": detail, "attempt_rows": attempts}


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts
