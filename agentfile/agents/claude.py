"""The `claude` provider: Claude Code, headless (`claude -p … --output-format stream-json`).

Read from the CLI's own events (observed with Claude Code 2.1 against a stand-in API):
`system/init` names the session; the final `result` event carries `is_error`, the final
message, `total_cost_usd` and `usage`. Success is exit 0 *and* `is_error: false`: the CLI
exits 1 on an API error with `subtype: "success"`, and exits 0 when permissions denied a tool.
`total_cost_usd` adds up over every run of a resumed session, so one invocation's cost is the
sum of `model_usage_since_last_result[*].costUSD` when the CLI reports it.

Rate limits (seen with 2.1.330 against a stand-in answering 429/529 with `retry-after`): while
the CLI retries on its own it prints `system/api_retry` with `error_status` 429 (`error:
"rate_limit"`) or 529 (`"overloaded"`) and `retry_delay_ms` (the retry-after, plus jitter); when
it gives up (after `CLAUDE_CODE_MAX_RETRIES`, default 10) the `result` has `is_error: true` and
`api_error_status` 429/529, exit 1. On a claude.ai subscription it also prints
`rate_limit_event` whose `rate_limit_info.status` is `rejected` once the plan's limit is spent,
with `resetsAt` (epoch seconds); with an API key it never does.
"""

from __future__ import annotations

import os
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
    SHOWN_ARGUMENTS,
    find_cli,
    first_of,
    json_line,
    mapping,
    prose,
    sequence,
    tool_line,
)

BINARY_VARIABLE = "AGENTFILE_CLAUDE"  # a path to the CLI, when it is not `claude` on PATH
API = "https://api.anthropic.com"
CLOUDS = ("BEDROCK", "VERTEX", "FOUNDRY")  # CLAUDE_CODE_USE_…: a cloud's API instead
REFUSALS = {429: "rate limit", 529: "overloaded"}  # the API statuses that are its own state


def binary() -> str:
    return find_cli("claude", BINARY_VARIABLE, "`npm install -g @anthropic-ai/claude-code`")


class ClaudeState:
    """What one attempt's event stream said so far."""

    def __init__(self) -> None:
        self.session: str | None = None
        self.result: dict[str, Any] | None = None


