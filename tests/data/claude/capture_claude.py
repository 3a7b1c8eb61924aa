"""Regenerate the captured outputs of the real Claude Code CLI in this folder.

    python tests/data/claude/capture_claude.py

(it installs the CLI with tests/standin/install_claude.sh unless CLAUDE_BIN is set).

Each case runs the real `claude -p ... --output-format stream-json --verbose` against the
stand-in server (tests/standin/anthropic.py) in a fresh git repository with a fresh HOME, and
writes its stdout to <case>.jsonl.  cases.json records, per case, the command line, exit code,
wall time, stderr, the endpoints the CLI called and the fields of the final result event.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from standin.anthropic import (  # noqa: E402
    AnthropicStandin,
    PlanEntry,
    http_error,
    stream_error,
    text,
    tool_use,
)

SESSION = "5e55a0f1-0000-4000-8000-00000000c1a0"
FLAGS = ["--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-5",
         "--permission-mode", "bypassPermissions"]
RESULT_FIELDS = ("subtype", "is_error", "result", "session_id", "total_cost_usd", "usage",
                 "modelUsage", "model_usage_since_last_result", "num_turns", "stop_reason",
                 "terminal_reason", "api_error_status", "permission_denials")


def claude_bin() -> str:
    if os.environ.get("CLAUDE_BIN"):
        return os.environ["CLAUDE_BIN"]
    out = subprocess.run(["bash", str(ROOT / "tests/standin/install_claude.sh")], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def run_case(claude: str, work: Path, case: str, plan: list[PlanEntry], args: list[str],
             env_extra: dict[str, str] | None = None) -> dict[str, Any] | None:
    if ONLY and case not in ONLY:
        return None
    repo, home = work / "repo", work / "home"
    with AnthropicStandin(plan) as server:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLAUDE", "ANTHROPIC"))}
        used_env = {**server.claude_env(), **(env_extra or {})}
        env.update(used_env, HOME=str(home))
        start = time.monotonic()
        proc = subprocess.run([claude, *args], cwd=repo, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300)
        seconds = time.monotonic() - start
    (HERE / f"{case}.jsonl").write_text(proc.stdout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    record = {
        "argv": ["claude", *args],
        "env": {k: v for k, v in used_env.items() if k != "ANTHROPIC_BASE_URL"},
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "stderr": proc.stderr,
        "events": [e.get("type") + (f"/{e['subtype']}" if e.get("subtype") else "")
                   for e in events],
        "endpoints": [f"{r['method']} {r['path']}" for r in server.log],
        "request_models_and_tools": [
            {"model": r["body"].get("model"), "stream": r["body"].get("stream"),
             "tools": len(r["body"].get("tools") or []),
             "messages": len(r["body"].get("messages") or [])}
            for r in server.log if isinstance(r["body"], dict)],
        "result": {k: result.get(k) for k in RESULT_FIELDS} if result else None,
        "files": sorted(p.name for p in repo.iterdir() if p.name != ".git"),
    }
    print(f"{case}: exit {proc.returncode} in {seconds:.2f}s, {len(server.log)} requests",
          file=sys.stderr)
    return record


ONLY = set(sys.argv[1:])  # the cases to capture again (all when none is named)


def rate_limited(status: int, error_type: str) -> PlanEntry:
    """A refusal the CLI retries (no x-should-retry), asking to wait 1 s."""
    return http_error(status, error_type, f"stand-in: {error_type}", retry=None,
                      headers={"retry-after": "1"})


def main() -> None:
    claude = claude_bin()
    version = subprocess.run([claude, "--version"], capture_output=True, text=True).stdout
    work = Path(tempfile.mkdtemp(prefix="claude-capture-"))
    try:
        (work / "repo").mkdir()
        (work / "home").mkdir()
        subprocess.run("git init -q -b main && git -c user.email=t@example.com -c user.name=t "
                       "commit -q --allow-empty -m init", shell=True, check=True,
                       cwd=work / "repo")
        hello, second = str(work / "repo/hello.txt"), str(work / "repo/second.txt")
        cases: dict[str, Any] = {"version": version.strip()}
        cases["success"] = run_case(
            claude, work, "success",
            [tool_use("Write", {"file_path": hello, "content": "hello\n"}),
             text("Created hello.txt.")],
            ["-p", "create hello.txt", "--session-id", SESSION, *FLAGS])
        cases["resume"] = run_case(
            claude, work, "resume",
            [tool_use("Write", {"file_path": second, "content": "second\n"}),
             text("Created second.txt.")],
            ["-p", "now create second.txt", "--resume", SESSION, *FLAGS])
        cases["api_error"] = run_case(
            claude, work, "api_error", [http_error(500, retry=False)],
            ["-p", "create third.txt", *FLAGS])
        cases["stream_error"] = run_case(
            claude, work, "stream_error", [stream_error()] * 3,
            ["-p", "create third.txt", *FLAGS], {"CLAUDE_CODE_MAX_RETRIES": "0"})
        cases["budget"] = run_case(
            claude, work, "budget",
            [tool_use("Write", {"file_path": str(work / "repo/budget.txt"), "content": "b\n"}),
             text("Created budget.txt.")],
            ["-p", "create budget.txt", "--max-budget-usd", "0.0001", *FLAGS])
        cases["permission_denied"] = run_case(
            claude, work, "permission_denied",
            [tool_use("Write", {"file_path": str(work / "repo/denied.txt"), "content": "d\n"}),
             text("I could not write denied.txt.")],
            ["-p", "create denied.txt", "--output-format", "stream-json", "--verbose",
             "--model", "claude-sonnet-4-5"])
        # Rate limits: retried by the CLI (api_retry events, then success), and given up on
        # (CLAUDE_CODE_MAX_RETRIES): the final result's api_error_status.
        cases["rate_limit_retry"] = run_case(
            claude, work, "rate_limit_retry",
            [rate_limited(429, "rate_limit_error")] * 2 + [text("Done.")],
            ["-p", "say done", *FLAGS])
        cases["rate_limited"] = run_case(
            claude, work, "rate_limited", [rate_limited(429, "rate_limit_error")],
            ["-p", "say done", *FLAGS], {"CLAUDE_CODE_MAX_RETRIES": "0"})
        cases["overloaded"] = run_case(
            claude, work, "overloaded", [rate_limited(529, "overloaded_error")] * 2,
            ["-p", "say done", *FLAGS], {"CLAUDE_CODE_MAX_RETRIES": "1"})
        if ONLY:  # the other cases stay as they were
            cases = {**json.loads((HERE / "cases.json").read_text()),
                     **{k: v for k, v in cases.items() if v is not None}}
        text_out = json.dumps(cases, indent=1, ensure_ascii=False) + "\n"
        (HERE / "cases.json").write_text(text_out.replace(str(work), "/WORK"))
        for case in ("success", "resume", "api_error", "stream_error", "budget",
                     "permission_denied", "rate_limit_retry", "rate_limited", "overloaded"):
            path = HERE / f"{case}.jsonl"
            if not ONLY or case in ONLY:
                path.write_text(path.read_text().replace(str(work), "/WORK"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
