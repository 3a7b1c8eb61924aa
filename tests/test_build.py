"""`agentfile build` as a user runs it: real subprocesses in real git repositories."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import Run, events, last_run, patched_agentfile, wait_for_descendants

# Each target appends "start NAME TIME" / "end NAME TIME" to trace.log, so the tests read the
# order and the overlap the build really had.
TRACE = "echo start {target} $(date +%s.%N) >> trace.log; sleep {secs}; " \
        "echo end {target} $(date +%s.%N) >> trace.log"


def traced(secs: float = 0.2, extra: str = "") -> str:
    command = TRACE.replace("{secs}", str(secs)) + (f"; {extra}" if extra else "")
    return f'    run = "{command}"\n'


def write(repo: Path, text: str) -> None:
    (repo / "Agentfile").write_text(text)


def trace(repo: Path) -> list[tuple[str, str, float]]:
    rows = []
    for line in (repo / "trace.log").read_text().splitlines():
        kind, name, stamp = line.split()
        rows.append((kind, name, float(stamp)))
    return rows


def max_overlap(rows: list[tuple[str, str, float]]) -> int:
    current = best = 0
    for kind, _, _ in sorted(rows, key=lambda r: (r[2], r[0] == "start")):
        current += 1 if kind == "start" else -1
        best = max(best, current)
    return best


def statuses(repo: Path) -> dict[str, str]:
    return {str(e["target"]): str(e["status"]) for e in events(repo)
            if e["event"] == "target_finished"}


def test_order_and_job_bound(repo: Path, agentfile_cli: Run) -> None:
    text = "".join(f"w{i}:\n{traced()}" for i in range(6))
    text += "after: " + " ".join(f"w{i}" for i in range(6)) + "\n" + traced(0.05)
    write(repo, text)
    result = agentfile_cli("build", "-j2", cwd=repo)
    assert result.code == 0, result.out + result.err
    rows = trace(repo)
    assert max_overlap(rows) == 2  # -j2 observed by the targets themselves
    after_start = next(t for k, n, t in rows if k == "start" and n == "after")
    assert all(t <= after_start for k, n, t in rows if k == "end" and n != "after")
    assert "7 succeeded" in result.out


def test_up_to_date_and_always_make(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.01) + "    outputs = [\"out.txt\"]\n"
          "    inputs = [\"in.txt\"]\n" + "b: a\n" + traced(0.01) + "    run = \"touch out.txt\"\n"
          .replace("    run = \"touch out.txt\"\n", ""))
    (repo / "in.txt").write_text("1")
    (repo / "out.txt").write_text("x")
    assert agentfile_cli("build", cwd=repo).code == 0
    assert len(trace(repo)) == 4
    second = agentfile_cli("build", cwd=repo)
    assert second.code == 0 and len(trace(repo)) == 4  # nothing ran
    assert statuses(repo) == {"a": "up-to-date", "b": "up-to-date"}
    (repo / "in.txt").write_text("2")  # an input changed: a runs, and so does b after it
    agentfile_cli("build", cwd=repo)
    assert statuses(repo) == {"a": "succeeded", "b": "succeeded"}
    (repo / "out.txt").unlink()  # a missing output: not up to date
    agentfile_cli("build", "b", cwd=repo)
    assert statuses(repo)["a"] == "succeeded"
    agentfile_cli("build", "-B", cwd=repo)
    assert statuses(repo) == {"a": "succeeded", "b": "succeeded"}
    # A changed definition makes it and its dependents stale.
    write(repo, (repo / "Agentfile").read_text().replace("sleep 0.01", "sleep 0.02", 1))
    agentfile_cli("build", cwd=repo)
    assert statuses(repo) == {"a": "succeeded", "b": "succeeded"}


def test_a_dependency_that_ran_under_a_group_makes_its_dependents_run(
        repo: Path, agentfile_cli: Run) -> None:
    write(repo, "x:\n    always = true\n" + traced(0.01) + "g: x\n"
          "y: g\n" + traced(0.01) + "z: x\n" + traced(0.01))
    assert agentfile_cli("build", cwd=repo).code == 0
    preview = agentfile_cli("build", "-n", cwd=repo).out
    assert "would run: y" in preview and "would run: z" in preview
    assert agentfile_cli("build", cwd=repo).code == 0
    assert statuses(repo) == {"x": "succeeded", "g": "succeeded", "y": "succeeded",
                              "z": "succeeded"}


def test_failure_blocks_dependents_and_stops_without_k(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'bad:\n    run = "echo doomed; exit 3"\n'
          "child: bad\n" + traced(0.01)
          + "slow:\n" + traced(0.5)
          + "later:\n    priority = -1\n" + traced(0.01))
    result = agentfile_cli("build", "-j2", cwd=repo)
    assert result.code == 1
    got = statuses(repo)
    assert got["bad"] == "failed" and got["child"] == "blocked"
    assert got["slow"] == "succeeded"  # already running: it finishes
    assert got["later"] == "blocked"  # never started after the failure
    assert "doomed" in result.out or "exited with 3" in result.out
    log = last_run(repo) / "logs" / "bad.log"
    assert "doomed" in log.read_text()


def test_keep_going_runs_everything_independent(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'bad:\n    run = "exit 1"\nchild: bad\n' + traced(0.01)
          + "slow:\n" + traced(0.3) + "later:\n    priority = -1\n" + traced(0.01))
    result = agentfile_cli("build", "-k", "-j2", cwd=repo)
    assert result.code == 1
    assert statuses(repo) == {"bad": "failed", "child": "blocked", "slow": "succeeded",
                              "later": "succeeded"}


def test_retry_failed_runs_only_what_failed(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "ok:\n" + traced(0.01) + 'flaky:\n    run = "test -f fixed"\n'
          "after: flaky\n" + traced(0.01))
    assert agentfile_cli("build", "-k", cwd=repo).code == 1
    (repo / "fixed").touch()
    write(repo, (repo / "Agentfile").read_text().replace("sleep 0.01", "sleep 0.011", 1))
    result = agentfile_cli("build", "--retry-failed", cwd=repo)
    assert result.code == 0
    # `ok` succeeded last time: kept as it is, though its definition changed since.
    assert statuses(repo) == {"ok": "up-to-date", "flaky": "succeeded", "after": "succeeded"}


def test_retries_get_the_failure_and_verify_decides(repo: Path, agentfile_cli: Run) -> None:
    (repo / "agent.sh").write_text(
        '#!/bin/sh\ncat "$1" >> prompts-seen.txt\n'
        'if [ -f second ]; then echo done > out.txt; else touch second; fi\n'
        'echo "final message" > "$AGENTFILE_RESULT_FILE"\n')
    (repo / "agent.sh").chmod(0o755)
    write(repo, 'agent bot: command\n    command = "./agent.sh {prompt_file}"\n'
          'fix:\n    agent = bot\n    isolation = none\n    prompt = "make out.txt"\n'
          '    verify = "test -f out.txt"\n    retries = 1\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out
    seen = (repo / "prompts-seen.txt").read_text()
    assert seen.count("make out.txt") == 2
    assert "The previous attempt failed" in seen and "test -f out.txt" in seen
    run = last_run(repo)
    assert (run / "results" / "fix.md").read_text() == "final message\n"
    assert (run / "prompts" / "fix.md").read_text().startswith("make out.txt")
    finished = [e for e in events(repo) if e["event"] == "target_finished"]
    assert finished[0]["attempt"] == 2


def test_command_agent_contract_and_placeholders(repo: Path, agentfile_cli: Run) -> None:
    (repo / "agent.py").write_text(
        "import json, os, sys\n"
        "keys = ['AGENTFILE_TARGET', 'AGENTFILE_RUN_ID', 'AGENTFILE_WORKSPACE',\n"
        "        'AGENTFILE_PROMPT_FILE', 'AGENTFILE_RESULT_FILE', 'AGENTFILE_USAGE_FILE']\n"
        "open('env.json', 'w').write(json.dumps({k: os.environ[k] for k in keys}))\n"
        "open('argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
        "json.dump({'cost_usd': 0.25, 'input_tokens': 100, 'output_tokens': 20},\n"
        "          open(os.environ['AGENTFILE_USAGE_FILE'], 'w'))\n"
        "open(os.environ['AGENTFILE_RESULT_FILE'], 'w').write('the answer')\n")
    (repo / "$(touch pwned).txt").write_text("")
    write(repo, f'agent py: command\n    command = "{sys.executable} agent.py {{file}} '
          '{prompt_file}"\n'
          'do/{file}:\n    foreach file in glob("*.txt")\n    agent = py\n'
          '    isolation = none\n    prompt = "Look at {file}"\n'
          'use: do\n    run = "echo {deps.do.result} > used.txt"\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert not (repo / "pwned").exists()  # a file name is a name, not a command
    assert json.loads((repo / "argv.json").read_text())[0] == "$(touch pwned).txt"
    env = json.loads((repo / "env.json").read_text())
    assert env["AGENTFILE_TARGET"] == "do/$(touch pwned).txt"
    assert env["AGENTFILE_WORKSPACE"] == str(repo)
    assert (repo / "used.txt").read_text() == "the answer\n"
    finished = [e for e in events(repo) if e["event"] == "target_finished"]
    assert finished[0]["cost_usd"] == 0.25 and finished[0]["tokens"] == 120
    assert "$0.25" in result.out


def test_dry_run_starts_and_writes_nothing(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.01) + "b: a\n" + traced(0.01))
    result = agentfile_cli("build", "-n", cwd=repo)
    assert result.code == 0
    assert "would run: a  (echo start" in result.out and "2 of 2 targets would run" in result.out
    assert not (repo / "trace.log").exists() and not (repo / ".agentfile").exists()
    agentfile_cli("build", cwd=repo)
    before = snapshot(repo)
    again = agentfile_cli("build", "-n", cwd=repo)
    assert "0 of 2 targets would run" in again.out
    # Not a file more, less or changed, the state database's side files included.
    assert snapshot(repo) == before
    for reader in (["runs"], ["status"], ["plan"], ["list"], ["logs", "a"]):
        assert agentfile_cli(*reader, cwd=repo).code == 0
        assert snapshot(repo) == before, reader


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (git's own excepted): size and change time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if ".git" not in p.relative_to(folder).parts[:1]}


def test_locks_and_exclusive(repo: Path, agentfile_cli: Run) -> None:
    text = "".join(f"l{i}:\n    locks = [\"db\"]\n{traced(0.15)}" for i in range(3))
    text += "solo:\n    exclusive = true\n" + traced(0.15)
    text += "".join(f"free{i}:\n{traced(0.15)}" for i in range(2))
    write(repo, text)
    assert agentfile_cli("build", "-j4", cwd=repo).code == 0
    rows = trace(repo)
    locked = [r for r in rows if r[1].startswith("l")]
    assert max_overlap(locked) == 1
    spans = {n: (next(t for k, m, t in rows if k == "start" and m == n),
                 next(t for k, m, t in rows if k == "end" and m == n)) for _, n, _ in rows}
    start, end = spans.pop("solo")
    # No other target's run overlaps solo's, not even one that began before it.
    assert not [n for n, (s, e) in spans.items() if s < end and e > start]


def test_priority_then_critical_path(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.05) + "b:\n" + traced(0.05)
          + "c:\n    priority = 5\n" + traced(0.05)
          + "d:\n" + traced(0.05) + "e: d\n" + traced(0.05))
    assert agentfile_cli("build", "-j1", cwd=repo).code == 0
    order = [n for k, n, _ in trace(repo) if k == "start"]
    assert order[0] == "c"  # highest priority
    assert order[1] == "d"  # longest remaining path (d -> e) before file order
    assert order[2:] == ["a", "b", "e"] or order[2:] == ["e", "a", "b"]


def test_earlier_durations_order_the_next_build(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.01) + "b:\n" + traced(0.5) + "c:\n" + traced(0.01))
    assert agentfile_cli("build", "-j1", cwd=repo).code == 0
    assert [n for k, n, _ in trace(repo) if k == "start"] == ["a", "b", "c"]  # file order
    (repo / "trace.log").unlink()
    # b took longest: it starts first now, before a new target (never run, so weighed at
    # the median of the known durations, as `plan` weighs it) written first.
    write(repo, "new:\n" + traced(0.01) + (repo / "Agentfile").read_text())
    assert agentfile_cli("build", "-j1", "-B", cwd=repo).code == 0
    assert next(n for k, n, _ in trace(repo) if k == "start") == "b"


def test_canary_runs_first_and_gates_the_rest(repo: Path, agentfile_cli: Run) -> None:
    for i in range(4):
        (repo / f"f{i}.txt").write_text("")
    write(repo, 'm/{f}:\n    foreach f in glob("f*.txt")\n    canary = 2\n' + traced(0.1))
    assert agentfile_cli("build", "-j4", cwd=repo).code == 0
    rows = trace(repo)
    canary_end = max(t for k, n, t in rows if k == "end" and n in ("m/f0.txt", "m/f1.txt"))
    assert all(t >= canary_end for k, n, t in rows
               if k == "start" and n in ("m/f2.txt", "m/f3.txt"))
    write(repo, 'm/{f}:\n    foreach f in glob("f*.txt")\n    canary = 1\n'
          '    run = "test {f} != f0.txt"\n')
    assert agentfile_cli("build", "-j4", "-k", cwd=repo).code == 1
    assert statuses(repo) == {"m/f0.txt": "failed", "m/f1.txt": "blocked",
                              "m/f2.txt": "blocked", "m/f3.txt": "blocked"}


def test_time_budget_kills_a_tree_that_ignores_term(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "stubborn:\n    budget = 1s\n"
          "    run = \"trap '' TERM; (trap '' TERM; sleep 60) & sleep 60; wait\"\n")
    started = time.monotonic()
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    assert time.monotonic() - started < 15
    assert statuses(repo) == {"stubborn": "timeout"}
    assert not _leftovers(repo)


def _leftovers(repo: Path) -> list[str]:
    """Processes whose command line mentions this test's repository or its tag."""
    found = []
    for proc in psutil.process_iter(["pid", "environ"]):
        try:
            env = proc.info["environ"] or {}
        except psutil.Error:
            continue
        if str(repo) in env.get("AGENTFILE_WORKSPACE", "") or str(repo) == env.get("PWD"):
            found.append(str(proc.pid))
    return found


