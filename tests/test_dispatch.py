"""Many short commands, as the reactor runs them (one thread, no worker per target), and what
the build writes a tick at a time: events, state rows, logs. Real builds in real repositories."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import Run, interactive_environment, on_a_terminal, patched_agentfile

from agentfile.run import process, reactor


def write(repo: Path, text: str) -> None:
    (repo / "Agentfile").write_text(text)


def layers(count: int, width: int, run: str = "true") -> str:
    """`count` layers of `width` targets, each depending on two of the layer before."""
    lines = []
    for layer in range(count):
        for i in range(width):
            deps = "" if layer == 0 else f" l{layer - 1}_{i} l{layer - 1}_{(i + 1) % width}"
            lines.append(f"l{layer}_{i}:{deps}\n    run = \"{run}\"\n")
    return "".join(lines)


def run_dir(repo: Path) -> Path:
    (found,) = (repo / ".agentfile" / "runs").iterdir()
    return found


def read_events(repo: Path) -> list[dict[str, Any]]:
    """The build's events so far (none before its run directory exists)."""
    if not (repo / ".agentfile" / "runs").is_dir():
        return []
    path = run_dir(repo) / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def rows(repo: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def start_build(repo: Path, *args: str,
                pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agentfile", "build", *args], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"}, pass_fds=pass_fds)


def wait_until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


def test_many_quick_targets_leave_every_event_row_and_log(repo: Path,
                                                          agentfile_cli: Run) -> None:
    write(repo, layers(6, 20))
    names = {f"l{layer}_{i}" for layer in range(6) for i in range(20)}
    result = agentfile_cli("build", "-j3", cwd=repo)
    assert result.code == 0, result.out + result.err
    events = read_events(repo)
    for kind in ("target_started", "target_finished"):
        assert sorted(e["target"] for e in events if e["event"] == kind) == sorted(names)
    assert events[0]["event"] == "build_started" and events[-1]["event"] == "build_finished"
    assert set(rows(repo, "SELECT target, status FROM outcomes")) == {(n, "succeeded")
                                                                     for n in names}
    assert len(rows(repo, "SELECT * FROM attempts WHERE status = 'succeeded'")) == len(names)
    assert {r[0] for r in rows(repo, "SELECT target FROM fingerprints")} == names
    logs = run_dir(repo) / "logs"
    assert all((logs / f"{n}.log").read_text().startswith("=== agentfile: attempt 1 at ")
               for n in names)
    again = agentfile_cli("build", "-j3", cwd=repo)
    assert again.code == 0, again.out
    assert f"{len(names)} targets: {len(names)} up-to-date" in again.out, again.out


def test_interrupted_build_keeps_the_records_of_what_ran(repo: Path) -> None:
    write(repo, layers(2, 15) + 'slow:\n    run = "sleep 30"\n    priority = -1\n')
    proc = start_build(repo, "-j2")
    # Events reach the file while the build runs, a tick at a time.
    wait_until(lambda: sum(e["event"] == "target_finished" for e in read_events(repo)) >= 30)
    wait_until(lambda: any(e.get("target") == "slow" for e in read_events(repo)))
    sleeper = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "sleep" in " ".join(p.cmdline())]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out.decode()
    _, alive = psutil.wait_procs(sleeper, timeout=5)
    assert not alive
    statuses = dict(rows(repo, "SELECT target, status FROM outcomes"))
    assert statuses.pop("slow") == "interrupted"
    assert set(statuses.values()) == {"succeeded"} and len(statuses) == 30
    assert len(rows(repo, "SELECT target FROM fingerprints")) == 30
    events = read_events(repo)
    assert events[-1]["event"] == "build_finished" and events[-1]["status"] == "interrupted"


def test_a_failure_is_on_disk_at_once(repo: Path) -> None:
    write(repo, 'slow:\n    run = "sleep 30"\nbad:\n    run = "false"\n')
    proc = start_build(repo, "-j2", "-k")
    left: list[psutil.Process] = []
    try:
        wait_until(lambda: any(e.get("target") == "bad" and e["event"] == "target_finished"
                               for e in read_events(repo)), timeout=10)
        # agentfile dies without any chance to clean up: the failure is already recorded.
        left = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.kill()
        proc.communicate()
        for child in left:
            child.kill()
        psutil.wait_procs(left, timeout=5)
    assert rows(repo, "SELECT status, exit_code FROM outcomes WHERE target = 'bad'") == [
        ("failed", 1)]


