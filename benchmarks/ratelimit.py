"""N real Claude Code agents at -jN against an API that rate-limits: agentfile's pacing against
the CLIs retrying on their own, and against the ideal.

The API is the stand-in (tests/standin/anthropic.py) behind a token bucket that admits
`--burst` requests at once and then one every `--interval` seconds, answering 429 with a
`retry-after` otherwise, and saying on every answer what the real API says of its limits
(`anthropic-ratelimit-requests-limit`/`-remaining`; `--no-rate-headers`: only retry-after).
Each agent makes three model calls (Write, Write, a final message).

- **CLIs alone**: the N CLIs started at once, each retrying on its own (what a build did
  before agentfile paced providers: it started them and waited);
- **no relay**: `agentfile build -jN` of N agent targets (worktrees, merged) with `relay =
  false`: agentfile paces whole targets from what the CLIs print;
- **agentfile**: the same build as it runs by default, each request held by agentfile's relay
  until the API has room;
- **ideal**: the bucket's own pace, (admitted - burst) x interval.

Prints rejected and admitted requests, wall time and failed targets for each, and the goals
(at most a third of the CLIs' rejections, wall within 1.3x of the ideal, no failed target).

    python benchmarks/ratelimit.py                   # 8 agents, burst 3, one every 2 s
    python benchmarks/ratelimit.py --agents 4 --interval 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from standin.anthropic import (  # noqa: E402  (tests/standin, stdlib only)
    AnthropicStandin,
    Reply,
    http_error,
    text,
    tool_use,
)
from standin.bucket import TokenBucket  # noqa: E402

from benchmarks.peers import agentfile_command, tool_env  # noqa: E402

MODEL = "claude-sonnet-4-5"


@dataclass
class Figures:
    label: str
    wall_s: float
    admitted: int
    rejected: int
    failed: int


def claude_binary() -> str:
    found = subprocess.run(["bash", str(ROOT / "tests" / "standin" / "install_claude.sh")],
                           capture_output=True, text=True, check=True)
    return found.stdout.strip().splitlines()[-1]


def agent_turns(bucket: TokenBucket,
                rate_headers: bool = True) -> Callable[[dict[str, Any]], Reply]:
    """The API: the bucket first; an admitted call gets the next step of its conversation
    (two Writes, then a final message), read from the tool results it carries."""

    def reply(body: dict[str, Any]) -> Reply:
        wait = bucket.take()
        said = bucket.headers() if rate_headers else {}
        if wait:
            return http_error(429, "rate_limit_error", "stand-in: rate limited", retry=None,
                              headers={"retry-after": TokenBucket.retry_after(wait), **said})
        done = sum(1 for m in body.get("messages") or [] if isinstance(m.get("content"), list)
                   for b in m["content"] if b.get("type") == "tool_result")
        if done >= 2:
            return {**text("Wrote both files."), "headers": said}
        folder = re.search(r"[Ww]orking directory: ([^\\\"\n]+)", json.dumps(body))
        where = folder.group(1) if folder else "."
        name = re.search(r"called (\w+)", json.dumps(body.get("messages")))
        stem = name.group(1) if name else "out"
        return {**tool_use("Write", {"file_path": f"{where}/{stem}-{done + 1}.txt",
                                     "content": f"{stem} {done + 1}\n"}), "headers": said}

    return reply


def environment(server: AnthropicStandin, claude: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in tool_env().items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
    env.update(server.claude_env(), HOME=str(home), AGENTFILE_CLAUDE=claude)
    return env


def clis_alone(claude: str, agents: int, work: Path, bucket: TokenBucket,
               rate_headers: bool) -> Figures:
    with AnthropicStandin(handler=agent_turns(bucket, rate_headers)) as server:
        env = environment(server, claude, work / "home-alone")

        def one(index: int) -> int:
            folder = work / f"alone-{index}"
            folder.mkdir(parents=True)
            return subprocess.run(
                [claude, "-p", f"Write two files called t{index}.", "--output-format",
                 "stream-json", "--verbose", "--model", MODEL,
                 "--permission-mode", "bypassPermissions"],
                cwd=folder, env=env, stdin=subprocess.DEVNULL, capture_output=True).returncode

        started = time.perf_counter()
        with ThreadPoolExecutor(agents) as pool:
            codes = list(pool.map(one, range(agents)))
        wall = time.perf_counter() - started
    return Figures("CLIs alone", wall, bucket.admitted, bucket.rejected,
                   sum(1 for c in codes if c != 0))


def with_agentfile(claude: str, agents: int, work: Path, bucket: TokenBucket,
                   rate_headers: bool, relay: bool) -> Figures:
    repo = work / ("repo" if relay else "repo-unrelayed")
    repo.mkdir()
    lines = [f'agent sonnet: claude\n    model = "{MODEL}"\n'
             + ("" if relay else "    relay = false\n")]
    lines += [f't{i}:\n    agent = sonnet\n    prompt = "Write two files called t{i}."\n'
              for i in range(agents)]
    (repo / "Agentfile").write_text("\n".join(lines))
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c",
                                                    "user.email=b@b", "commit", "-qm", "m"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    with AnthropicStandin(handler=agent_turns(bucket, rate_headers)) as server:
        env = environment(server, claude, work / f"home-{repo.name}")
        env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                   GIT_COMMITTER_EMAIL="b@b")
        started = time.perf_counter()
        subprocess.run([*agentfile_command(), "build", f"-j{agents}", "-k", "--json"],
                       cwd=repo, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        wall = time.perf_counter() - started
    runs = sorted((repo / ".agentfile" / "runs").iterdir())
    summary = json.loads((runs[-1] / "summary.json").read_text())
    failed = sum(n for status, n in summary["counts"].items() if status != "succeeded")
    return Figures("agentfile" if relay else "no relay", wall, bucket.admitted,
                   bucket.rejected, failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--burst", type=int, default=3)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--only", choices=("alone", "no-relay", "agentfile"))
    parser.add_argument("--no-rate-headers", dest="rate_headers", action="store_false",
                        help="the API sends no anthropic-ratelimit-* headers, only retry-after")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    claude = claude_binary()
    work = Path(tempfile.mkdtemp(prefix="agentfile-bench-ratelimit-"))
    try:
        results = []
        if args.only in (None, "alone"):
            results.append(clis_alone(claude, args.agents, work,
                                      TokenBucket(args.burst, args.interval), args.rate_headers))
        for relay, name in ((False, "no-relay"), (True, "agentfile")):
            if args.only in (None, name):
                results.append(with_agentfile(claude, args.agents, work,
                                              TokenBucket(args.burst, args.interval),
                                              args.rate_headers, relay))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    admitted = max(r.admitted for r in results)
    ideal = max(admitted - args.burst, 0) * args.interval
    print(f"{args.agents} agents at -j{args.agents}, 3 model calls each; the API admits "
          f"{args.burst}, then one every {args.interval:g} s")
    print(f"{'':12} {'rejected':>9} {'admitted':>9} {'wall':>8} {'vs ideal':>9} {'failed':>7}")
    for r in results:
        print(f"{r.label:12} {r.rejected:>9} {r.admitted:>9} {r.wall_s:>7.1f}s "
              f"{r.wall_s / ideal if ideal else 0:>8.2f}x {r.failed:>7}")
    print(f"{'ideal':12} {0:>9} {admitted:>9} {ideal:>7.1f}s {1:>8.2f}x")
    if len(results) == 3:
        alone, _, ours = results
        print(f"rejections: {ours.rejected / alone.rejected if alone.rejected else 0:.2f} of "
              f"the CLIs' alone (goal at most 0.33); wall {ours.wall_s / ideal:.2f}x the ideal "
              f"(goal at most 1.3); failed targets {ours.failed} (goal 0)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