def test_exit_codes_2_and_3(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n    run = x y\n")
    bad = agentfile_cli("build", cwd=repo)
    assert bad.code == 2 and not (repo / ".agentfile").exists()  # nothing ran
    assert agentfile_cli("build", "nope", cwd=repo).code == 2
    (repo / "spend.sh").write_text(
        '#!/bin/sh\necho \'{"cost_usd": 2.5}\' > "$AGENTFILE_USAGE_FILE"\nsleep 0.5\n')
    (repo / "spend.sh").chmod(0o755)
    write(repo, 'options:\n    budget = $3\n    isolation = none\n'
          'agent spender: command\n    command = "./spend.sh"\n'
          + "".join(f"t{i}:\n    agent = spender\n    prompt = \"spend\"\n" for i in range(3)))
    result = agentfile_cli("build", "-j1", cwd=repo)
    assert result.code == 3, result.out
    got = statuses(repo)
    assert got["t0"] == "succeeded" and "blocked" in got.values()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_build_ends_130_and_leaves_nothing(repo: Path, sig: int) -> None:
    # s3's children leave its process group: one in a session of its own that ignores
    # TERM, one daemonised (its parent gone); stopping finds them through the tree. Their
    # sleeps are of lengths no other build on the machine uses: looked for afterwards.
    mark = f"{os.getpid() % 1000}{int(sig):02d}{time.monotonic_ns() % 10**6:06d}"
    escaped = {f"31.{mark}", f"32.{mark}"}
    write(repo, "".join(f"s{i}:\n    run = \"sleep 30 & sleep 30\"\n" for i in range(3))
          + f"s3:\n    run = \"setsid sh -c 'trap \\\"\\\" TERM; sleep 31.{mark}' & "
            f"(sleep 32.{mark} &) ; sleep 30\"\n"
          + "after: s0 s1 s2 s3\n    run = 'true'\n")
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j4"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"})
    wait_for_descendants(proc.pid, "sleep", count=9)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert descendants
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out.decode()
    _, alive = psutil.wait_procs(descendants, timeout=5)
    assert not alive
    got = statuses(repo)
    assert set(got.values()) == {"interrupted"}
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and p.info["cmdline"][0] == "sleep"
                and set(p.info["cmdline"][1:2]) & escaped]


