"""Targets run in tmux windows, against the real tmux (the test session's own server)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentfile.run import process

if shutil.which("tmux") is None:
    pytest.skip("tmux is not installed", allow_module_level=True)

# Imported after the skip: the module imports libtmux, which wants tmux.
from agentfile.isolation import tmux


def has_session(name: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", f"={name}"],
                          capture_output=True).returncode == 0


def window_names(name: str) -> list[str]:
    result = subprocess.run(["tmux", "list-windows", "-t", f"={name}", "-F", "#{window_name}"],
                            capture_output=True, text=True)
    return result.stdout.split()


def tagged(tag: str) -> list[int]:
    """Processes still carrying the tag in their environment."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(process.TAG_VARIABLE) == tag:
                found.append(proc.pid)
    return found


@pytest.fixture
def name(tmp_path: Path) -> str:
    return f"agentfile-test-{os.getpid()}-{tmp_path.name}".replace(".", "_")


@pytest.fixture
def tag(name: str) -> str:
    """Unique to the test, so that other test runs on the machine cannot interfere."""
    return f"{name}-tag"


@pytest.fixture
def session(name: str) -> Iterator[tmux.TmuxSession]:
    created = tmux.TmuxSession.create(name)
    try:
        yield created
    finally:
        created.kill()


def launch(tmp_path: Path, command: str | list[str], *, deadline: float | None = None,
           tag: str = "") -> process.Launch:
    return process.Launch(command, cwd=tmp_path, env={"PATH": os.environ["PATH"]},
                          deadline=deadline, tag=tag)


def test_session_name() -> None:
    run = "20240506-070809-ab12"
    named = tmux.session_name(Path("/src/my.repo:x"), run)
    assert named.startswith("agentfile-my_repo_x-") and named.endswith(f"-{run}")
    assert tmux.session_name(Path("/"), run).startswith("agentfile-repo-")
    # Two repositories of one name, two builds of one second: four names.
    names = {tmux.session_name(Path(f"/{where}/app"), f"20240506-070809-{tail}")
             for where in ("a", "b") for tail in ("0000", "0001")}
    assert len(names) == 4


def test_a_session_of_another_owner_is_neither_adopted_nor_killed(name: str) -> None:
    mine = tmux.TmuxSession.create(name, owner="/a/app 1")
    try:
        with pytest.raises(tmux.TmuxError, match="duplicate session"):
            tmux.TmuxSession.create(name, owner="/b/app 1")
        assert not tmux.kill_session(name, owner="/b/app 1")
        assert has_session(name) and mine.owned_by("/a/app 1")
        options = subprocess.run(["tmux", "show-options", "-v", "-t", f"={name}:",
                                  "destroy-unattached"], capture_output=True, text=True)
        assert options.stdout.strip() == "off"
        assert tmux.kill_session(name, owner="/a/app 1") and not has_session(name)
    finally:
        mine.kill()


@pytest.mark.parametrize("code", [0, 3])
def test_exit_codes(session: tmux.TmuxSession, tmp_path: Path, code: int) -> None:
    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, f"echo hi; exit {code}"),
                               log=tmp_path / "t.log")
    assert (outcome.exit_code, outcome.stopped, outcome.tail) == (code, None, ["hi"])
    assert outcome.duration_s < 0.5


def test_many_lines_fast(session: tmux.TmuxSession, tmp_path: Path) -> None:
    lines: list[str] = []
    log = tmp_path / "logs" / "t.log"
    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "seq 1 20000; exit 7"), log=log,
                               on_line=lines.append)
    expected = [str(n) for n in range(1, 20001)]
    assert outcome.exit_code == 7
    assert lines == expected
    assert outcome.tail == expected[-process.TAIL_LINES:]
    assert log.read_text().splitlines() == expected


