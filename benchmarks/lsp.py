"""How fast `agentfile lsp` answers on a large manifest, as an editor would see it.

    python benchmarks/lsp.py [--size 2000] [--repeat 20]

Generates the `load.py` manifest of `--size` targets as an Agentfile in a temporary git
repository, starts `agentfile lsp` as a subprocess, and times over stdio (the test suite's
client: Content-Length framed JSON-RPC):

* open: didOpen until its diagnostics arrive (the whole load, run in the server's worker);
* hover, completion, definition, symbols: each request's round trip on the indexed document,
  median and worst of `--repeat`;
* after an edit: a one-line didChange, then the first hover (which indexes the new text),
  and the time until the new diagnostics arrive (a debounce of 0.15 s included).

The goal: every request answers within 100 ms once the document is loaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psutil  # noqa: E402
from test_lsp import Client  # noqa: E402

from agentfile.manifest.render import to_agentfile  # noqa: E402
from benchmarks.load import generate  # noqa: E402

GOAL_SECONDS = 0.100


def _timed(call: Callable[[], object], server: psutil.Process | None = None,
           cpu: list[float] | None = None) -> float:
    """The wall time of a call; with `server`, its CPU time is added to `cpu` (on a shared
    machine the server's CPU time is what the answer costs, the wall time what it waits)."""
    before = sum(server.cpu_times()[:2]) if server else 0.0
    start = time.perf_counter()
    call()
    elapsed = time.perf_counter() - start
    if server is not None and cpu is not None:
        cpu.append(sum(server.cpu_times()[:2]) - before)
    return elapsed


def _position(text: str, needle: str, offset: int) -> tuple[int, int]:
    for number, line in enumerate(text.split("\n")):
        if needle in line:
            return number, line.index(needle) + offset
    raise SystemExit(f"{needle!r} is not in the generated manifest")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=2000, help="targets (default 2000)")
    parser.add_argument("--repeat", type=int, default=20, help="requests of each kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentfile-lsp-bench-") as scratch:
        repo = Path(scratch)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        text = to_agentfile(generate(args.size))
        (repo / "Agentfile").write_text(text)
        client = Client(repo)
        client.request("initialize", {"processId": None, "rootUri": repo.as_uri(),
                                      "capabilities": {}})
        client.notify("initialized", {})
        uri = (repo / "Agentfile").as_uri()
        opened = _timed(lambda: (client.open(repo / "Agentfile"), client.diagnostics(uri)))
        # A target far down the file: a dependency, an attribute, a block to complete in.
        last = text.rsplit("\n\n", 2)[-2].split("\n")
        header = last[0]
        name = header.partition(": ")[0]
        requests = {
            "hover (dependency)": ("textDocument/hover", _position(text, header, len(name) + 2)),
            "hover (attribute)": ("textDocument/hover", _position(text, last[1], 5)),
            "completion (deps)": ("textDocument/completion",
                                  _position(text, header, len(name) + 2)),
            "completion (attr)": ("textDocument/completion", _position(text, last[1], 4)),
            "definition": ("textDocument/definition", _position(text, header, len(name) + 2)),
        }
        server = psutil.Process(client.proc.pid)
        rows: list[tuple[str, list[float], list[float]]] = []
        for label, (method, (line, column)) in requests.items():
            cpu: list[float] = []

            def ask(m: str = method, li: int = line, c: int = column) -> object:
                return client.at(m, uri, li, c)

            rows.append((label, [_timed(ask, server, cpu) for _ in range(args.repeat)], cpu))
        cpu = []

        def symbols() -> object:
            return client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})

        rows.append(("document symbols", [_timed(symbols, server, cpu)
                                          for _ in range(args.repeat)], cpu))
        line, column = _position(text, header, len(name) + 2)
        edited = text.replace(last[1], last[1] + "  # edited", 1)
        changed = time.perf_counter()
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                                 "contentChanges": [{"text": edited}]})
        first_hover = _timed(lambda: client.at("textDocument/hover", uri, line, column))
        client.diagnostics(uri)
        diagnosed = time.perf_counter() - changed
        client.close()
    print(f"agentfile lsp on {args.size} targets ({len(text.splitlines())} lines), "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'request':<22}{'median':>10}{'worst':>10}{'server CPU':>12}"
          f"   goal {GOAL_SECONDS * 1000:.0f} ms (median wall)")
    for label, times, cpu_times in rows:
        verdict = "met" if statistics.median(times) <= GOAL_SECONDS else "NOT met"
        print(f"{label:<22}{statistics.median(times) * 1000:>8.1f}ms"
              f"{max(times) * 1000:>8.1f}ms{statistics.median(cpu_times) * 1000:>10.1f}ms"
              f"   {verdict}")
    print(f"{'open -> diagnostics':<22}{opened * 1000:>8.1f}ms   (the first load)")
    print(f"{'edit -> first hover':<22}{first_hover * 1000:>8.1f}ms   (indexes the new text)")
    print(f"{'edit -> diagnostics':<22}{diagnosed * 1000:>8.1f}ms   (0.15 s debounce included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
