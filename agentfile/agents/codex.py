"""The `codex` provider: Codex CLI, headless (`codex exec --json`).

Observed with codex-cli 0.169 against a stand-in Responses API: success is exit 0 and a
`turn.completed` event; failure is `turn.failed` (an `error` event alone may be a
"Reconnecting…" notice). Usage arrives only in `turn.completed.usage`, summed over the run's
model calls, and on `codex exec resume` it is the whole thread's total, so the tokens already
counted for that thread are subtracted. Codex reports no cost: dollars are tokens x `price`.

Rate limits (seen with 0.169 against the stand-in): while Codex retries on its own it prints
`error` events "Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many
Requests)"; when it gives up, `turn.failed` says "exceeded retry limit, last status: 429 …".
A spent ChatGPT plan (`usage_limit_reached`) fails at once with "You've hit your usage limit.
… try again at 7:02 PM." (local time; a date first when it is not today), and a spent API
balance (`insufficient_quota`) with "Quota exceeded. Check your plan and billing details."
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentfile.agents.base import (
    AgentCommand,
    AgentRequest,
    AgentVerdict,
    RateLimit,
    Usage,
    home,
    too_long_for_an_argument,
)
from agentfile.agents.events import (
    find_cli,
    json_line,
    mapping,
    number,
    prose,
    sequence,
    time_in,
    tool_line,
    wait_in,
)

BINARY_VARIABLE = "AGENTFILE_CODEX"
# Arguments by which an agent's `args` choose Codex's sandbox themselves.
SANDBOX_CHOICES = ("--sandbox", "-s", "--full-auto", "--dangerously-bypass-approvals-and-sandbox")
_LAST_STATUS = re.compile(r"last status: (429|503|529)\b")
_QUOTA = re.compile(r"hit your usage limit|Quota exceeded", re.IGNORECASE)


def refusal(message: str, *, retrying: bool) -> RateLimit | None:
    """What a Codex error message says of the provider's limits, if anything."""
    status = _LAST_STATUS.search(message)
    if status is not None:
        reason = "rate limit" if status.group(1) == "429" else "overloaded"
        return RateLimit(reason, retrying=retrying, wait_s=wait_in(message), detail=message)
    if _QUOTA.search(message):
        return RateLimit("quota", resets_at=time_in(message, time.time()), detail=message)
    return None


def binary() -> str:
    return find_cli("codex", BINARY_VARIABLE, "`npm install -g @openai/codex`")


class _Attempt:
    def __init__(self) -> None:
        self.thread: str | None = None
        self.message: str | None = None
        self.completed = False
        self.failure: str | None = None
        # Each file Codex changed, and whether its last change was applied: a change whose
        # item ended "failed" (a write refused) is not in the workspace, though the turn
        # completes and Codex exits 0.
        self.changes: dict[str, bool] = {}