def test_second_build_is_refused_while_one_runs(repo: Path, agentfile_cli: Run,
                                                tmp_path: Path) -> None:
    # The first build's target runs until the test lets it go: however slow the machine,
    # it is still running while the second build and status ask.
    release = tmp_path / "release"
    write(repo, 'slow:\n    run = "until [ -e \\"$RELEASE\\" ]; do sleep 0.05; done"\n'
          '    always = true\n')
    first = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "RELEASE": str(release)})
    try:
        lock = repo / ".agentfile" / "build.lock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        record = lock.read_text()
        second = agentfile_cli("build", cwd=repo)
        assert second.code == 2
        assert f"pid {first.pid}" in second.err
        # Refused, it leaves the holder's record alone: readers still see the live build.
        assert lock.read_text() == record
        assert f"pid {first.pid}" in agentfile_cli("build", cwd=repo).err
        status = agentfile_cli("status", cwd=repo)
        assert "no build is running" not in status.out and "slow" in status.out
    finally:
        first.kill()
        first.wait()
        release.touch()
    # The holder died without cleaning up: its lock is taken over.
    assert agentfile_cli("build", cwd=repo, env={"RELEASE": str(release)}).code == 0


def test_a_reader_asking_who_holds_the_lock_never_refuses_a_build(tmp_path: Path) -> None:
    """`status`, `logs -f` and `clean` look at the lock with a shared lock of a moment; a
    build starting in that moment waits it out instead of reporting a build that is not."""
    import fcntl
    import threading

    from agentfile.records import runlock

    lock = tmp_path / "build.lock"
    lock.write_text("")
    reader = open(lock)  # noqa: SIM115 - released by the timer below
    fcntl.flock(reader, fcntl.LOCK_SH)
    threading.Timer(0.05, reader.close).start()
    with runlock.build_lock(lock, "run-1"):
        assert runlock.holder(lock) == {**json.loads(lock.read_text()), "run": "run-1"}
    assert runlock.holder(lock) is None and lock.read_text() == ""