def test_targets_inherit_only_stdio_and_default_sigpipe(repo: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\n"
        "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
        "print('fds', fds[:3], len(fds))\n")  # 0, 1, 2 and the listing's own
    # Python ignores SIGPIPE; a program it starts must not inherit that (grep keeps what
    # it was given, so its SigIgn mask shows it).
    write(repo, f'probe:\n    run = "{sys.executable} {probe}"\n'
                'signals:\n    run = "grep SigIgn /proc/self/status"\n')
    leaked_read, leaked_write = os.pipe()
    os.set_inheritable(leaked_write, True)
    try:
        proc = start_build(repo, pass_fds=(leaked_write,))
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(leaked_read)
        os.close(leaked_write)
    assert proc.returncode == 0, out.decode()
    logs = run_dir(repo) / "logs"
    assert "fds [0, 1, 2] 4" in (logs / "probe.log").read_text()
    ignored = int((logs / "signals.log").read_text().split()[-1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_from_a_subdirectory_targets_still_run_at_the_root(repo: Path,
                                                           agentfile_cli: Run) -> None:
    write(repo, 'where:\n    run = "pwd"\nmissing:\n    run = "no-such-program-here"\n')
    (repo / "sub").mkdir()
    result = agentfile_cli("build", "-k", cwd=repo / "sub")
    assert result.code == 1
    logs = run_dir(repo) / "logs"
    assert (logs / "where.log").read_text().splitlines()[-1] == str(repo.resolve())
    assert "not found" in (logs / "missing.log").read_text()
    assert rows(repo, "SELECT exit_code FROM outcomes WHERE target = 'missing'") == [(127,)]



def test_each_attempt_keeps_its_output_and_its_own_failure(repo: Path,
                                                          agentfile_cli: Run) -> None:
    """A target's log keeps every attempt's output under its own header, even when a command
    writes to /dev/stderr by name (which reopens whatever its stderr is); a failure's detail
    is the last attempt's own last lines."""
    write(repo, 'flaky:\n    retries = 1\n    run = "'
                "if [ -f tried ]; then echo second-try; echo 'why: second' >/dev/stderr; exit 3; "
                "fi; touch tried; for i in $(seq 1 50); do echo line $i; done; "
                "echo 'why: first' >/dev/stderr; printf tail; exit 3"
                '"\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    log = (run_dir(repo) / "logs" / "flaky.log").read_text().splitlines()
    headers = [n for n, line in enumerate(log) if line.startswith("=== agentfile: attempt")]
    assert headers == [0, 53], log
    assert log[1:53] == [f"line {i}" for i in range(1, 51)] + ["why: first", "tail"]
    assert log[54:] == ["second-try", "why: second"]
    (detail,) = rows(repo, "SELECT detail FROM outcomes")[0]
    assert detail == "exited with 3:\nsecond-try\nwhy: second"


def test_the_board_on_a_terminal_shows_each_running_target_s_last_line(repo: Path) -> None:
    """On a terminal the live board shows each running target's state and what it printed
    last, as it runs, and its log still gets the whole output."""
    write(repo, 'talk/{x}:\n    foreach x in ["[/]"]\n'
          '    run = "echo first-words [/tmp/x]; sleep 2; echo last-words"\n'
          '    verify = "sleep 1.5"\n')
    seen, code = on_a_terminal(repo, interactive_environment(), "build")
    assert code == 0, seen.decode(errors="replace")
    board = seen.split(b"last-words")[0]  # before its last line, while it ran
    # Brackets in names and output are text, not rich's markup.
    assert b"first-words [/tmp/x]" in board and b"0/1 done" in board
    assert b"talk/[/]" in seen.split(b"last-words")[-1]  # in the summary too
    running, verifying = seen.split(b"verifying", 1)  # then its verify command ran
    assert b"running" in running and verifying
    log = next((run_dir(repo) / "logs").rglob("*.log")).read_text().splitlines()
    assert log[1:3] == ["first-words [/tmp/x]", "last-words"]


def test_the_board_says_stopping_and_suspended_before_the_phase() -> None:
    from types import SimpleNamespace
    from typing import cast

    from agentfile.commands.build import _state
    from agentfile.run.scheduler import Running

    cancel = threading.Event()
    running = cast(Running, SimpleNamespace(
        job=SimpleNamespace(cancel=cancel, progress=SimpleNamespace(phase="verifying"))))
    assert _state("t", running, {}) == "verifying"
    assert _state("t", running, {"t": 3.0}) == "suspended"
    cancel.set()
    assert _state("t", running, {"t": 3.0}) == "stopping"


def test_reactor_watches_a_process_in_a_thread_without_a_pidfd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    def steps() -> process.Steps[list[int | None]]:
        codes = []
        for word in ("first", "second"):
            launch = process.Launch(f"echo {word}", tmp_path, dict(os.environ))
            outcome = yield process.Call(launch, tmp_path / "x.log")
            codes.append(outcome.exit_code)
        return codes

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    results: list[tuple[str, list[int | None]]] = []
    with ThreadPoolExecutor(2) as pool:
        loop: reactor.Reactor[list[int | None]] = reactor.Reactor(pool)
        loop.add("k", steps())
        deadline = time.monotonic() + 10
        while not results and time.monotonic() < deadline:
            results += loop.wait(0.1)
        loop.close()
    assert results == [("k", [0, 0])]
    assert (tmp_path / "x.log").read_text().split()[-1] == "second"


def test_a_line_without_its_end_is_kept_in_pieces_not_in_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Output with no newline is gathered in pieces and joined once (not at every read),
    and past MAX_PARTIAL goes into the log as it comes; the tail sees the line's end."""
    monkeypatch.setattr(process, "MAX_PARTIAL", 10)
    written: list[bytes] = []
    tail: list[str] = []

    class Sink:
        def write(self, data: bytes) -> None:
            written.append(data)

        def close(self) -> None:
            pass

    lines = process.Lines(Sink(), tail, None)
    for piece in (b"abcd", b"efgh", b"ijkl"):  # 12 bytes: over the limit at the third
        lines.feed(piece)
    assert written == [b"abcdefghijkl"]
    lines.feed(b"mn\nop")
    lines.feed(b"q")
    lines.close()
    assert b"".join(written) == b"abcdefghijklmn\nopq\n"
    assert tail == ["mn", "opq"]


def test_bytes_that_are_not_utf8_reach_the_log_while_secrets_are_masked(
        repo: Path, agentfile_cli: Run) -> None:
    write(repo, "t:\n    run = \"printf 'A\\\\377\\\\376B %s\\\\n' $MY_API_KEY\"\n")
    result = agentfile_cli("build", cwd=repo, env={"MY_API_KEY": "hunter2xyz"})
    assert result.code == 0, result.err
    log = (run_dir(repo) / "logs" / "t.log").read_bytes().splitlines()
    assert log[1] == b"A\xff\xfeB ***"


def test_a_failure_s_detail_keeps_the_end_of_each_overlong_line(
        repo: Path, agentfile_cli: Run) -> None:
    """30 lines of 1 MB and a failure: the detail in the state and the summary holds each
    line's last 2,000 characters, not 30 MB."""
    write(repo, "t:\n    run = \"python3 -c '[print(\\\"x\\\" * 999999 + \\\"E\\\") "
                "for _ in range(30)]'; exit 1\"\n")
    assert agentfile_cli("build", cwd=repo).code == 1
    (detail,) = rows(repo, "SELECT detail FROM outcomes")[0]
    lines = detail.splitlines()
    assert lines[0] == "exited with 1:" and len(lines) == 31
    assert all(ln.startswith("[998000 characters cut] ") and ln.endswith("xE")
               for ln in lines[1:])
    assert len(detail) < 100_000
    assert (run_dir(repo) / "summary.json").stat().st_size < 200_000


def test_a_log_that_cannot_be_written_fails_the_target_not_the_build(tmp_path: Path) -> None:
    """A full disk under a target's log: the target runs to its end, and ends `failed` with
    the reason; nothing escapes to stop the build."""
    from agentfile.run.runner import _status

    launch = process.Launch("echo one; echo two", tmp_path, dict(os.environ))
    outcome = process.run(launch, log=Path("/dev/full"))
    assert outcome.exit_code == 0 and outcome.tail == ["one", "two"]
    assert outcome.log_error == "No space left on device"
    status, why = _status(outcome)
    assert status == "failed" and why is not None and "log could not be written" in why


def test_a_full_disk_is_said_plainly(tmp_path: Path) -> None:
    (tmp_path / "Agentfile").write_text("a:\n    run = 'true'\n")
    done = patched_agentfile(tmp_path, "import errno\n"
                                       "from agentfile.commands import build\n"
                                       "def full(*args, **kwargs):\n"
                                       "    raise OSError(errno.ENOSPC, 'No space left')\n"
                                       "build.build = full\n", "build")
    assert done.returncode == 1
    assert done.stderr.startswith("agentfile: no space left on the disk") and \
        "internal error" not in done.stderr


def test_a_background_child_adds_no_blank_line_to_the_log(repo: Path,
                                                         agentfile_cli: Run) -> None:
    write(repo, 't:\n    run = "sleep 3 & echo done"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    assert (run_dir(repo) / "logs" / "t.log").read_text().endswith("\ndone\n")
