"""`agentfile build --executor ray` on a real Ray cluster: a head and two worker nodes on this
machine, each with its own working directory, started once for these tests (raycluster.py).

The agents are command agents (a script committed in the repository): they write where they
ran, their usage and their work, so that what happened on the nodes can be checked here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Run, git
from raycluster import LocalCluster

pytest.importorskip("ray")

AGENT = """\
#!/bin/sh
# A command agent: says where it runs, does its work, reports its usage; some wait.
echo "$AGENTFILE_TARGET runs in $PWD on $AGENTFILE_NODE_NAME"
echo "$AGENTFILE_TARGET $PWD $AGENTFILE_NODE_NAME" >> "$WHERE"
case "$AGENTFILE_TARGET" in idle*) exit 0;; esac  # changes nothing
ls > "seen-by-$AGENTFILE_TARGET.txt"  # the work merged before it started
echo '{"cost_usd": 0.5, "input_tokens": 10, "output_tokens": 5}' > "$AGENTFILE_USAGE_FILE"
case "$AGENTFILE_TARGET" in
  wait*)
    # A grandchild in a session of its own (it left the target's process group), then
    # the agent itself: both must be gone when the target stops.
    setsid sleep 300 &
    echo "waiting $MARK"
    if [ -n "$ONCE" ] && [ ! -e "$ONCE" ]; then touch "$ONCE"; sleep 300; fi
    [ -z "$ONCE" ] && sleep 300
    ;;
