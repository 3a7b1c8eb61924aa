"""A real Ray cluster on this machine, as separate machines would have one: a head (no CPUs:
nothing runs there) and worker nodes, each `ray start --block` in a process group of its own,
with its own working directory, node name and port set (two nodes on one host need distinct
ports). Started once per test session (tests/test_ray.py) or benchmark run, and stopped by
killing only those process groups' sessions: `ray stop` would stop every Ray on the machine.
A reaper process, in a session of its own, stops them too if the process that started the
cluster dies without stopping it (a SIGKILL, a crash), so no node outlives its tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PORTS_PER_NODE = 40
READY_SECONDS = 180.0


@dataclass
class Node:
    name: str
    directory: Path
    process: subprocess.Popen[bytes]
    ports: range
    head: bool
    resources: dict[str, float]  # custom Ray resources it offers

    @property
    def session(self) -> int:
        return self.process.pid  # started with start_new_session: its own session id


@dataclass
class LocalCluster:
    root: Path  # the nodes' working directories are under it
    workers: int = 2
    cpus: int = 2  # per worker node: how many targets each runs at once
    # Custom Ray resources of worker nodes, by name (e.g. {"node2": {"gpu_box": 1}}).
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)
    port: int = 0  # the head's
    reaper: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """What the driver (agentfile build) needs to reach it."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_ADDRESS": self.address}

    def start(self) -> LocalCluster:
        base = _free_block(PORTS_PER_NODE * (self.workers + 1))
        self.port = base
        self.temp = Path(f"/tmp/afray-{os.getpid()}-{base}")  # short: Ray's socket paths
        self.reaper = subprocess.Popen([sys.executable, __file__, str(self.temp)],
                                       stdin=subprocess.PIPE, start_new_session=True)
        self._node("head", range(base, base + PORTS_PER_NODE), head=True)
        for number in range(1, self.workers + 1):
            start = base + number * PORTS_PER_NODE
            self._node(f"node{number}", range(start, start + PORTS_PER_NODE), head=False)
        return self

    def _node(self, name: str, ports: range, *, head: bool) -> None:
        node = self._launch(name, ports, head=head)
        self.nodes.append(node)
        # One after the other: nodes starting together on one host race for the same files.
        self._wait_ready(node)

    def restart(self, node: Node) -> Node:
        """Start a node killed before again, as a machine back from a power loss: its name,
        directory and ports; Ray sees a new node."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=10)
        again = self._launch(node.name, node.ports, head=node.head)
        self.nodes[self.nodes.index(node)] = again
        self._wait_ready(again)
        return again

    def _launch(self, name: str, ports: range, *, head: bool) -> Node:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        resources = self.resources.get(name, {})
        p = iter(range(ports.start + 1, ports.start + 20))  # ports.start: the head's own
        argv = [str(Path(sys.executable).with_name("ray")), "start", "--block",
                "--disable-usage-stats", "--object-store-memory", str(80 * 2 ** 20),
                "--node-manager-port", str(next(p)), "--object-manager-port", str(next(p)),
                "--metrics-export-port", str(next(p)),
                "--dashboard-agent-listen-port", str(next(p)),
                "--dashboard-agent-grpc-port", str(next(p)),
                "--runtime-env-agent-port", str(next(p))]
        if head:
            argv += ["--head", "--port", str(ports.start), "--num-cpus", "0",
                     "--include-dashboard", "false", "--temp-dir", str(self.temp),
                     "--ray-client-server-port", str(next(p))]
        else:
            argv += ["--address", self.address, "--num-cpus", str(self.cpus)]
        if resources:
            argv += ["--resources", json.dumps(resources)]
        argv += ["--min-worker-port", str(ports.start + 20),
                 "--max-worker-port", str(ports.stop - 1)]
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
               "AGENTFILE_NODE_DIR": str(directory), "AGENTFILE_NODE_NAME": name}
        env.pop("RAY_ADDRESS", None)
        log = open(directory / "ray.log", "wb")  # noqa: SIM115 (the node keeps it)
        process = subprocess.Popen(argv, cwd=directory, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the node's own copy stays open
        self._reap(process.pid)
        return Node(name, directory, process, ports, head, resources)

    def _reap(self, session: int) -> None:
        """Tell the reaper of a session to stop should this process die first."""
        assert self.reaper is not None and self.reaper.stdin is not None
        self.reaper.stdin.write(f"{session}\n".encode())
        self.reaper.stdin.flush()

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + READY_SECONDS
        log = node.directory / "ray.log"
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray node {node.name} exited: {log.read_text()[-2000:]}")
            if "block forever" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"ray node {node.name} did not start: {log.read_text()[-2000:]}")

    def worker(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def kill(self, node: Node) -> None:
        """The node dies at once, as a machine that loses power (its raylet, its workers)."""
        _kill_session(node.session)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.session, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for node in reversed(self.nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            _kill_session(node.session)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=5)
        shutil.rmtree(self.temp, ignore_errors=True)  # the head's session files and logs
        if self.reaper is not None and self.reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self.reaper.stdin.write(b"stopped\n")  # its work is done: it only ends
                self.reaper.stdin.close()
            self.reaper.wait(timeout=30)

    def processes(self) -> list[psutil.Process]:
        """Every process still running in one of the nodes' sessions."""
        sessions = {n.session for n in self.nodes}
        found = []
        for proc in psutil.process_iter():
            # A process may end between the listing and getsid: os's error, not psutil's.
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found


def _kill_session(session: int) -> None:
    """KILL every process of a session (a node's raylet, GCS, workers: some have groups of
    their own), and the group itself."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(proc.pid) == session:
                proc.kill()


def _reaper(temp: Path) -> int:
    """The reaper's body: the sessions of the nodes, one a line on stdin, until it closes;
    unless told `stopped` first, it kills them (the cluster's starter died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the tests is for them
    sessions = []
    for line in sys.stdin:
        if line.strip() == "stopped":
            return 0
        sessions.append(int(line))
    for session in sessions:
        _kill_session(session)
    shutil.rmtree(temp, ignore_errors=True)
    return 0


def _free_block(size: int) -> int:
    """The first port of `size` consecutive ports nobody listens on now."""
    for _ in range(200):
        start = secrets.randbelow(20000) + 30000
        if all(_free(port) for port in range(start, start + size)):
            return start
    raise RuntimeError("no free block of ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    raise SystemExit(_reaper(Path(sys.argv[1])))
