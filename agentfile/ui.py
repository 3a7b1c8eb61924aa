"""Output for people (SPEC 10): the only module that imports rich.

On a terminal, a live board of running targets and a progress line (NO_COLOR drops its
colour only); elsewhere (CI, pipes) one plain line per event. At the end, a summary table
and the build's totals.
rich loads only when something is drawn with it: a build printing plain lines never needs it
(it would cost a no-op build a tenth of its start-up).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from agentfile.records.events import SUCCESS, Event, last_lines

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.text import Text

PRETTY_ROWS = 200  # a longer summary is printed as plain columns
QUOTE = "    | "  # before each line of a target's output quoted under a failure
WAITING_ROWS = 8  # waiting targets the board shows below the running ones
_STYLE = {"succeeded": "green", "up-to-date": "dim green", "failed": "bold red",
          "timeout": "red", "over-budget": "red", "oom": "red", "conflict": "yellow",
          "violation": "red", "blocked": "yellow", "interrupted": "yellow", "died": "red",
          "error": "red", "rate-limited": "magenta"}
_STATE_STYLE = {"running": "cyan", "verifying": "blue", "suspended": "yellow",
                "stopping": "red", "preparing": "dim", "setting up": "dim",
                "rate-limited": "magenta"}


@dataclass
class LiveRow:
    """What the board shows of one running target."""

    name: str
    started: float
    attempt: int
    cost_usd: float
    rss_bytes: int
    last_line: str
    state: str = "running"


def is_interactive(stream: TextIO) -> bool:
    """A terminal, not CI: the live board. NO_COLOR drops colour only (no-color.org)."""
    return stream.isatty() and not os.environ.get("CI")


def wants_color(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR; FORCE_COLOR (not 0) asks for it in a pipe too."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "0").lower() not in ("", "0", "false"):
        return True
    return is_interactive(stream)


def human_size(size: int | None) -> str:
    if not size:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def money(usd: float | None) -> str:
    return "-" if not usd else f"${usd:.4f}" if usd < 0.01 else f"${usd:.2f}"


def plural(count: int, word: str) -> str:
    """`1 target`, `2 targets`."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def slot_wait(reason: str) -> bool:
    """A `waiting` reason that only says every job slot is in use."""
    return reason.startswith("no free job slot")


class PlainLines:
    """One line per event, for CI logs and pipes."""

    def __init__(self, stream: TextIO, log_path: Callable[[str], str]) -> None:
        self.stream = stream
        self.log_path = log_path
        self.slots_said = False

    def emit(self, event: Event) -> None:
        if event["event"] == "waiting" and not self._worth_a_line(event["reason"]):
            return
        line = describe(event, self.log_path)
        if line:
            stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
            self.stream.write(f"[{stamp}] {line}\n")

    def _worth_a_line(self, reason: str) -> bool:
        """Waiting for a job slot is said once a build (a fan-out would say it of every
        instance); a throttled start has its own `throttled` line."""
        if reason.startswith("throttled"):
            return False
        if slot_wait(reason):
            said, self.slots_said = self.slots_said, True
            return not said
        return True

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def describe(event: Event, log_path: Callable[[str], str]) -> str | None:
    kind = event["event"]
    if kind == "build_started":
        return f"build {event['run']}: {plural(event['targets'], 'target')}, -j{event['jobs']}"
    if kind == "target_started":
        how = f"agent {event['agent']}, {event['isolation']}" if event.get("agent") else \
            event.get("kind", "")
        return f"start      {event['target']} ({how})"
    if kind == "target_finished":
        status = event["status"]
        if status == "up-to-date":
            return f"up-to-date {event['target']}"
        if status == "blocked":
            return f"blocked    {event['target']} ({event.get('detail') or 'a dependency failed'})"
        facts = [human_time(event.get("duration_s"))]
        if event.get("cost_usd"):
            facts.append(money(event["cost_usd"]))
        if event.get("attempt", 1) > 1:
            facts.append(f"{event['attempt']} attempts")
        text = f"{status:<10} {event['target']} ({', '.join(facts)})"
        if status not in SUCCESS:
            reason = event.get("detail") or f"exit {event.get('exit_code')}"
            text += f": {reason}"
            if event.get("attempt"):  # one never started (e.g. refused) has no log
                text += f"; log: {log_path(event['target'])}"
            output = event.get("output") or []
            if len(output) > 1:  # one line is in the reason already
                text += "".join(f"\n{QUOTE}{line}" for line in output)
        return text
    if kind == "retrying":
        return f"retrying   {event['target']} (attempt {event['attempt']}): {event['reason']}"
    if kind == "budget_warning":
        return f"budget     {event.get('scope', 'build')}: {event.get('reached', '')}"
    if kind == "throttled":
        return f"throttled  {event.get('target')}: {event.get('reason')}"
    if kind == "waiting":
        return f"waiting    {event['target']}: {event['reason']}"
    if kind == "rate_limited":
        how = "agentfile's relay holds the request" if event.get("relayed") else \
            "the CLI retries" if event.get("retrying") else "it waits its turn"
        wait = f", {human_time(event['wait_s'])}" if event.get("wait_s") else ""
        model = f" ({event['model']})" if event.get("model") else ""
        return (f"limited    {event.get('target')}: {event.get('provider')}{model} "
                f"{event.get('reason')}{wait} ({how}; {event.get('window')} at once)")
    if kind == "merged":
        return f"merged     {event.get('target')} into {event.get('into')}"
    if kind == "recovered":
        return (f"recovered  {event.get('target')}: finished in build {event.get('run')}, "
                f"which died; merged from {event.get('branch')}, not run again")
    if kind == "build_finished":
        return f"build {event['status']} in {human_time(event.get('duration_s'))}"
    return None