def test_the_summary_sets_the_sequential_estimate_against_the_wall(
        repo: Path, agentfile_cli: Run) -> None:
    write(repo, "".join(f"p{i}:\n" + traced(0.4) for i in range(3)))
    result = agentfile_cli("build", "-j3", "--json", cwd=repo)
    finished = [json.loads(line) for line in result.out.splitlines()][-1]
    summary = json.loads((last_run(repo) / "summary.json").read_text())
    for totals in (finished, summary):
        assert totals["sequential_s"] >= 1.2  # three targets of 0.4 s, one after another
        assert totals["duration_s"] < totals["sequential_s"] / 2  # side by side
        assert totals["counts"] == {"succeeded": 3} and totals["exit_code"] == 0
    plain = agentfile_cli("build", "-j3", "-B", cwd=repo).out
    line = next(ln for ln in plain.splitlines() if "sequential estimate" in ln)
    shown = float(line.rsplit("(", 1)[1].rstrip("x)"))
    assert shown >= 2.0, line  # the three ran at once: about 3x


def test_options_default_is_what_a_bare_build_builds(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "options:\n    default = [\"b\"]\n" + "a:\n" + traced(0.01)
          + "b: a\n" + traced(0.01) + "c:\n" + traced(0.01) + "d: c\n" + traced(0.01))
    assert agentfile_cli("build", cwd=repo).code == 0
    assert statuses(repo) == {"a": "succeeded", "b": "succeeded"}
    assert agentfile_cli("build", "d", cwd=repo).code == 0  # named targets win
    assert statuses(repo) == {"c": "succeeded", "d": "succeeded"}


