"""Re-create the captures in this folder by driving the REAL Codex CLI offline.

    bash tests/standin/install_codex.sh          # once; prints the binary path
    python tests/data/codex/capture_codex.py [OUTDIR [CASE…]]  # default: this folder, all

Each case starts the stand-in Responses API server (tests/standin/openai.py) on
127.0.0.1, writes $CODEX_HOME/config.toml with a custom provider pointing at it,
runs ``codex exec --json ...`` with stdin from /dev/null, and stores stdout as
CASE.jsonl, stderr as CASE.stderr.txt; runs.json gets argv, exit code, wall
time and the requests the CLI made.  Thread ids, temp paths and times differ
from one capture to the next; the event shapes do not.
"""

from __future__ import annotations

import glob
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

TOOLS = os.environ.get("AGENTFILE_TOOLS", os.path.expanduser("~/.cache/agentfile-tools"))


def codex_bin() -> str:
    out = subprocess.run(
        ["bash", os.path.join(HERE, "..", "..", "standin", "install_codex.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def usage(inp: int, cached: int, out: int, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


class Case:
    def __init__(self, codex: str, outdir: str, only: set[str]):
        self.codex = codex
        self.outdir = outdir
        self.only = only  # the cases to capture again (all when empty)
        self.runs: dict[str, dict[str, Any]] = {}

    def run(
        self,
        name: str,
        script: list[Any],
        args: list[str],
        home: str,
        ws: str,
        retries: int | None = 0,
        timeout: float = 300,
        base_url: str | None = None,
        api_key: str | None = "sk-standin-test",
        kill_after: float | None = None,
    ) -> dict[str, Any]:
        if self.only and name not in self.only:
            return {}
        codex_home = os.path.join(home, ".codex")
        os.makedirs(codex_home, exist_ok=True)
        with oa.OpenAIStandin(script) as srv:
            with open(os.path.join(codex_home, "config.toml"), "w") as f:
                f.write(oa.codex_config(base_url or srv.base_url, retries=retries))
            env = {
                "PATH": os.environ["PATH"],
                "HOME": home,
                "CODEX_HOME": codex_home,
                "LANG": "C.UTF-8",
            }
            if api_key is not None:
                env["STANDIN_API_KEY"] = api_key
            argv = [self.codex, *args]
            t0 = time.monotonic()
            proc = subprocess.Popen(
                argv,
                cwd=ws,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                out, err = proc.communicate(timeout=kill_after or timeout)
            except subprocess.TimeoutExpired:
                if not kill_after:
                    proc.kill()
                    raise
                proc.terminate()  # SIGTERM, as a runner's time limit would
                out, err = proc.communicate(timeout=30)
            p = subprocess.CompletedProcess(argv, proc.returncode, out, err)
            wall = round(time.monotonic() - t0, 2)
            reqs = [
                {
                    "method": r.method,
                    "path": r.path,
                    "user-agent": r.headers.get("user-agent"),
                    "authorization": r.headers.get("authorization"),
                }
                for r in srv.requests
            ]
            if name == "success":
                # one full request body, to show what Codex sends
                with open(os.path.join(self.outdir, "request-success-last.json"), "w") as f:
                    json.dump(srv.response_requests[-1].json, f, indent=1)
        with open(os.path.join(self.outdir, f"{name}.jsonl"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(self.outdir, f"{name}.stderr.txt"), "w") as f:
            f.write(p.stderr)
        info = {
            "argv": ["codex", *args],
            "exit_code": p.returncode,
            "wall_seconds": wall,
            "killed_after_seconds": kill_after if kill_after and wall >= kill_after else None,
            "requests": reqs,
            "workspace_files": sorted(os.listdir(ws)),
        }
        self.runs[name] = info
        print(f"{name}: rc={p.returncode} {wall}s {len(reqs)} requests", file=sys.stderr)
        return info


def thread_id(outdir: str, name: str) -> str:
    with open(os.path.join(outdir, f"{name}.jsonl")) as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("type") == "thread.started":
                return str(ev["thread_id"])
    raise RuntimeError(f"no thread.started in {name}")


def main() -> None:
    outdir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
    os.makedirs(outdir, exist_ok=True)
    codex = codex_bin()
    version = subprocess.run([codex, "--version"], capture_output=True, text=True).stdout.strip()
    c = Case(codex, outdir, set(sys.argv[2:]))
    base = ["exec", "--json", "--skip-git-repo-check"]
    tmp = tempfile.mkdtemp(prefix="agentfile-codex-capture-")
    try:

        def dirs(name: str) -> tuple[str, str]:
            home, ws = os.path.join(tmp, name, "home"), os.path.join(tmp, name, "ws")
            os.makedirs(home)
            os.makedirs(ws)
            return home, ws

        # 1. success: reasoning + apply_patch (file_change), a shell command
        #    (command_execution), then the final message (agent_message).
        home, ws = dirs("success")
        c.run(
            "success",
            [
                [
                    oa.reasoning("Plan: create hello.txt with apply_patch, then check it."),
                    oa.apply_patch_call(
                        oa.add_file_patch("hello.txt", "hello\nworld"),
                        usage=usage(1000, 100, 20, 5),
                    ),
                ],
                oa.shell_call("cat hello.txt", usage=usage(1100, 900, 30)),
                oa.message("Created hello.txt (2 lines).", usage=usage(1300, 1000, 40)),
            ],
            [
                *base,
                "--sandbox",
                "workspace-write",
                "-o",
                os.path.join(home, "last.txt"),
                "Create hello.txt containing hello and world.",
            ],
            home,
            ws,
        )
        if "success" in c.runs:
            with open(os.path.join(home, "last.txt")) as f:
                c.runs["success"]["output_last_message"] = f.read()

        # 2. failures, retries off (request_max_retries = stream_max_retries = 0)
        for name, reply in [
            ("fail-http500", oa.error(500, "stand-in internal error")),
            ("fail-http401", oa.error(401, "Incorrect API key provided", code="invalid_api_key")),
            (
                "fail-http429-quota",
                oa.error(429, "You exceeded your current quota", code="insufficient_quota"),
            ),
            (
                "fail-http400",
                oa.error(400, "bad request from stand-in", code="invalid_request_error"),
            ),
            ("fail-response-failed", oa.failed("stand-in says the response failed")),
        ]:
            home, ws = dirs(name)
            c.run(name, [reply], [*base, "--sandbox", "workspace-write", "say hi"], home, ws)

        # 3. a 500 with Codex's default retry policy: "Reconnecting... N/5" error events
        home, ws = dirs("fail-http500-default-retries")
        c.run(
            "fail-http500-default-retries",
            [oa.error(500, "stand-in internal error")],
            [*base, "--sandbox", "workspace-write", "say hi"],
            home,
            ws,
            retries=None,
        )

        # 4. the server goes away mid-turn: one tool call runs, then a 500
        home, ws = dirs("midturn")
        c.run(
            "fail-midturn",
            [
                oa.shell_call("echo one > one.txt", usage=usage(2000, 0, 25)),
                oa.error(500, "stand-in internal error"),
            ],
            [*base, "--sandbox", "workspace-write", "Create one.txt and two.txt."],
            home,
            ws,
        )

        # 5. resume that thread (same CODEX_HOME and cwd): history is sent again,
        #    turn.completed usage is the THREAD total (includes the failed run's 2000/25)
        tid = thread_id(outdir, "fail-midturn")
        c.run(
            "resume",
            [
                oa.shell_call("echo two > two.txt", usage=usage(2500, 2000, 30)),
                oa.message("Created one.txt and two.txt.", usage=usage(2700, 2500, 35)),
            ],
            [
                "exec",
                "resume",
                "--json",
                "--skip-git-repo-check",
                "-c",
                'sandbox_mode="workspace-write"',
                tid,
                "Continue where you stopped.",
            ],
            home,
            ws,
        )
        rollouts = glob.glob(
            os.path.join(home, ".codex", "sessions", "**", f"rollout-*{tid}.jsonl"), recursive=True
        )
        if rollouts:
            # the session file Codex keeps: token_count events carry running totals
            tc = []
            with open(rollouts[0]) as f:
                for line in f:
                    ev = json.loads(line)
                    p = ev.get("payload") or {}
                    if p.get("type") in ("token_count", "task_started", "task_complete"):
                        tc.append(ev)
            with open(os.path.join(outdir, "rollout-token-events.jsonl"), "w") as f:
                for ev in tc:
                    f.write(json.dumps(ev) + "\n")
            c.runs["resume"]["rollout_file"] = os.path.relpath(rollouts[0], home)

        # 6. no server listening: Codex waits for the network for ever (even with
        #    retries off); we stop it with SIGTERM after 20 s
        home, ws = dirs("connection-refused")
        c.run(
            "fail-connection-refused",
            [oa.message("unused")],
            [*base, "--sandbox", "workspace-write", "say hi"],
            home,
            ws,
            base_url="http://127.0.0.1:9/v1",
            kill_after=20,
        )

        # 7. the provider's env_key variable is not set
        home, ws = dirs("missing-key")
        c.run(
            "fail-missing-key",
            [oa.message("unused")],
            [*base, "--sandbox", "workspace-write", "say hi"],
            home,
            ws,
            api_key=None,
        )

        # 8. default sandbox (read-only): the write is refused inside the sandbox
        home, ws = dirs("readonly")
        c.run(
            "readonly-sandbox",
            [
                oa.shell_call("echo hi > hi.txt"),
                oa.message("Could not write hi.txt: read-only."),
            ],
            [*base, "write hi.txt"],
            home,
            ws,
        )

        # 9. rate limits: a 429 that Codex retries (default policy: "Reconnecting... N/5
        #    (exceeded retry limit, last status: 429 …)") before it gives up; a spent
        #    ChatGPT plan (usage_limit_reached, with the time it comes back)
        limited = oa.error(429, "Rate limit reached for requests per min. Please try again "
                           "in 1s.", code="rate_limit_exceeded", headers={"retry-after": "1"})
        home, ws = dirs("ratelimit")
        c.run("fail-http429-ratelimit", [limited],
              [*base, "--sandbox", "workspace-write", "say hi"], home, ws, retries=2)
        home, ws = dirs("usage-limit")
        c.run("fail-http429-usage-limit",
              [oa.error(429, "usage limit", code="usage_limit_reached",
                        fields={"type": "usage_limit_reached", "plan_type": "plus",
                                "resets_at": int(time.time()) + 7200})],
              [*base, "--sandbox", "workspace-write", "say hi"], home, ws)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if c.only:  # the other cases' entries stay as they were
        with open(os.path.join(outdir, "runs.json")) as f:
            c.runs = {**json.load(f)["runs"], **c.runs}
    with open(os.path.join(outdir, "runs.json"), "w") as f:
        json.dump({"codex_version": version, "runs": c.runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
