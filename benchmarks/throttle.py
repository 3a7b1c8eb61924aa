"""Throttling measured: the monitor's own CPU, the time to stop a tree over its memory budget,
and eight memory-hungry targets with a throttle against the same with only -j.

    python benchmarks/throttle.py [--mib 300] [--targets 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from agentfile.run.runner import Progress
from agentfile.run.throttle import Limits, Monitor

ALLOCATE = "{python} -c \\\"import time; x = b'1' * ({mib} * 2**20); time.sleep({secs})\\\""


def monitor_cpu(trees: int, seconds: float) -> tuple[float, int]:
    """(a) The monitor sampling `trees` running process trees: its CPU as % of one core."""
    procs = [subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"]) for _ in range(trees)]
    monitor = Monitor(Limits(memory_percent=95))
    try:
        for index, proc in enumerate(procs):
            progress = Progress()
            progress.pid = proc.pid
            monitor.track(f"t{index}", progress, 0)
        monitor.start()
        time.sleep(seconds)
        monitor.close()
    finally:
        for proc in procs:
            for member in psutil.Process(proc.pid).children(recursive=True):
                member.kill()
            proc.kill()
            proc.wait()
    return monitor.busy_s / seconds * 100, monitor.samples


def write_manifest(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Agentfile").write_text(text)


def build(folder: Path, *args: str) -> tuple[int, float, int]:
    """Run a build; (exit code, wall seconds, peak system memory in use in bytes)."""
    peak = psutil.virtual_memory().used
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, psutil.virtual_memory().used)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agentfile", "build", *args], cwd=folder,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    return done.returncode, wall, peak


def oom_latency(root: Path, mib: int) -> float:
    """(b) From the moment a tree's RSS crosses its budget to its death, as agentfile saw it:
    the target's log gets a line when it has allocated; the event says when it ended."""
    folder = root / "oom"
    script = (f"{sys.executable} -c \\\"import time, sys; x = b'1' * ({mib} * 2**20); "
              "print('allocated', time.time(), flush=True); time.sleep(30)\\\"")
    write_manifest(folder, f'hog:\n    budget = {mib // 2}MiB\n    run = "{script}"\n')
    build(folder)
    run = next((folder / ".agentfile" / "runs").iterdir())
    log = (run / "logs" / "hog.log").read_text()
    allocated = float(next(ln for ln in log.splitlines() if ln.startswith("allocated")).split()[1])
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    finished = next(e for e in events if e["event"] == "target_finished")
    assert finished["status"] == "oom", finished
    return float(finished["time"]) - allocated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=300, help="memory each target allocates")
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10, help="monitor CPU sample span")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, load "
          f"{os.getloadavg()[0]:.2f}")

    share, samples = monitor_cpu(args.targets, args.seconds)
    print(f"(a) monitor CPU with {args.targets} running trees: {share:.2f}% of one core "
          f"({samples} samples in {args.seconds:g}s); goal under 2%: "
          f"{'met' if share < 2 else 'NOT met'}")

    with tempfile.TemporaryDirectory(prefix="agentfile-throttle-") as tmp:
        root = Path(tmp)
        latencies = [oom_latency(root / f"r{i}", 200) for i in range(3)]
        median = sorted(latencies)[1]
        print(f"(b) memory budget crossed -> tree dead: {', '.join(f'{x:.2f}s' for x in latencies)}"
              f" (median {median:.2f}s); goal under 0.5 s: {'met' if median < 0.5 else 'NOT met'}")

        allocate = ALLOCATE.format(python=sys.executable, mib=args.mib, secs=2)
        targets = "".join(f"t{i}:\n    budget = {args.mib + 100}MiB\n    run = \"{allocate}\"\n"
                          for i in range(args.targets))
        free = psutil.virtual_memory().available
        # A throttle that lets about three of these fit at once on this machine, whatever
        # else it runs: free = what is available now minus three reservations.
        keep_free = max(free - 3 * (args.mib + 100) * 2**20, 256 * 2**20)
        throttled = f"options:\n    throttle = free {keep_free // 2**20}MiB\n" + targets
        rows = []
        for name, text in (("-j8 only", targets), ("-j8 + throttle", throttled)):
            write_manifest(root / name.replace(" ", "_"), text)
            code, wall, peak = build(root / name.replace(" ", "_"), f"-j{args.targets}")
            rows.append((name, code, wall, peak))
        base = psutil.virtual_memory().used
        print(f"(c) {args.targets} targets allocating {args.mib} MiB for 2 s each "
              f"(memory in use before: {base / 2**30:.2f} GiB):")
        print(f"    {'run':<16} {'exit':>4} {'makespan':>9} {'peak memory in use':>19}")
        for name, code, wall, peak in rows:
            print(f"    {name:<16} {code:>4} {wall:>8.2f}s {peak / 2**30:>17.2f} GiB")


if __name__ == "__main__":
    main()