def test_usage_is_read_while_the_agent_runs(repo: Path, agentfile_cli: Run) -> None:
    """A target's budget is held against the usage its agent reports as it goes: the agent
    is stopped soon after it reports going over, not when it ends."""
    (repo / "spend.sh").write_text(
        '#!/bin/sh\necho \'{"cost_usd": 0.1}\' > "$AGENTFILE_USAGE_FILE"\nsleep 0.3\n'
        'echo \'{"cost_usd": 2.0}\' > "$AGENTFILE_USAGE_FILE"\nexec sleep 30\n')
    (repo / "spend.sh").chmod(0o755)
    write(repo, 'options:\n    isolation = none\n'
          'agent spender: command\n    command = "./spend.sh"\n'
          't:\n    agent = spender\n    prompt = "spend"\n    budget = $1\n')
    started = time.monotonic()
    result = agentfile_cli("build", cwd=repo)
    assert time.monotonic() - started < 15, "stopped only when the agent ended"
    assert result.code == 1, result.out + result.err
    assert statuses(repo) == {"t": "over-budget"}
    finished = next(e for e in events(repo) if e["event"] == "target_finished")
    assert finished["cost_usd"] == 2.0 and float(str(finished["duration_s"])) < 10


def test_state_records_runs_attempts_and_fingerprints(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.01))
    agentfile_cli("build", cwd=repo)
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    assert db.execute("SELECT status, exit_code FROM runs").fetchall() == [("succeeded", 0)]
    assert db.execute("SELECT target, status FROM attempts").fetchall() == [("a", "succeeded")]
    assert [r[0] for r in db.execute("SELECT target FROM fingerprints")] == ["a"]
    run = last_run(repo)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"] == {"succeeded": 1} and summary["exit_code"] == 0
    kinds = [e["event"] for e in events(repo)]
    assert kinds == ["build_started", "target_started", "target_finished", "build_finished"]
    assert (repo / ".agentfile" / ".gitignore").read_text() == "*\n"


def test_json_events_on_stdout(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "a:\n" + traced(0.01))
    result = agentfile_cli("build", "--json", cwd=repo)
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [e["event"] for e in lines][-1] == "build_finished"
    finished = next(e for e in lines if e["event"] == "target_finished")
    for key in ("target", "status", "exit_code", "attempt", "duration_s", "cost_usd",
                "tokens", "peak_rss_bytes", "run", "time"):
        assert key in finished


