"""`agentfile runs`, `logs` and `status`: past builds, a target's log, the build running now."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agentfile import ui
from agentfile.commands.common import print_json
from agentfile.errors import EXIT_OK, UsageError
from agentfile.manifest.locate import manifest_path, repository_root
from agentfile.records.events import read_events, unfinished
from agentfile.records.layout import Layout, RunFiles
from agentfile.records.runlock import holder
from agentfile.records.state import Store, open_store

FOLLOW_POLL_SECONDS = 0.2


def layout_for(file: str | None) -> Layout:
    """The repository's `.agentfile/`, found from the manifest's place without reading it:
    what builds left stays readable while the manifest is broken."""
    return Layout(repository_root(manifest_path(file)))


def read_store(layout: Layout) -> Store:
    store = open_store(layout.database, readonly=True)
    if store is None:
        raise UsageError("no build has run in this repository yet (see `agentfile build`)")
    return store


def runs(*, file: str | None, limit: int, as_json: bool) -> int:
    layout = layout_for(file)
    store = read_store(layout)
    live = live_run(layout)
    try:
        rows = store.runs(limit)
        nodes = store.nodes([row["id"] for row in rows])
        for row in rows:
            settle(row, live)
            decode_run(row)
            if row["status"] == "died":
                row["counts"], row["running"] = _died_counts(layout, store, row["id"])
    finally:
        store.close()
    for row in rows:
        row.pop("argv", None)
        row["nodes"] = nodes.get(row["id"], [])
    if as_json:
        print_json(rows)
    else:
        ui.print_runs(ui.console_for(sys.stdout), rows)
    return EXIT_OK


def decode_run(row: dict[str, Any]) -> None:
    """A run's row as data: the state keeps its lists and counts as JSON text."""
    row["counts"] = json.loads(row["counts"]) if row.get("counts") else {}
    row["requested"] = json.loads(row["requested"]) if row.get("requested") else []
    row["variables"] = json.loads(row["variables"]) if row.get("variables") else {}
    if "argv" in row:
        row["argv"] = json.loads(row["argv"]) if row["argv"] else []


def logs(*, file: str | None, target: str, run: str | None, follow: bool,
         result: bool = False, raw: bool = False, as_json: bool = False) -> int:
    """A target's log as a person reads it; its agent's final message (`result`); or the
    agent's stream as its CLI wrote it (`raw`). `as_json`: JSON lines, for tools."""
    layout = layout_for(file)
    live = live_run(layout) if follow and run is None else None
    run_id = run or live or _latest_run_with(layout, target)
    files = RunFiles(layout.run_dir(run_id))
    log = files.log(target)
    if live is not None and not log.is_file():
        # Following during a build: this build's log of the target, once it starts (an
        # earlier build's log, shown at once, would be the wrong one).
        print(f"agentfile: waiting for '{target}' to start in build {run_id}", file=sys.stderr)
        while not log.is_file() and not _target_done(layout, run_id, target):
            time.sleep(FOLLOW_POLL_SECONDS)
    if not log.is_file():
        raise UsageError(f"no log of '{target}' in run {run_id}")
    if result:
        while follow and not _target_done(layout, run_id, target):
            time.sleep(FOLLOW_POLL_SECONDS)  # its final message comes at its end
        return _final_message(files, run_id, target, as_json=as_json)
    path = files.raw(target) if raw else log
    if not path.is_file():
        raise UsageError(f"'{target}' has no raw stream in run {run_id}: its log is its "
                         "output as printed (see `agentfile logs " + target + "`)")
    out = _LinesAsJson(run_id, target) if as_json and not raw else _Bytes()
    with open(path, "rb") as handle:
        out.write(handle.read())
        while follow and not _target_done(layout, run_id, target):
            chunk = handle.read()
            if chunk:
                out.write(chunk)
            else:
                time.sleep(FOLLOW_POLL_SECONDS)
        out.write(handle.read())
    out.close()
    return EXIT_OK


def _final_message(files: RunFiles, run_id: str, target: str, *, as_json: bool) -> int:
    """`logs --result`: the final message of the target's last attempt in that run."""
    try:
        text = files.result(target).read_text(encoding="utf-8")
    except OSError:
        raise UsageError(f"'{target}' left no final message in run {run_id} (a run target "
                         "has none; an agent that failed early may not)") from None
    if as_json:
        print_json({"run": run_id, "target": target, "result": text})
    else:
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return EXIT_OK


class _Bytes:
    """A log to standard output as it is, flushed as it comes (`logs -f`)."""

    def write(self, data: bytes) -> None:
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