class CodexProvider:
    name = "codex"
    raw_stream = True

    def __init__(self) -> None:
        self.attempts: dict[str, _Attempt] = {}
        self.thread_tokens: dict[str, tuple[int, int]] = {}  # counted so far, per thread

    def check(self) -> None:
        binary()

    def state(self, env: Mapping[str, str]) -> list[Path]:
        # Its configuration, sessions (`codex exec resume`), logs and credentials.
        return [Path(env.get("CODEX_HOME") or home(env) / ".codex")]

    def command(self, request: AgentRequest) -> AgentCommand:
        prompt = request.prompt_file.read_text(encoding="utf-8")
        # Codex's own sandbox fails every write where the machine cannot host it (gVisor with
        # bubblewrap installed) while the turn still "completes": it runs unconfined, as Claude
        # Code runs with bypassPermissions, unless the agent's `args` choose a sandbox.
        chosen = any(arg.split("=", 1)[0] in SANDBOX_CHOICES for arg in request.agent.args)
        if request.session:
            argv = [binary(), "exec", "resume", "--json", "--skip-git-repo-check"]
            if not chosen:
                argv += ["-c", 'sandbox_mode="danger-full-access"']
        else:
            argv = [binary(), "exec", "--json", "--skip-git-repo-check"]
            if not chosen:
                argv += ["--sandbox", "danger-full-access"]
        if request.agent.model:
            argv += ["--model", request.agent.model]
        argv += list(request.agent.args)
        piped = too_long_for_an_argument(prompt)  # `-`: codex reads it from stdin
        given = "-" if piped else prompt
        argv += [request.session, given] if request.session else [given]
        self.attempts[str(request.result_file)] = _Attempt()
        return AgentCommand(argv, stdin=request.prompt_file if piped else None)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        event = json_line(line)
        if event is None:
            return [line]  # not an event: a notice of the CLI's, as it is
        state = self.attempts.setdefault(str(request.result_file), _Attempt())
        kind = event.get("type")
        if kind == "thread.started":
            state.thread = str(event.get("thread_id") or "") or None
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                state.message = item["text"]
            elif item.get("type") == "file_change":
                applied = item.get("status") == "completed"
                for change in sequence(item.get("changes")):
                    if isinstance(change, dict) and change.get("path"):
                        state.changes[str(change["path"])] = applied
        elif kind == "turn.completed":
            state.completed = True
            counts = event.get("usage") or {}
            total_in, total_out = number(counts.get("input_tokens")), number(
                counts.get("output_tokens"))
            thread = state.thread or request.session or ""
            before_in, before_out = self.thread_tokens.get(thread, (0, 0))
            usage.input_tokens = max(total_in - before_in, 0)
            usage.output_tokens = max(total_out - before_out, 0)
            self.thread_tokens[thread] = (total_in, total_out)
        elif kind == "turn.failed":
            error = event.get("error") or {}
            state.failure = str(error.get("message") or "the turn failed")
        return readable(event, request.workspace)

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        return None

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        return None  # not relayed: see docs/rate-limits.md

    def rate_limit(self, line: str) -> RateLimit | None:
        if "status" not in line and "limit" not in line and "Quota" not in line:
            return None
        event = json_line(line)
        if event is None:
            return None
        if event.get("type") == "error" and str(event.get("message")).startswith("Reconnecting"):
            return refusal(str(event["message"]), retrying=True)
        if event.get("type") == "turn.failed":
            return refusal(str((event.get("error") or {}).get("message") or ""), retrying=False)
        return None

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        state = self.attempts.pop(str(request.result_file), _Attempt())
        session = state.thread or request.session
        lost = [path for path, applied in state.changes.items() if not applied]
        if exit_code == 0 and state.completed and state.failure is None and lost:
            return AgentVerdict(False, state.message, _lost(lost, request), session)
        if exit_code == 0 and state.completed and state.failure is None:
            return AgentVerdict(True, state.message, None, session)
        why = state.failure or (f"Codex ended (exit {exit_code}) without completing its turn")
        return AgentVerdict(False, state.message, f"Codex reported an error: {why}", session)


def _lost(paths: list[str], request: AgentRequest) -> str:
    """Why an attempt whose turn completed failed all the same: file changes Codex could not
    apply (each named, relative to the workspace when inside it)."""
    shown = [tool_line("", path, request.workspace).strip() for path in paths[:5]]
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    why = (f"Codex could not apply its change to {', '.join(shown)}{more} (its file_change "
           "item ended \"failed\"): that work is not in the workspace")
    if any(arg.split("=", 1)[0] in SANDBOX_CHOICES for arg in request.agent.args):
        why += "; Codex's own sandbox, which the agent's args choose, may not write here"
    return why


_CHANGES = {"add": "Write", "update": "Edit", "delete": "Delete"}


def readable(event: dict[str, Any], workspace: Path) -> list[str]:
    """What a person reads of one `codex exec --json` event: the agent's messages, a line
    per command (when it starts; its exit status when it failed) and per file changed,
    errors and notices."""
    kind = event.get("type")
    item = mapping(event.get("item"))
    what = item.get("type")
    if kind == "thread.started":
        return [f"Codex thread {event.get('thread_id')}"]
    if kind == "item.started" and what == "command_execution":
        return [tool_line("Bash", _unwrapped(str(item.get("command") or "")))]
    if kind == "item.completed":
        if what == "agent_message":
            return prose(item.get("text"))
        if what == "command_execution" and item.get("exit_code") not in (0, None):
            return [f"  exit {item.get('exit_code')}"]
        if what == "file_change":
            changes = sequence(item.get("changes"))
            failed = " (failed)" if item.get("status") == "failed" else ""
            return [tool_line(_CHANGES.get(str(c.get("kind")), "Change"), c.get("path"),
                              workspace) + failed for c in changes if isinstance(c, dict)]
        if what == "mcp_tool_call":
            return [tool_line("Tool", f"{item.get('server')}.{item.get('tool')}")]
        if what == "web_search":
            return [tool_line("WebSearch", item.get("query"))]
        if what == "error":
            return [f"warning: {item.get('message')}"]
    if kind == "error":
        return [f"warning: {event.get('message')}"]
    if kind == "turn.failed":
        error = mapping(event.get("error"))
        return [f"error: {error.get('message') or 'the turn failed'}"]
    return []


def _unwrapped(command: str) -> str:
    """`/bin/bash -c 'cat x'` as `cat x`: the shell Codex wraps every command in says
    nothing."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) == 3 and words[0].endswith(("sh", "bash", "zsh")) and words[1] in ("-c", "-lc"):
        return words[2]
    return command