def test_a_damaged_state_database_is_a_clear_error(repo: Path, agentfile_cli: Run,
                                                    tmp_path: Path) -> None:
    """A state file that is not a database stops every command with exit 2 and what to do,
    never a crash; moved aside, the next build starts afresh. The same for the ledger."""
    write(repo, 'a:\n    run = "true"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    state = repo / ".agentfile" / "state.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{state}{extra}").unlink(missing_ok=True)
    state.write_bytes(b"this is not a database, it was overwritten" * 100)
    for command in (["build"], ["runs"], ["status"], ["clean", "-n"]):
        result = agentfile_cli(*command, cwd=repo)
        assert result.code == 2, (command, result.out, result.err)
        assert "is damaged" in result.err and "move it aside" in result.err
        assert "internal error" not in result.err + result.out
    state.rename(state.with_name("state.sqlite.damaged"))
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0 and "1 succeeded" in again.out, again.out + again.err

    home = tmp_path / "home"
    home.mkdir()
    (home / "ledger.sqlite").write_bytes(b"garbage" * 1000)
    write(repo, 'agent bot: command\n    command = "true"\n'
                'ask:\n    agent = bot\n    isolation = none\n    prompt = "hi"\n')
    spent = agentfile_cli("build", cwd=repo, env={"AGENTFILE_HOME": str(home)})
    assert spent.code == 2 and "ledger.sqlite is damaged" in spent.err, spent.err


def test_no_place_for_state_is_a_clear_error(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'a:\n    run = "touch ran"\n')
    (repo / ".agentfile").write_text("a file where agentfile keeps its folder\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 2 and "a file of that name is in the way" in result.err, result.err
    assert "internal error" not in result.err and not (repo / "ran").exists()


def test_ctrl_c_while_the_command_line_loads_is_an_interruption(tmp_path: Path) -> None:
    """The first milliseconds, before `cli` has loaded: exit 130 and one line, no traceback."""
    code = ("import sys\n"
            "class Cut:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'agentfile.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Cut())\n"
            "from agentfile.entry import main\n"
            "raise SystemExit(main())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (130, "agentfile: interrupted\n")
    from agentfile import entry, errors
    assert entry.EXIT_INTERRUPTED == errors.EXIT_INTERRUPTED


def test_a_build_goes_on_when_its_standard_output_goes_away(repo: Path) -> None:
    """`agentfile build | head -1`, or output to a full disk: every target still runs, the
    exit code still says how they ended, and one line on stderr says what happened."""
    write(repo, "".join(f"t{i}:\n    run = \"echo {i}; sleep 0.05\"\n" for i in range(20))
          + "bad:\n    run = 'exit 1'\n    priority = -1\n")
    command = [sys.executable, "-m", "agentfile", "build", "-k", "-j4"]
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1, err
    assert "standard output failed" in err and "Traceback" not in err
    summary = json.loads((last_run(repo) / "summary.json").read_text())
    assert summary["counts"] == {"succeeded": 20, "failed": 1}
    with open("/dev/full", "w") as full:
        done = subprocess.run([*command, "-B"], cwd=repo, stdout=full,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "standard output failed" in done.stderr, done.stderr
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_build_ends_leaves_its_records_whole(repo: Path, sig: int) -> None:
    """A Ctrl-C or SIGTERM once every target has ended, while the summary is written: the
    run is still closed in the state, with its summary, and agentfile exits as it would."""
    write(repo, "a:\n    run = 'true'\n")
    done = patched_agentfile(repo, "import os\n"
                                   "from agentfile.commands import build\n"
                                   "real = build._summary\n"
                                   "def late(*args, **kwargs):\n"
                                   f"    os.kill(os.getpid(), {int(sig)})\n"
                                   "    return real(*args, **kwargs)\n"
                                   "build._summary = late\n", "build")
    assert done.returncode == 0, done.stderr
    assert json.loads((last_run(repo) / "summary.json").read_text())["status"] == "succeeded"
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    assert db.execute("SELECT status FROM runs").fetchall() == [("succeeded",)]


@pytest.mark.parametrize("hard", [200, 4096])
def test_jobs_fit_the_open_files_limit(repo: Path, hard: int) -> None:
    """-j 100 under `ulimit -n 200`: the soft limit is raised as far as the hard one allows;
    past that fewer run at once, said once, and none fails for want of a descriptor."""
    import resource

    write(repo, "".join(f"t{i}:\n{traced(0.3)}" for i in range(100)))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))

    done = subprocess.run([sys.executable, "-m", "agentfile", "build", "-j100"], cwd=repo,
                          capture_output=True, text=True, preexec_fn=limit, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert set(statuses(repo).values()) == {"succeeded"}
    if hard == 200:
        assert "running at most 34 at once" in done.stderr
        assert max_overlap(trace(repo)) <= 34
    else:
        assert "open files" not in done.stderr


@pytest.mark.parametrize("isolation", ["none", "worktree"])  # the reactor; a worker thread
def test_an_attempt_that_cannot_start_keeps_the_ones_before(repo: Path, isolation: str) -> None:
    """A retry the kernel refuses to start (here: E2BIG, as a prompt over 128 KiB in an
    argument gets) fails that attempt; the first attempt and its record stay."""
    write(repo, f"t:\n    run = 'echo first; exit 1'\n    retries = 2\n"
                f"    isolation = {isolation}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "manifest"], cwd=repo, check=True)
    done = patched_agentfile(repo, "import errno\n"
                                   "from agentfile.run import process\n"
                                   "real = process.Started.__init__\n"
                                   "calls = []\n"
                                   "def start(self, *args, **kwargs):\n"
                                   "    calls.append(1)\n"
                                   "    if len(calls) == 2:\n"
                                   "        raise OSError(errno.E2BIG, 'Argument list too long')\n"
                                   "    real(self, *args, **kwargs)\n"
                                   "process.Started.__init__ = start\n", "build")
    assert done.returncode == 1, done.stderr
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    assert db.execute("SELECT attempt, status, exit_code FROM attempts ORDER BY attempt"
                      ).fetchall() == [(1, "failed", 1), (2, "failed", None)]
    (detail,) = db.execute("SELECT detail FROM outcomes").fetchone()
    assert detail == "agentfile could not run it: [Errno 7] Argument list too long"


def test_a_target_that_ended_in_time_is_not_late_when_agentfile_is(repo: Path) -> None:
    """agentfile itself stopped (SIGSTOP, a laptop's lid, a busy machine) past a target's
    time budget, while the target ended in time: it succeeded, it did not time out."""
    write(repo, 'a:\n    run = "for i in 1 2 3 4; do echo a$i; sleep 0.5; done"\n'
          "    budget = 3s\n")
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_descendants(proc.pid, "sleep")
    proc.send_signal(signal.SIGSTOP)
    time.sleep(4)  # the target ends at about 2 s; its budget ends at 3 s
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=60) == 0
    assert statuses(repo) == {"a": "succeeded"}
    log = (last_run(repo) / "logs" / "a.log").read_text().splitlines()
    assert log[1:] == ["a1", "a2", "a3", "a4"]


def test_one_instance_s_result_through_a_dependency_on_the_stem(repo: Path,
                                                                agentfile_cli: Run) -> None:
    write(repo, 'agent say: command\n    command = "cat {prompt_file} > $AGENTFILE_RESULT_FILE"\n'
          'big/{x}:\n    foreach x in ["p", "q"]\n    agent = say\n    isolation = none\n'
          '    prompt = "{x}"\n'
          's: big\n    run = "echo P={deps.big/p.result} > out.txt"\n'
          'plain:\n    run = "true"\n'
          't: plain\n    run = "echo {deps.plain/p.result}"\n')
    check = agentfile_cli("check", cwd=repo)
    assert check.code == 2 and "names 'plain/p', which is not a dependency" in check.err
    assert "big/p" not in check.err  # an instance of a stem it depends on
    write(repo, (repo / "Agentfile").read_text().split("plain:")[0])
    assert agentfile_cli("build", cwd=repo).code == 0
    assert (repo / "out.txt").read_text().startswith("P=p\n")


def test_a_run_target_gets_no_agent_files(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "r:\n    run = \"env | grep ^AGENTFILE_ | cut -d= -f1 | sort > seen.txt\"\n")
    assert agentfile_cli("build", cwd=repo).code == 0
    seen = set((repo / "seen.txt").read_text().split())
    assert {"AGENTFILE_RUN_ID", "AGENTFILE_TARGET", "AGENTFILE_WORKSPACE"} <= seen
    assert not seen & {"AGENTFILE_PROMPT_FILE", "AGENTFILE_RESULT_FILE", "AGENTFILE_USAGE_FILE"}


def test_a_failure_s_line_says_what_went_wrong(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'a:\n    run = "echo working; echo oops-it-broke >&2; exit 3"\n')
    result = agentfile_cli("build", "--json", cwd=repo)
    finished = next(json.loads(ln) for ln in result.out.splitlines()
                    if '"target_finished"' in ln)
    assert finished["detail"] == "exited with 3: oops-it-broke"


def test_a_placeholder_is_one_literal_word_inside_quotes_too(repo: Path,
                                                             agentfile_cli: Run) -> None:
    """SPEC 2.3: a file named `$(touch PWNED).py` is a name, not a command, whether the
    placeholder stands bare, in "…" or in '…', in `run`, `verify` or a command agent's
    `command`; a quote in a value cannot end the user's quoting either."""
    (repo / "src").mkdir()
    for name in ("$(touch PWNED).py", "it's.py"):
        (repo / "src" / name).write_text("")
    write(repo, 'agent echo: command\n'
          '    command = "printf \'%s|%s|%s\\\\n\' {file} \\"{file}\\" \'{file}\' >> agent.txt"\n'
          'check/{file}:\n    foreach file in glob("src/*.py")\n'
          '    run = "printf \'%s|%s\\\\n\' \\"{file}\\" \'{file}\' >> run.txt"\n'
          '    verify = "test -f \\"{file}\\" && test -f \'{file}\'"\n'
          'ask/{file}:\n    foreach file in glob("src/*.py")\n    agent = echo\n'
          '    isolation = none\n    prompt = "p"\n')
    result = agentfile_cli("build", "-j1", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert not (repo / "PWNED").exists()
    assert sorted((repo / "run.txt").read_text().splitlines()) == [
        "src/$(touch PWNED).py|src/$(touch PWNED).py", "src/it's.py|src/it's.py"]
    assert sorted((repo / "agent.txt").read_text().splitlines()) == [
        "src/$(touch PWNED).py|src/$(touch PWNED).py|src/$(touch PWNED).py",
        "src/it's.py|src/it's.py|src/it's.py"]


def test_a_failing_command_agent_s_output_reaches_its_retry(repo: Path,
                                                             agentfile_cli: Run) -> None:
    (repo / "agent.sh").write_text('#!/bin/sh\ncat "$1" >> prompts-seen.txt\n'
                                   'echo noise; echo ERROR-MARKER >&2; exit 1\n')
    (repo / "agent.sh").chmod(0o755)
    write(repo, 'agent bot: command\n    command = "./agent.sh {prompt_file}"\n'
          'g:\n    agent = bot\n    isolation = none\n    prompt = "go"\n    retries = 1\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    second = (repo / "prompts-seen.txt").read_text().split("The previous attempt failed")[1]
    assert "exited with 1" in second and "ERROR-MARKER" in second
    assert "exited with 1: ERROR-MARKER" in result.out


def test_a_stem_s_results_are_its_instances_only(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'agent say: command\n    command = "cat {prompt_file} > $AGENTFILE_RESULT_FILE"\n'
          'mig/{x}:\n    foreach x in ["a", "b"]\n    agent = say\n    isolation = none\n'
          '    prompt = "R-{x}"\n'
          'migrate:\n    agent = say\n    isolation = none\n    prompt = "R-migrate"\n'
          'use: mig migrate\n    run = "echo {deps.mig.result} > out.txt"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    out = (repo / "out.txt").read_text()
    assert "R-a" in out and "R-b" in out and "R-migrate" not in out


def test_a_locked_fan_out_goes_one_at_a_time_in_the_list_s_order(
        repo: Path, agentfile_cli: Run) -> None:
    """The ordered-migration example's pattern: `lines()` keeps the order, the lock makes it
    one at a time, and the first failure stops the rest."""
    (repo / "order.txt").write_text("c\na\nb\nz\n")
    write(repo, 'm/{x}:\n    foreach x in lines("order.txt")\n    locks = ["in-order"]\n'
          '    run = "echo {x} >> done.txt; sleep 0.1; test {x} != b"\n')
    assert agentfile_cli("build", "-j4", cwd=repo).code == 1
    assert (repo / "done.txt").read_text().split() == ["c", "a", "b"]
    assert statuses(repo)["m/z"] == "blocked"


def test_an_attempt_whose_verify_cannot_start_keeps_its_cost(repo: Path,
                                                             agentfile_cli: Run) -> None:
    (repo / "agent.sh").write_text(
        "#!/bin/sh\necho '{\"cost_usd\": 1.5}' > \"$AGENTFILE_USAGE_FILE\"\n")
    (repo / "agent.sh").chmod(0o755)
    write(repo, 'agent bot: command\n    command = "./agent.sh"\n'
          f'g:\n    agent = bot\n    isolation = none\n    prompt = "go"\n'
          f'    verify = "true {"x" * 140_000}"\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    finished = next(e for e in events(repo) if e["event"] == "target_finished")
    assert finished["cost_usd"] == 1.5
    assert "could not run it" in str(finished["detail"])