class _LinesAsJson:
    """A log as JSON lines, `{"run", "target", "line"}` each, whole lines only."""

    def __init__(self, run_id: str, target: str) -> None:
        self.head = {"run": run_id, "target": target}
        self.partial = b""

    def write(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self._line(line)
        if lines:
            sys.stdout.flush()

    def _line(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace")
        sys.stdout.write(json.dumps({**self.head, "line": text}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.partial:
            self._line(self.partial)
        sys.stdout.flush()


def _died_counts(layout: Layout, store: Store,
                 run_id: str) -> tuple[dict[str, int], list[str]]:
    """A build that died wrote no counts: its events say what finished, and what it was
    running when it died, but for work it finished and committed (recorded first)."""
    events = read_events(RunFiles(layout.run_dir(run_id)).events)
    counts: dict[str, int] = {}
    for event in events:
        if event["event"] == "target_finished":
            counts[event["status"]] = counts.get(event["status"], 0) + 1
    running = unfinished(events)
    for work in store.finished_work(run_id):
        if running.pop(work.target, None) is not None:
            counts["succeeded"] = counts.get("succeeded", 0) + 1
    return counts, list(running)


def _latest_run_with(layout: Layout, target: str) -> str:
    if not layout.runs_dir.is_dir():
        raise UsageError("no build has run in this repository yet")
    candidates = [d for d in layout.runs_dir.iterdir() if RunFiles(d).log(target).is_file()]
    if not candidates:
        raise UsageError(f"no run has a log of '{target}'")
    return max(candidates, key=lambda d: d.stat().st_mtime).name


def _target_done(layout: Layout, run_id: str, target: str) -> bool:
    """The target has finished, or its build is no longer running."""
    events = read_events(RunFiles(layout.run_dir(run_id)).events)
    if any(e["event"] == "target_finished" and e.get("target") == target for e in events):
        return True
    if any(e["event"] == "build_finished" for e in events):
        return True
    live = holder(layout.lock_file)
    return live is None or live.get("run") != run_id


def status(*, file: str | None, as_json: bool, watch: bool | None) -> int:
    layout = layout_for(file)
    following = sys.stdout.isatty() if watch is None else watch
    snapshot = _snapshot(layout)
    if as_json:
        print_json(snapshot)
        return EXIT_OK
    console = ui.console_for(sys.stdout)
    if snapshot["run"] is None or not following:
        ui.print_status(console, snapshot)
        return EXIT_OK
    ui.follow_status(console, lambda: _snapshot(layout))
    return EXIT_OK


def _snapshot(layout: Layout) -> dict[str, Any]:
    """The running build, from its lock and its events: who runs, what is done."""
    live = holder(layout.lock_file)
    if not live:
        return {"run": None, "last": _last(layout)}
    run_id = str(live.get("run"))
    events = read_events(RunFiles(layout.run_dir(run_id)).events)
    started: dict[str, float] = {}
    finished: dict[str, str] = {}
    waiting: dict[str, dict[str, Any]] = {}
    nodes: dict[str, str] = {}
    total = 0
    for event in events:
        kind = event["event"]
        if kind == "build_started":
            total = int(event.get("targets", 0))
        elif kind == "waiting":
            since = waiting.get(event["target"], {}).get("since", event["time"])
            waiting[event["target"]] = {"target": event["target"], "reason": event["reason"],
                                        "since": since}
        elif kind == "target_started":
            started[event["target"]] = event["time"]
            waiting.pop(event["target"], None)
        elif kind == "target_finished":
            finished[event["target"]] = event["status"]
            waiting.pop(event["target"], None)
        elif kind == "target_placed":
            nodes[event["target"]] = event["node"]
    running = [{"target": t, "elapsed_s": round(time.time() - at, 1),
                "last_line": _last_line(RunFiles(layout.run_dir(run_id)).log(t)),
                **({"node": nodes[t]} if t in nodes else {})}
               for t, at in started.items() if t not in finished]
    return {"run": run_id, "pid": live.get("pid"), "started": live.get("started"),
            "total": total, "done": finished, "running": running,
            "waiting": list(waiting.values())}


def _last(layout: Layout) -> dict[str, Any] | None:
    store = open_store(layout.database, readonly=True)
    if store is None:
        return None
    try:
        last = store.last_run()
    finally:
        store.close()
    if last is not None:
        settle(last, live_run(layout))
        decode_run(last)
    return last


def live_run(layout: Layout) -> str | None:
    live = holder(layout.lock_file)
    return str(live.get("run")) if live else None


def settle(row: dict[str, Any], live: str | None) -> None:
    """A run the state still calls `running` whose build holds no lock was killed before it
    could say how it ended (the next build records that too)."""
    if row.get("status") == "running" and row.get("id") != live:
        row["status"] = "died"


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(handle.tell() - 4096, 0))
            lines = [ln for ln in handle.read().decode("utf-8", "replace").splitlines()
                     if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def attach(*, file: str | None, target: str | None = None) -> int:
    """Attach this terminal to the running build's tmux session, at TARGET's window if
    named (replaces this process); inside tmux, switch this client to it instead."""
    layout = layout_for(file)
    live = holder(layout.lock_file)
    if not live:
        raise UsageError("no build is running in this repository")
    store = read_store(layout)
    try:
        sessions = [r["name"] for r in store.resources(run_id=str(live.get("run")))
                    if r["kind"] == "tmux"]
    finally:
        store.close()
    if not sessions:
        raise UsageError(f"build {live.get('run')} runs no target in tmux "
                         "(use `terminal = tmux` on a target, or `agentfile build --tmux`)")
    where = f"={sessions[0]}"
    if target is not None:
        from agentfile.isolation.tmux import PLACEHOLDER_WINDOW, TmuxSession

        windows = TmuxSession(sessions[0]).windows()
        windows.pop(PLACEHOLDER_WINDOW, None)
        if target not in windows:
            running = ", ".join(sorted(windows)) or "none"
            raise UsageError(f"target {target} has no window in build {live.get('run')}'s "
                             f"tmux session (targets running there now: {running})")
        where = f"{where}:{windows[target]}"
    if not sys.stdin.isatty():
        print(where)  # not a terminal: say where, for `tmux attach -t`
        return EXIT_OK
    os.execvp("tmux", tmux_argv(where, inside_tmux=bool(os.environ.get("TMUX"))))


def tmux_argv(where: str, *, inside_tmux: bool) -> list[str]:
    """How to show a tmux session (or window): inside tmux a nested attach is refused,
    so this client switches to it instead."""
    if inside_tmux:
        return ["tmux", "switch-client", "-t", where]
    return ["tmux", "attach-session", "-t", where]