def test_killed_and_last_partial_line(session: tmux.TmuxSession, tmp_path: Path) -> None:
    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "printf 'a\\r\\nb'; kill -9 $$"),
                               log=tmp_path / "t.log")
    assert (outcome.exit_code, outcome.stopped, outcome.tail) == (-9, None, ["a", "b"])
    assert (tmp_path / "t.log").read_bytes() == b"a\r\nb\n"


def test_output_streams_while_running(session: tmux.TmuxSession, tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("earlier attempt\n")
    seen: dict[str, float] = {}

    def on_line(line: str) -> None:
        seen[line] = time.monotonic()
        assert line in log.read_text()

    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "echo first; sleep 1; echo second"),
                               log=log, on_line=on_line)
    ended = time.monotonic()
    assert outcome.exit_code == 0
    assert list(seen) == ["first", "second"]
    assert ended - seen["first"] > 0.8
    assert log.read_text() == "earlier attempt\nfirst\nsecond\n"


def test_output_shown_in_the_pane(session: tmux.TmuxSession, tmp_path: Path) -> None:
    shown: list[str] = []

    def on_line(line: str) -> None:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", f"={session.name}:t"],
                                    capture_output=True, text=True).stdout
            if line in screen:
                shown.append(line)
                return
            time.sleep(0.02)

    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "echo in-the-pane; sleep 0.3"),
                               log=tmp_path / "t.log", on_line=on_line)
    assert outcome.exit_code == 0
    assert shown == ["in-the-pane"]


def test_env_and_cwd_as_process_run(session: tmux.TmuxSession, tmp_path: Path, tag: str) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    target = process.Launch("env; pwd", cwd=work, tag=tag,
                            env={"PATH": os.environ["PATH"], "FOO": "a 'b' $c\nd",
                                 "odd-name": "x"})
    panes = tmux.run_in_pane(session, "t", target, log=tmp_path / "pane.log")
    plain = process.run(target, log=tmp_path / "plain.log")
    assert panes.exit_code == plain.exit_code == 0
    in_pane = (tmp_path / "pane.log").read_text()
    assert sorted(in_pane.splitlines()) == sorted((tmp_path / "plain.log").read_text().splitlines())
    assert "FOO=a 'b' $c\nd\n" in in_pane
    assert f"{process.TAG_VARIABLE}={tag}\n" in in_pane
    # A shell drops variables whose names are not shell names; a program gets them.
    assert "odd-name=x\n" not in in_pane
    direct = tmux.run_in_pane(session, "t", process.Launch(["env"], cwd=work, env=target.env),
                              log=tmp_path / "direct.log")
    assert direct.exit_code == 0
    assert "odd-name=x" in direct.tail
    assert "TMUX" not in in_pane
    assert in_pane.endswith(f"\n{work}\n")


def test_argv_command(session: tmux.TmuxSession, tmp_path: Path) -> None:
    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, ["printf", "%s|\n", "a b", "$c"]),
                               log=tmp_path / "t.log")
    assert (outcome.exit_code, outcome.tail) == (0, ["a b|", "$c|"])


def test_timeout_stops_a_term_ignoring_tree(session: tmux.TmuxSession, tmp_path: Path,
                                            tag: str) -> None:
    pids: list[int] = []
    target = launch(tmp_path, "trap '' TERM; sleep 30", tag=tag,
                    deadline=time.monotonic() + 0.5)
    outcome = tmux.run_in_pane(session, "t", target, log=tmp_path / "t.log",
                               on_start=pids.append)
    assert outcome.stopped == "timeout"
    # KILLed, or its shell ended by its child's KILL a moment before its own (128 + 9).
    assert outcome.exit_code in (-9, 137)
    # Up to a second more where init reaps orphans late (stop_tree waits for its zombies).
    assert 0.5 + process.GRACE_SECONDS <= outcome.duration_s < 0.5 + process.GRACE_SECONDS + 2
    assert not psutil.pid_exists(pids[0])
    assert tagged(tag) == []
    assert window_names(session.name) == [tmux.PLACEHOLDER_WINDOW]