esac
exit 0
"""


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # node2 offers a custom resource, as a machine with an agent's credentials would.
    started = LocalCluster(tmp_path_factory.mktemp("ray-cluster"),
                           resources={"node2": {"gpu_box": 1}})
    try:
        yield started.start()
    finally:
        started.stop()
        left = started.processes()
        assert not left, f"Ray processes left after the tests: {left}"


def setup(repo: Path, targets: str, *, mark: str = "none", once: str = "") -> Path:
    where = repo.parent / "where.txt"
    (repo / "agent.sh").write_text(AGENT)
    (repo / "agent.sh").chmod(0o755)
    (repo / "Agentfile").write_text(
        "options:\n    executor = ray\n"
        "agent a: command\n    command = \"./agent.sh\"\n"
        f"    env = {{WHERE = \"{where}\", MARK = \"{mark}\", ONCE = \"{once}\"}}\n"
        + targets)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "agentfile")
    return where


def events_of(repo: Path) -> list[dict[str, object]]:
    run = sorted((repo / ".agentfile" / "runs").iterdir())[-1]
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def finished_work(repo: Path) -> list[str]:
    """The targets whose finished work the build has recorded (recovery's table)."""
    try:
        db = sqlite3.connect((repo / ".agentfile" / "state.sqlite").as_uri() + "?mode=ro",
                             uri=True)
        try:
            return [row[0] for row in db.execute("SELECT target FROM finished_work")]
        finally:
            db.close()
    except sqlite3.OperationalError:  # no database yet, or not its tables
        return []


def marked(mark: str) -> list[psutil.Process]:
    """The processes of the agents given `mark` (they and their children have MARK set)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sleeps(mark: str) -> list[psutil.Process]:
    """The waiting agents' sleeps of `mark`: each agent's own and its grandchild's, which
    left for a session of its own."""
    found = []
    for proc in marked(mark):
        with contextlib.suppress(psutil.Error):
            if proc.name() == "sleep":
                found.append(proc)
    return found


def until(check: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s")


def worktrees_left(cluster: LocalCluster) -> list[Path]:
    return [p for n in cluster.nodes for p in (n.directory / "work").glob("*/*")]


def start_build(repo: Path, cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agentfile", "build", *args], cwd=repo,
                            env={**os.environ, **cluster.environment, "NO_COLOR": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_work_lands_in_dependency_order_from_the_nodes(repo: Path, agentfile_cli: Run,
                                                       cluster: LocalCluster) -> None:
    where = setup(repo, "first:\n    agent = a\n    prompt = \"one\"\n"
                        "second:\n    agent = a\n    prompt = \"two\"\n    deps = [first]\n"
                        "other:\n    agent = a\n    prompt = \"three\"\n"
                        "check:\n    run = \"pwd > ran-here.txt\"\n"
                        "    isolation = none\n    deps = [second, other]\n")
    result = agentfile_cli("build", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 0, result.out + result.err
    assert "seen-by-first.txt" in (repo / "seen-by-second.txt").read_text().split()
    assert "seen-by-second.txt" not in (repo / "seen-by-first.txt").read_text().split()
    assert git(repo, "log", "--format=%s").count("agentfile: ") >= 3
    # Each agent ran in a worktree of a worker node's own directory, never here.
    ran = {line.split()[0]: line.split()[1:] for line in where.read_text().splitlines()}
    assert set(ran) == {"first", "second", "other"}
    for name, (path, node) in ran.items():
        assert node in ("node1", "node2"), (name, node)
        assert path.startswith(str(cluster.worker(node).directory / "work")), path
        assert not path.startswith(str(repo))
    assert (repo / "ran-here.txt").read_text().strip() == str(repo)  # `check` ran here
    events = events_of(repo)
    finished = {e["target"]: e for e in events if e["event"] == "target_finished"}
    assert finished["first"]["node"] == ran["first"][1]
    assert "node" not in finished["check"]
    assert "runs in" in (repo / ".agentfile" / "runs").joinpath(
        str(events[0]["run"]), "logs", "first.log").read_text()
    # Where each ran, in the records.
    assert ran["second"][1] in agentfile_cli("report", cwd=repo).out
    runs = json.loads(agentfile_cli("runs", "--json", cwd=repo).out)
    assert set(runs[0]["nodes"]) == {node for _, node in ran.values()}
    plan = agentfile_cli("plan", cwd=repo).out
    assert "on the Ray cluster: first, second, other" in plan and "here: check" in plan
    assert not worktrees_left(cluster)


def test_a_sandboxed_target_runs_under_bwrap_on_its_node(repo: Path, agentfile_cli: Run,
                                                         cluster: LocalCluster) -> None:
    from agentfile.isolation.sandbox import why_not

    if why_not() is not None:
        pytest.skip(f"no sandbox here: {why_not()}")
    where = setup(repo, "fenced:\n    agent = a\n    prompt = \"one\"\n    sandbox = true\n")
    result = agentfile_cli("build", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 0, result.out + result.err
    assert (repo / "seen-by-fenced.txt").exists()  # its work, from the node's worktree
    assert not where.exists()  # outside its worktree: refused on the node
    assert f"cannot create {where}" in (repo / ".agentfile" / "runs").joinpath(
        str(events_of(repo)[0]["run"]), "logs", "fenced.log").read_text()


def test_setup_runs_in_the_node_s_worktree_before_its_target(repo: Path, agentfile_cli: Run,
                                                              cluster: LocalCluster) -> None:
    (repo / ".gitignore").write_text("deps/\n")
    setup(repo, "ready:\n    agent = a\n    prompt = \"one\"\n"
                "    setup = \"mkdir -p deps && echo x > deps/ready"
                " && echo set up on $AGENTFILE_NODE_NAME\"\n"
                "broken:\n    agent = a\n    prompt = \"two\"\n    setup = \"echo no; exit 4\"\n")
    result = agentfile_cli("build", "-k", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 1, result.out + result.err
    assert "deps" in (repo / "seen-by-ready.txt").read_text().split()  # made before it ran
    assert "deps/ready" not in git(repo, "ls-files")  # ignored: never committed
    logs = (repo / ".agentfile" / "runs").joinpath(str(events_of(repo)[0]["run"]), "logs")
    assert "set up on node" in (logs / "ready.log").read_text()
    said = "setup `echo no; exit 4` exited with 4; its output: the target's log"
    assert said in result.out, result.out
    assert not (repo / "seen-by-broken.txt").exists()  # it never ran
    assert not worktrees_left(cluster)


def test_targets_that_change_nothing_succeed(repo: Path, agentfile_cli: Run,
                                             cluster: LocalCluster) -> None:
    """Several at once, as in a build again of work already landed: no commits to fetch,
    nothing to merge (their branches were never made here)."""
    where = setup(repo, "".join(f"idle{n}:\n    agent = a\n    prompt = \"nothing\"\n"
                                for n in range(4)))
    head = git(repo, "rev-parse", "HEAD")
    result = agentfile_cli("build", "-j4", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 0, result.out + result.err
    assert len(where.read_text().splitlines()) == 4
    assert git(repo, "rev-parse", "HEAD") == head
    assert not git(repo, "branch", "--list", "agentfile/targets/*")
    assert not worktrees_left(cluster)


def test_extra_resources_send_targets_to_the_nodes_that_offer_them(
        repo: Path, agentfile_cli: Run, cluster: LocalCluster) -> None:
    where = setup(repo, "agent boxed: command\n    command = \"./agent.sh\"\n"
                        f"    env = {{WHERE = \"{repo.parent / 'where.txt'}\"}}\n"
                        "    resources = {gpu_box = 0.5}\n"
                        + "".join(f"own{n}:\n    agent = a\n    prompt = \"x\"\n"
                                  "    resources = {gpu_box = 0.25}\n" for n in range(3))
                        + "".join(f"agents{n}:\n    agent = boxed\n    prompt = \"x\"\n"
                                  for n in range(2)))
    result = agentfile_cli("build", "-j4", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 0, result.out + result.err
    ran = {line.split()[0]: line.split()[2] for line in where.read_text().splitlines()}
    assert ran == {"own0": "node2", "own1": "node2", "own2": "node2",
                   "agents0": "node2", "agents1": "node2"}
    # A resource no node offers: the target fails at once, saying so (Ray would wait).
    (repo / "Agentfile").write_text((repo / "Agentfile").read_text()
                                    + "nowhere:\n    agent = a\n    prompt = \"x\"\n"
                                      "    resources = {tpu_pod = 1}\n")
    result = agentfile_cli("build", "nowhere", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 1, result.out + result.err
    assert "no node of the Ray cluster offers tpu_pod = 1" in result.out
    assert "nowhere" not in where.read_text()


def test_a_remote_target_finished_before_a_sigkill_is_merged_not_run_again(
        repo: Path, agentfile_cli: Run, cluster: LocalCluster) -> None:
    """Recovery, as for local targets: its work was recorded when it came back here."""
    mark = f"afmark-{os.getpid()}-sigkill"
    once = repo.parent / "once"
    where = setup(repo, "first:\n    agent = a\n    prompt = \"quick\"\n"
                        "wait:\n    agent = a\n    prompt = \"slow\"\n",
                  mark=mark, once=str(once))
    build = start_build(repo, cluster, "-j2")
    try:
        until(lambda: finished_work(repo) == ["first"] and once.exists()
              and len(sleeps(mark)) == 2)
    finally:
        build.send_signal(signal.SIGKILL)
        build.communicate()
    assert not (repo / "seen-by-first.txt").exists()  # nothing landed: the build died
    # Ray ends the dead build's task; the node's supervisor stops its agent.
    until(lambda: not marked(mark), timeout=60)
    result = agentfile_cli("build", "-j2", cwd=repo, env=cluster.environment, timeout=240)
    assert result.code == 0, result.out + result.err
    assert "recovered  first" in result.out
    ran = [line.split()[0] for line in where.read_text().splitlines()]
    assert sorted(ran) == ["first", "wait", "wait"]  # first ran once
    assert (repo / "seen-by-first.txt").exists() and (repo / "seen-by-wait.txt").exists()
    assert not worktrees_left(cluster)


def test_logs_stream_and_ctrl_c_leaves_nothing_on_any_node(repo: Path, agentfile_cli: Run,
                                                           cluster: LocalCluster) -> None:
    mark = f"afmark-{os.getpid()}-ctrlc"
    setup(repo, "wait1:\n    agent = a\n    prompt = \"wait\"\n"
                "wait2:\n    agent = a\n    prompt = \"wait\"\n", mark=mark)
    build = start_build(repo, cluster)
    try:
        logs = repo / ".agentfile" / "runs"
        # Lines printed on a node reach the logs here while the agents still run.
        until(lambda: all(any(f"waiting {mark}" in p.read_text() for p in
                              logs.glob(f"*/logs/{name}.log")) for name in ("wait1", "wait2")))
        # Each agent's sleep, and its grandchild's in a session of its own.
        assert len(sleeps(mark)) == 4
        status = agentfile_cli("status", "--json", cwd=repo).out
        assert {r["node"] for r in json.loads(status)["running"]} <= {"node1", "node2"}
        build.send_signal(signal.SIGINT)
        out, _ = build.communicate(timeout=120)
    finally:
        build.kill()
    assert build.returncode == 130, out
    until(lambda: not marked(mark), timeout=30)
    until(lambda: not worktrees_left(cluster), timeout=30)
    statuses = {e["target"]: e["status"] for e in events_of(repo)
                if e["event"] == "target_finished"}
    assert statuses == {"wait1": "interrupted", "wait2": "interrupted"}


def test_a_build_budget_stops_a_remote_agent(repo: Path, agentfile_cli: Run,
                                             cluster: LocalCluster) -> None:
    mark = f"afmark-{os.getpid()}-budget"
    setup(repo, "wait:\n    agent = a\n    prompt = \"spend\"\n", mark=mark)
    # It reports $0.50 at once, then would wait 300 s: the build's $0.25 stops it.
    result = agentfile_cli("build", "--budget", "$0.25", cwd=repo, env=cluster.environment,
                           timeout=240)
    assert result.code == 3, result.out + result.err
    events = events_of(repo)
    assert any(e["event"] == "budget_warning" for e in events)
    finished = next(e for e in events if e["event"] == "target_finished")
    assert finished["status"] == "over-budget" and finished["cost_usd"] == 0.5
    until(lambda: not marked(mark), timeout=30)
    assert not worktrees_left(cluster)


def test_a_task_error_caused_by_a_dying_node_counts_as_lost() -> None:
    """A task on a node that is dying can fail with its own error (a call to its raylet
    failed) before the cluster declares the node dead: the cause says it was the node."""
    from ray import exceptions as errors

    from agentfile.run.executors.ray import _caused_by_loss

    def task_error(cause: BaseException) -> errors.RayTaskError:
        return errors.RayTaskError(  # type: ignore[no-untyped-call]
            "_run_target", "traceback", cause, proctitle="worker", pid=1, ip="127.0.0.1")

    assert _caused_by_loss(task_error(
        errors.RpcError("the raylet is gone")))  # type: ignore[no-untyped-call]
    assert _caused_by_loss(task_error(errors.LocalRayletDiedError()))
    assert _caused_by_loss(task_error(errors.ActorDiedError()))
    wrapped = OSError("a call failed")
    wrapped.__cause__ = errors.WorkerCrashedError()
    assert _caused_by_loss(task_error(wrapped))
    dual = task_error(wrapped).as_instanceof_cause()  # type: ignore[no-untyped-call]
    assert _caused_by_loss(dual)  # the error as Ray raises it: a subclass of its cause too
    assert not _caused_by_loss(task_error(ValueError("a bug of agentfile's own")))
    assert not _caused_by_loss(OSError("no space left on device"))


def test_no_cluster_exits_2_with_how_to_start_one(repo: Path, agentfile_cli: Run) -> None:
    setup(repo, "x:\n    agent = a\n    prompt = \"x\"\n")
    result = agentfile_cli("build", "--ray-address", "127.0.0.1:9", cwd=repo)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "ray start --head" in lines[0], result.err
    assert not list(repo.glob("seen-by-*"))


def test_a_node_killed_mid_target_is_survived(repo: Path, agentfile_cli: Run,
                                             cluster: LocalCluster) -> None:
    """The node dies as a machine losing power; it comes back afterwards, for the next."""
    mark = f"afmark-{os.getpid()}-lost-{time.monotonic_ns()}"
    once = repo.parent / "once"
    setup(repo, "wait:\n    agent = a\n    prompt = \"lose me\"\n", mark=mark, once=str(once))
    build = start_build(repo, cluster)
    killed = None
    try:
        until(lambda: once.exists() and len(sleeps(mark)) == 2)
        node = next(str(e["node"]) for e in events_of(repo) if e["event"] == "target_placed")
        killed = cluster.worker(node)
        cluster.kill(killed)
        out, _ = build.communicate(timeout=180)
    finally:
        build.kill()
        if killed is not None:
            cluster.restart(killed)
    assert build.returncode == 0, out
    events = events_of(repo)
    lost = [e for e in events if e["event"] == "node_lost"]
    assert lost and lost[0]["node"] == node, events
    finished = next(e for e in events if e["event"] == "target_finished")
    assert finished["status"] == "succeeded" and finished["attempt"] == 1
    assert finished["node"] != node
    until(lambda: not marked(mark), timeout=30)  # the lost node's agent too