class ClaudeProvider:
    name = "claude"
    raw_stream = True

    def __init__(self) -> None:
        self.states: dict[str, ClaudeState] = {}

    def check(self) -> None:
        binary()

    def state(self, env: Mapping[str, str]) -> list[Path]:
        # Its settings, sessions (a retry resumes one) and credentials. `~/.claude.json`
        # beside it stays read-only: Claude Code replaces it by renaming a new file over it,
        # which only a writable home would allow, and runs headless without updating it.
        return [Path(env.get("CLAUDE_CONFIG_DIR") or home(env) / ".claude")]

    def command(self, request: AgentRequest) -> AgentCommand:
        prompt = request.prompt_file.read_text(encoding="utf-8")
        piped = too_long_for_an_argument(prompt)  # then `claude -p` reads it from stdin
        argv = [binary(), "-p", *([] if piped else [prompt]), "--output-format", "stream-json",
                "--verbose", "--permission-mode", "bypassPermissions"]
        if request.agent.model:
            argv += ["--model", request.agent.model]
        if request.session:
            argv += ["--resume", request.session]  # a retry carries on the conversation
        if request.budget_usd_left is not None:
            argv += ["--max-budget-usd", f"{max(request.budget_usd_left, 0.0):.6f}"]
        argv += list(request.agent.args)
        env: dict[str, str] = {}
        if os.geteuid() == 0:
            # Claude Code refuses bypassPermissions as root unless told it is sandboxed; an
            # agentfile target runs unattended, in its own worktree.
            env["IS_SANDBOX"] = "1"
        self.states[request.result_file.as_posix()] = ClaudeState()
        return AgentCommand(argv, env, unset=("CLAUDECODE",),
                            stdin=request.prompt_file if piped else None)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        event = json_line(line)
        if event is None:
            return [line]  # not an event: a warning of the CLI's, as it is
        state = self.states.setdefault(request.result_file.as_posix(), ClaudeState())
        if isinstance(event.get("session_id"), str):
            state.session = event["session_id"]
        kind = event.get("type")
        if kind == "assistant":
            message = event.get("message") or {}
            counts = message.get("usage") or {}
            usage.input_tokens += int(counts.get("input_tokens") or 0)
            usage.output_tokens += int(counts.get("output_tokens") or 0)
        elif kind == "result":
            state.result = event
            per_run = event.get("model_usage_since_last_result")
            if isinstance(per_run, dict) and per_run:
                usage.cost_usd = sum(float(m.get("costUSD") or 0) for m in per_run.values())
            elif isinstance(event.get("total_cost_usd"), int | float):
                usage.cost_usd = float(event["total_cost_usd"])
            usage.cost_reported = True
            counts = event.get("usage") or {}
            if counts.get("input_tokens") or counts.get("output_tokens"):
                usage.input_tokens = int(counts.get("input_tokens") or 0) + int(
                    counts.get("cache_read_input_tokens") or 0) + int(
                    counts.get("cache_creation_input_tokens") or 0)
                usage.output_tokens = int(counts.get("output_tokens") or 0)
        return readable(event, request.workspace)

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        return None

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        if any(env.get(f"CLAUDE_CODE_USE_{cloud}") for cloud in CLOUDS):
            return None  # Bedrock, Vertex or Foundry: their own endpoints and limits
        if not env.get("ANTHROPIC_API_KEY") and not env.get("ANTHROPIC_AUTH_TOKEN"):
            return None  # a claude.ai login: a person's account, not relayed
        return "ANTHROPIC_BASE_URL", env.get("ANTHROPIC_BASE_URL") or API

    def rate_limit(self, line: str) -> RateLimit | None:
        if "rate_limit" not in line and "api_retry" not in line and \
                "api_error_status" not in line:
            return None  # most lines: not worth decoding twice
        event = json_line(line)
        if event is None:
            return None
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "api_retry":
            reason = REFUSALS.get(event.get("error_status"))  # type: ignore[arg-type]
            if reason is None:
                return None  # a 5xx or a lost connection: the CLI's business
            delay = event.get("retry_delay_ms")
            return RateLimit(reason, retrying=True,
                             wait_s=delay / 1000 if isinstance(delay, int | float) else None,
                             detail=f"{event.get('error_status')} {event.get('error')}")
        if kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            if info.get("status") != "rejected":
                return None  # allowed, allowed_warning: a notice, not a refusal
            resets = info.get("resetsAt")
            return RateLimit("quota", resets_at=float(resets)
                             if isinstance(resets, int | float) else None,
                             detail=f"{info.get('rateLimitType') or 'plan'} limit reached")
        if kind == "result" and event.get("is_error"):
            reason = REFUSALS.get(event.get("api_error_status"))  # type: ignore[arg-type]
            if reason is not None:
                return RateLimit(reason, detail=str(event.get("result") or reason))
        return None

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        state = self.states.pop(request.result_file.as_posix(), ClaudeState())
        result = state.result
        if result is None:
            return AgentVerdict(False, None, f"Claude Code ended (exit {exit_code}) without a "
                                "result event", state.session)
        message = result.get("result") if isinstance(result.get("result"), str) else None
        if result.get("is_error") or exit_code != 0:
            why = message or result.get("subtype") or f"exit {exit_code}"
            status = None
            if result.get("subtype") == "error_max_budget_usd":
                why, status = "Claude Code stopped at its --max-budget-usd", "over-budget"
            return AgentVerdict(False, message, f"Claude Code reported an error: {why}",
                                state.session, status)
        return AgentVerdict(True, message, None, state.session)



_ENDINGS = {"error_max_budget_usd": "stopped at its --max-budget-usd",
            "error_max_turns": "stopped at its --max-turns",
            "error_during_execution": "it failed while running"}


def readable(event: dict[str, Any], workspace: Path) -> list[str]:
    """What a person reads of one stream-json event: the assistant's text, a line per tool
    call, a tool's error (a denied permission too), and a run's error."""
    kind = event.get("type")
    message = mapping(event.get("message"))
    blocks = sequence(message.get("content"))
    shown: list[str] = []
    if kind == "system" and event.get("subtype") == "init":
        shown.append(f"Claude Code session {event.get('session_id')} "
                     f"({event.get('model') or 'default model'})")
    elif kind == "assistant":
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                shown += prose(block.get("text"))
            elif block.get("type") == "tool_use":
                tool = str(block.get("name") or "tool")
                shown.append(tool_line(tool, first_of(block.get("input"), SHOWN_ARGUMENTS),
                                       workspace))
    elif kind == "user":
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_result" and \
                    block.get("is_error"):
                shown.append("  " + tool_line("error:", _result_text(block.get("content"))))
    elif kind == "result" and (event.get("is_error") or event.get("subtype") != "success"):
        why = event.get("result") if isinstance(event.get("result"), str) else None
        subtype = str(event.get("subtype") or "")
        shown.append(f"error: {why or _ENDINGS.get(subtype) or subtype or 'the run failed'}")
    return shown


def _result_text(content: object) -> str:
    """A tool result's text: a string, or the text blocks of a list."""
    if isinstance(content, list):
        return " ".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
    return str(content or "")