def test_cancel(session: tmux.TmuxSession, tmp_path: Path, tag: str) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    target = launch(tmp_path, "echo started; exec sleep 30", tag=tag)
    outcome = tmux.run_in_pane(session, "t", target, log=tmp_path / "t.log", cancel=cancel)
    assert (outcome.stopped, outcome.tail) == ("interrupted", ["started"])
    assert outcome.exit_code == -15
    assert outcome.duration_s < 0.3 + process.GRACE_SECONDS  # sleep dies at once on TERM
    assert tagged(tag) == []


def test_watch_reason(session: tmux.TmuxSession, tmp_path: Path) -> None:
    started = time.monotonic()

    def watch() -> str | None:
        return "over-budget" if time.monotonic() - started > 0.3 else None

    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "exec sleep 30"),
                               log=tmp_path / "t.log", watch=watch)
    assert (outcome.stopped, outcome.exit_code) == ("over-budget", -15)


def test_error_in_a_callback_stops_the_tree(session: tmux.TmuxSession, tmp_path: Path,
                                            tag: str) -> None:
    def on_line(line: str) -> None:
        raise RuntimeError(line)

    target = launch(tmp_path, "echo boom; sleep 30", tag=tag)
    with pytest.raises(RuntimeError, match="boom"):
        tmux.run_in_pane(session, "t", target, log=tmp_path / "t.log", on_line=on_line)
    assert tagged(tag) == []
    assert window_names(session.name) == [tmux.PLACEHOLDER_WINDOW]


def test_leftovers_stopped_after_a_normal_exit(session: tmux.TmuxSession,
                                               tmp_path: Path, tag: str) -> None:
    # One child stays in the group; one leaves it (setsid) and is found by its tag.
    target = launch(tmp_path, "sleep 30 & setsid sleep 30 & sleep 0.1; echo done", tag=tag)
    outcome = tmux.run_in_pane(session, "t", target, log=tmp_path / "t.log")
    assert (outcome.exit_code, outcome.stopped, outcome.tail) == (0, None, ["done"])
    assert outcome.duration_s < 2.5
    assert tagged(tag) == []


def test_window_and_session_lifecycle(name: str, tmp_path: Path) -> None:
    during: list[tuple[bool, list[str]]] = []
    with tmux.TmuxSession.create(name) as session:
        assert session.exists() and has_session(name)
        outcome = tmux.run_in_pane(
            session, "build-me", launch(tmp_path, "echo hi; sleep 0.2"), log=tmp_path / "t.log",
            on_start=lambda pid: during.append((has_session(name), window_names(name))))
        assert outcome.exit_code == 0
        assert during == [(True, [tmux.PLACEHOLDER_WINDOW, "build-me"])]
        assert window_names(name) == [tmux.PLACEHOLDER_WINDOW]
        assert not list(tmp_path.glob(".t.log.*"))  # the launcher's files are gone
    assert not has_session(name) and not session.exists()


def test_context_kills_on_error(name: str) -> None:
    with pytest.raises(RuntimeError), tmux.TmuxSession.create(name):
        raise RuntimeError("boom")
    assert not has_session(name)


def test_kill_session_is_idempotent(name: str) -> None:
    session = tmux.TmuxSession.create(name)
    try:
        assert tmux.kill_session(name)
        assert not has_session(name)
        assert not tmux.kill_session(name)
        assert not session.kill()
    finally:
        session.kill()


def test_kill_session_is_exact(name: str) -> None:
    longer = tmux.TmuxSession.create(name + "-longer")
    try:
        assert not tmux.kill_session(name)
        assert has_session(name + "-longer")
    finally:
        longer.kill()


def test_noop_is_fast(session: tmux.TmuxSession, tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = tmux.run_in_pane(session, "t", launch(tmp_path, "true"), log=tmp_path / "t.log")
    assert outcome.exit_code == 0
    assert time.monotonic() - started < 0.5
