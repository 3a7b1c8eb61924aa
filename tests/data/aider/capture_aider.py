"""Re-create the captures in this folder by driving the REAL aider offline.

    python3.12 -m venv "$AGENTFILE_TOOLS/aider-venv"
    "$AGENTFILE_TOOLS/aider-venv/bin/pip" install aider-chat==0.86.2
    python tests/data/aider/capture_aider.py [OUTDIR [CASE…]]  # default: this folder, all

aider talks Chat Completions through litellm; tests/standin/openai.py answers
``POST /v1/chat/completions`` from a script.  aider is pointed at it with
OPENAI_API_BASE / OPENAI_API_KEY and ``--model openai/gpt-4o-mini`` (a model
litellm has prices for, so aider reports cost).  LITELLM_LOCAL_MODEL_COST_MAP
and a seeded ~/.aider/caches/model_prices_and_context_window.json keep litellm
and aider from fetching the price list from the network (aider prints the
connection error and goes on when it cannot).

Per case: CASE.stdout.txt, CASE.stderr.txt, CASE.analytics.jsonl (the
--analytics-log file); runs.json gets argv, exit code, wall time, request count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))  # tests/, as in the test suite
import standin.openai as oa  # noqa: E402  (tests/standin/openai.py, stdlib only)

VERSION = "0.86.2"
TOOLS = os.environ.get("AGENTFILE_TOOLS", os.path.expanduser("~/.cache/agentfile-tools"))
AIDER = os.path.join(TOOLS, "aider-venv", "bin", "aider")
MODEL = "openai/gpt-4o-mini"


def usage(inp: int, cached: int, out: int) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
    }


def whole(path: str, text: str) -> str:
    """A reply in aider's "whole" edit format (the one it picks for gpt-4o-mini)."""
    return f"{path}\n```\n{text}```\n"


def main() -> None:
    outdir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
    os.makedirs(outdir, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="agentfile-aider-capture-")

    def dirs(name: str) -> tuple[str, str]:
        home, ws = os.path.join(tmp, name, "home"), os.path.join(tmp, name, "ws")
        os.makedirs(os.path.join(home, ".aider", "caches"))
        os.makedirs(ws)
        with open(
            os.path.join(home, ".aider", "caches", "model_prices_and_context_window.json"), "w"
        ) as f:
            json.dump({"_standin": {}}, f)
        return home, ws

    def run(
        name: str,
        script: list[Any],
        extra: list[str],
        home: str,
        ws: str,
        prompt: str,
        timeout: float = 600,
    ) -> None:
        if only and name not in only:
            return
        with open(os.path.join(ws, "prompt.txt"), "w") as f:
            f.write(prompt)
        log = os.path.join(ws, "analytics.jsonl")
        if os.path.exists(log):
            os.remove(log)
        args = [
            "--model",
            MODEL,
            "--message-file",
            "prompt.txt",
            "--yes-always",
            "--no-git",
            "--no-check-update",
            "--no-show-release-notes",
            "--analytics-log",
            "analytics.jsonl",
            "--no-analytics",
            "--no-pretty",
            "--no-fancy-input",
            *extra,
        ]
        with oa.OpenAIStandin(script) as srv:
            env = {
                "PATH": os.environ["PATH"],
                "HOME": home,
                "OPENAI_API_KEY": "sk-standin",
                "OPENAI_API_BASE": srv.base_url,
                "LANG": "C.UTF-8",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            t0 = time.monotonic()
            p = subprocess.run(
                [AIDER, *args],
                cwd=ws,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            wall = round(time.monotonic() - t0, 2)
            nreq = len(srv.chat_requests)
            streamed = [bool((r.json or {}).get("stream")) for r in srv.chat_requests]
        for suffix, text in (("stdout.txt", p.stdout), ("stderr.txt", p.stderr)):
            with open(os.path.join(outdir, f"{name}.{suffix}"), "w") as f:
                f.write(text.replace(ws, "<workspace>"))
        shutil.copy(log, os.path.join(outdir, f"{name}.analytics.jsonl"))
        runs[name] = {
            "argv": ["aider", *args],
            "exit_code": p.returncode,
            "wall_seconds": wall,
            "chat_requests": nreq,
            "streamed": streamed,
            "workspace_files": sorted(os.listdir(ws)),
        }
        print(f"{name}: rc={p.returncode} {wall}s {nreq} requests", file=sys.stderr)

    only = set(sys.argv[2:])  # case names to capture again (all when none is given)

    try:
        # 1. success, streaming (default): litellm does not ask for usage in the
        #    stream, so aider counts tokens itself and prices them
        home, ws = dirs("success")
        run(
            "success",
            [
                oa.message(
                    "Creating hello.txt.\n\n" + whole("hello.txt", "hello\nworld\n"),
                    usage=usage(2000, 500, 40),
                )
            ],
            [],
            home,
            ws,
            "Create hello.txt containing hello and world.",
        )

        # 2. resume: same directory, --restore-chat-history replays .aider.chat.history.md
        run(
            "resume",
            [oa.message(whole("hello.txt", "hello\nworld\nagain\n"), usage=usage(2600, 2000, 45))],
            ["--restore-chat-history"],
            home,
            ws,
            "Add a line 'again' to hello.txt.",
        )

        # 3. success, --no-stream: tokens come from the API's usage
        home, ws = dirs("success-nostream")
        run(
            "success-nostream",
            [oa.message(whole("hello.txt", "hello\nworld\n"), usage=usage(2000, 500, 40))],
            ["--no-stream"],
            home,
            ws,
            "Create hello.txt containing hello and world.",
        )

        # 4. API errors: aider prints them and exits 0; no message_send event
        home, ws = dirs("fail-http401")
        run(
            "fail-http401",
            [oa.error(401, "Incorrect API key provided", code="invalid_api_key")],
            [],
            home,
            ws,
            "Create hello.txt.",
        )
        home, ws = dirs("fail-http500")
        run(
            "fail-http500",
            [oa.error(500, "stand-in internal error")],
            [],
            home,
            ws,
            "Create hello.txt.",
        )
        # 5. rate limited: a 429 (retry-after 1) four times, then the reply. The openai SDK
        #    under litellm retries twice on its own, silently; then aider prints
        #    litellm.RateLimitError and "Retrying in N seconds...", and succeeds
        home, ws = dirs("ratelimit-then-success")
        limited = oa.error(429, "Rate limit reached for gpt-4o-mini on requests per min (RPM): "
                           "Limit 3, Used 3, Requested 1. Please try again in 1s.",
                           code="rate_limit_exceeded", headers={"retry-after": "1"})
        run(
            "ratelimit-then-success",
            [limited] * 4 + [oa.message(whole("hello.txt", "hello\n"))],
            [],
            home,
            ws,
            "Create hello.txt.",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    path = os.path.join(outdir, "runs.json")
    if only and os.path.exists(path):  # the other cases' entries stay as they were
        with open(path) as f:
            runs = {**json.load(f)["runs"], **runs}
    with open(path, "w") as f:
        json.dump({"aider_version": VERSION, "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