class Board:
    """The live board on a terminal: running targets and a progress line."""

    def __init__(self, console: Console, *, total: int, budget_usd: float | None,
                 snapshot: Callable[[], Sequence[LiveRow]], spent: Callable[[], float],
                 log_path: Callable[[str], str]) -> None:
        from rich.live import Live

        self.console = console
        self.total = total
        self.budget_usd = budget_usd
        self.snapshot = snapshot
        self.spent = spent
        self.log_path = log_path
        self.done: dict[str, str] = {}
        self.waiting: dict[str, tuple[float, str]] = {}  # target -> (since, why)
        self.live = Live(self._render(), console=console, refresh_per_second=4,
                         get_renderable=self._render, transient=True)
        self.live.start()

    def emit(self, event: Event) -> None:
        from rich.text import Text

        kind = event["event"]
        if kind == "waiting":
            since = self.waiting.get(event["target"], (event["time"], ""))[0]
            self.waiting[event["target"]] = (since, event["reason"])
        elif kind in ("target_started", "target_finished"):
            self.waiting.pop(event["target"], None)
        if kind == "target_finished":
            self.done[event["target"]] = event["status"]
            if event["status"] not in SUCCESS and event["status"] != "up-to-date":
                line = describe(event, self.log_path)
                if line:
                    self.console.print(Text(line, style=_STYLE.get(event["status"], "")))
        elif kind in ("budget_warning", "throttled", "retrying", "rate_limited"):
            line = describe(event, self.log_path)
            if line:
                self.console.print(Text(line, style="yellow"))

    def flush(self) -> None:
        """Nothing to do: the board redraws on its own timer."""

    def echo(self) -> Echo:
        """`--verbose` on a terminal: targets' lines printed above the board."""
        from rich.text import Text

        return Echo(lambda name, line: self.console.print(
            Text.assemble((f"{name} | ", "dim"), line)))

    def _render(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("target", "state", "attempt", "time", "cost", "memory", "last line"):
            table.add_column(column, overflow="ellipsis", no_wrap=True,
                             max_width=60 if column == "last line" else None)
        now = time.time()
        for row in self.snapshot():
            table.add_row(row.name, Text(row.state, style=_STATE_STYLE.get(row.state, "")),
                          str(row.attempt), human_time(now - row.started),
                          money(row.cost_usd), human_size(row.rss_bytes), row.last_line)
        waiting = list(self.waiting.items())
        for name, (since, why) in waiting[:WAITING_ROWS]:
            table.add_row(name, Text("waiting", style="yellow"), "-", human_time(now - since),
                          "-", "-", Text(why, style="yellow"))
        if len(waiting) > WAITING_ROWS:
            table.add_row(Text(f"… {len(waiting) - WAITING_ROWS} more waiting", style="dim"))
        ok = sum(1 for s in self.done.values() if s in SUCCESS)
        bad = len(self.done) - ok
        spent = self.spent()
        budget = f" of {money(self.budget_usd)}" if self.budget_usd else ""
        progress = Text(f"{len(self.done)}/{self.total} done ({ok} ok, {bad} not) · "
                        f"spent {money(spent) if spent else '$0'}{budget}", style="bold")
        return Group(table, progress)

    def close(self) -> None:
        self.live.stop()


class Echo:
    """`build --verbose`: each line a person reads of a target's output, as `name | line`
    (as make and docker compose show it). Lines come from the threads running targets; they
    are written out with the other reporters' output, at each flush, in the build's thread."""

    def __init__(self, out: Callable[[str, str], object]) -> None:
        self.out = out
        self.lines: collections.deque[tuple[str, str]] = collections.deque()

    @classmethod
    def plain(cls, stream: TextIO, names: Sequence[str]) -> Echo:
        width = min(max((len(n) for n in names), default=0), 24)
        return cls(lambda name, line: stream.write(f"{name:<{width}} | {line}\n"))


    def __call__(self, target: str, line: str) -> None:
        self.lines.append((target, line))  # deque.append is safe from any thread

    def emit(self, event: Event) -> None:
        """Build events are the other reporters' to show; the lines that came before one
        are written first (a failure's output before its failure line)."""
        self.flush()

    def flush(self) -> None:
        while self.lines:
            self.out(*self.lines.popleft())

    def close(self) -> None:
        self.flush()


class PlainConsole:
    """Where plain output goes (a pipe, a file, NO_COLOR): the part of rich's Console that
    `print_summary` and the build's last lines use, without loading rich."""

    is_terminal = False

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def print(self, text: str) -> None:
        self.file.write(f"{text}\n")


class Forgiving:
    """A build's standard output, which may go away mid-build (`agentfile build | head`, a
    full disk, /dev/full): the build goes on without it rather than stopping its targets,
    and `lost` says why, for one line on stderr at the end. Events and logs keep it all."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lost: OSError | None = None

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                return self.stream.write(text)
            except OSError as err:
                self._lose(err)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self.stream.flush()
            except OSError as err:
                self._lose(err)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return self.stream.encoding

    def _lose(self, err: OSError) -> None:
        self.lost = err
        # What is still buffered would fail again when Python flushes it at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)


def output_for(stream: TextIO) -> Console | PlainConsole:
    """rich's Console on a terminal, else plain output."""
    return console_for(stream) if is_interactive(stream) or wants_color(stream) \
        else PlainConsole(stream)


def console_for(stream: TextIO) -> Console:
    from rich.console import Console

    interactive, color = is_interactive(stream), wants_color(stream)
    # markup=False: target names and their output are shown as they are; "[/x]" is text.
    return Console(file=stream, force_terminal=interactive or color, no_color=not color,
                   width=None if interactive else 120, highlight=False, soft_wrap=True,
                   markup=False)


def print_summary(console: Console | PlainConsole, rows: Sequence[Mapping[str, Any]],
                  totals: Mapping[str, Any]) -> None:
    """The end-of-build table per target and the build's totals (SPEC 10)."""
    nodes = any(row.get("node") for row in rows)  # some ran on a cluster: where
    columns = ("target", "status", "attempts", "time", "cost", "tokens", "peak memory",
               *(("node",) if nodes else ()))
    cells = [(row["target"], row["status"], str(row["attempts"] or "-"),
              human_time(row["duration_s"]) if row["attempts"] else "-",
              money(row["cost_usd"]), str(row["tokens"] or "-"),
              human_size(row["peak_rss_bytes"]),
              *((row.get("node") or "-",) if nodes else ())) for row in rows]
    if console.is_terminal and len(rows) <= PRETTY_ROWS:
        from rich.table import Table
        from rich.text import Text

        assert not isinstance(console, PlainConsole)  # a terminal's is rich's

        table = Table(title=f"build {totals['run']}", title_justify="left", box=None,
                      header_style="bold", pad_edge=False)
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index < 2 else "right")
        for row in cells:
            table.add_row(row[0], Text(row[1], style=_STYLE.get(row[1], "")), *row[2:])
        console.print(table)
    else:
        # Plain columns: the same table, written in a fraction of the time a rich table
        # takes for thousands of rows.
        widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
        lines = [f"build {totals['run']}"]
        for row in [columns, *cells]:
            lines.append("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                                   for i, (v, w) in enumerate(zip(row, widths, strict=True))))
        console.file.write("\n".join(lines) + "\n")
    for failed in rows:  # why each failed, with the last lines of its output
        detail = failed.get("detail")
        if failed["status"] in SUCCESS or failed["status"] == "blocked" or not detail:
            continue
        console.print(f"{failed['target']}: {detail.splitlines()[0]}")
        for line in last_lines(detail):
            console.print(f"{QUOTE}{line}")
    counts = ", ".join(f"{n} {s}" for s, n in totals["counts"].items())
    console.print(f"{plural(totals['targets'], 'target')}: {counts} · spent "
                  f"{money(totals['cost_usd']) if totals['cost_usd'] else '$0'} · "
                  f"{plural(totals['tokens'], 'token')}")
    if totals.get("variables"):
        console.print("variables: " + " ".join(f"{k}={v}"
                                                for k, v in totals["variables"].items()))
    ran = sum(1 for row in rows if row["attempts"])
    line = f"wall {human_time(totals['duration_s'])}"
    if not ran:
        line += ", nothing ran"
    else:
        line += f", sequential estimate {human_time(totals['sequential_s'])}"
        # One target, or none that took time, has nothing to compare its wall time with.
        if ran > 1 and totals["duration_s"] and totals["sequential_s"]:
            line += f" ({totals['sequential_s'] / totals['duration_s']:.1f}x)"
    limits = totals.get("rate_limits") or {}
    if limits.get("signals"):
        line += (f" · rate limited {plural(limits['signals'], 'time')}, "
                 f"{plural(limits.get('waits', 0), 'attempt')} waited for the provider")
    console.print(line)


def print_runs(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """`agentfile runs`: one line per build, newest first."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    nodes = any(row.get("nodes") for row in rows)  # some ran on a cluster: where
    # `build NAME=VALUE` sets variables for one build: a column only when a build did.
    with_variables = any(row.get("variables") for row in rows)
    for column in ("run", "started", "status", "time", "targets", "cost",
                   *(("nodes",) if nodes else ()), *(("variables",) if with_variables else ())):
        table.add_column(column)
    for row in rows:
        counts = row.get("counts") or {}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "-"
        if row.get("running"):  # a build that died: what it was running then
            summary += f"; died running {', '.join(row['running'])}"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"]))
        status = row.get("status") or "running"
        variables = " ".join(f"{k}={v}" for k, v in (row.get("variables") or {}).items())
        table.add_row(row["id"], started, Text(status, style=_STYLE.get(status, "")),
                      human_time(row.get("duration_s")), summary, money(row.get("cost_usd")),
                      *((", ".join(row.get("nodes") or []) or "-",) if nodes else ()),
                      *((variables or "-",) if with_variables else ()))
    console.print(table)


def _status_group(snapshot: Mapping[str, Any]) -> Group | Text:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if snapshot.get("run") is None:
        last = snapshot.get("last")
        tail = (f"; the last was {last['id']} ({last.get('status') or 'running'})"
                if last else "")
        return Text(f"no build is running in this repository{tail}")
    done = snapshot["done"]
    ok = sum(1 for s in done.values() if s in SUCCESS)
    head = Text(f"build {snapshot['run']} (pid {snapshot['pid']}): {len(done)}/"
                f"{snapshot['total']} done, {ok} ok, {len(done) - ok} not", style="bold")
    table = Table(box=None, header_style="bold", pad_edge=False)
    nodes = any(row.get("node") for row in snapshot["running"])  # on a cluster: where
    for column in ("running", *(("node",) if nodes else ()), "time", "last line"):
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    for row in snapshot["running"]:
        table.add_row(row["target"], *((row.get("node") or "-",) if nodes else ()),
                      human_time(row["elapsed_s"]), row["last_line"])
    waiting = snapshot.get("waiting") or []
    if not waiting:
        return Group(head, table)
    held = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("waiting", "for", "why"):
        held.add_column(column, overflow="ellipsis", no_wrap=True)
    now = time.time()
    for row in waiting:
        held.add_row(row["target"], human_time(now - row["since"]), row["reason"])
    return Group(head, table, held)


def print_status(console: Console, snapshot: Mapping[str, Any]) -> None:
    console.print(_status_group(snapshot))


def follow_status(console: Console, snapshot: Callable[[], Mapping[str, Any]]) -> None:
    """Refresh the status until the build ends (Ctrl-C leaves; the build goes on)."""
    from rich.live import Live

    try:
        with Live(_status_group(snapshot()), console=console, refresh_per_second=2) as live:
            while True:
                current = snapshot()
                live.update(_status_group(current))
                if current.get("run") is None:
                    return
                time.sleep(0.5)
    except KeyboardInterrupt:
        return


def print_timeline(console: Console, rows: Sequence[Mapping[str, Any]], start: float,
                   end: float, width: int = 60) -> None:
    """When each target ran: a bar per attempt on a shared time axis."""
    from rich.text import Text

    span = max(end - start, 1e-6)
    name_width = min(max((len(r["target"]) for r in rows), default=6), 30)
    console.print(f"\ntimeline ({human_time(span)} across {width} columns)")
    for row in rows:
        cells = [" "] * width
        for attempt in row.get("attempt_rows", []):
            first = int((attempt["started"] - start) / span * (width - 1))
            last = int((attempt["finished"] - start) / span * (width - 1))
            mark = "█" if attempt["status"] == "succeeded" else "▒"
            for i in range(max(first, 0), min(last, width - 1) + 1):
                cells[i] = mark
        console.print(Text(f"{row['target'][:name_width]:<{name_width}} |{''.join(cells)}|",
                           style=_STYLE.get(row["status"], "")))


def print_stats(console: Console, rows: Sequence[Mapping[str, Any]], *, by: str,
                today: float) -> None:
    """`agentfile stats`: spend grouped by day, agent, target or repository."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in ((by, "left"), ("cost", "right"), ("tokens", "right"),
                            ("attempts", "right"), ("runs", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(str(row["key"]), money(row["cost_usd"]) if row["cost_usd"] else "$0",
                      str(row["tokens"]), str(row["attempts"]), str(row["runs"]))
    console.print(table)
    console.print(f"today: {money(today) if today else '$0'}")
