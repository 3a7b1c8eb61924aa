"""The `aider` provider: `aider --message-file … --yes-always`, usage from its analytics log.

Observed with aider 0.86 against a stand-in API: aider exits 0 even after an API error, so
success is exit 0 *and* every `message_send_starting` in its `--analytics-log` answered by a
`message_send`, with no `litellm.…Error` in its output. `message_send` carries
`prompt_tokens`, `completion_tokens` and `cost` (dollars, from litellm's price table). aider
has no session id: a retry passes `--restore-chat-history`, with the chat history kept in the
run's directory (not in the work tree, where it would be committed).

Rate limits (captured, tests/data/aider/ratelimit-then-success.*): the openai SDK under
litellm retries a 429 twice without a word; then aider prints "litellm.RateLimitError: …" and
"Retrying in 0.2 seconds...", and goes on retrying. A 503/529 is `litellm.ServiceUnavailableError`
("overloaded"). When it gives up, it exits 0 all the same (see above).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from agentfile.agents.base import (
    AgentCommand,
    AgentRequest,
    AgentVerdict,
    RateLimit,
    Usage,
    home,
)
from agentfile.agents.events import find_cli, number, wait_in

BINARY_VARIABLE = "AGENTFILE_AIDER"
_API_ERROR = re.compile(r"litellm\.\w*Error|APIConnectionError|AuthenticationError")
_REFUSALS = {"litellm.RateLimitError": "rate limit",
             "litellm.ServiceUnavailableError": "overloaded"}


def binary() -> str:
    return find_cli("aider", BINARY_VARIABLE, "`pipx install aider-chat`")


def analytics_path(request: AgentRequest) -> Path:
    return request.usage_file.with_suffix(".aider-analytics.jsonl")


def history_path(request: AgentRequest) -> Path:
    return request.usage_file.with_suffix(".aider-chat.md")


def read_analytics(path: Path) -> list[dict[str, object]]:
    events = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(event, dict):
            events.append(event)
    return events


class AiderProvider:
    name = "aider"
    raw_stream = False  # it prints text: its log is its output, as it is

    def check(self) -> None:
        binary()

    def state(self, env: Mapping[str, str]) -> list[Path]:
        # Its caches and analytics id; its chat history and analytics log are run files.
        return [home(env) / ".aider"]

    def command(self, request: AgentRequest) -> AgentCommand:
        analytics = analytics_path(request)
        analytics.unlink(missing_ok=True)
        argv = [binary(), "--message-file", str(request.prompt_file), "--yes-always",
                "--analytics-log", str(analytics), "--no-analytics",
                "--chat-history-file", str(history_path(request)),
                "--input-history-file", str(history_path(request).with_suffix(".input")),
                "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
                "--no-check-update", "--no-show-release-notes", "--no-pretty",
                "--no-fancy-input"]
        if request.agent.model:
            argv += ["--model", request.agent.model]
        if request.session:
            argv.append("--restore-chat-history")
        argv += list(request.agent.args)
        return AgentCommand(argv)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        return [line]

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        """Usage so far, from the analytics log aider appends to as it goes."""
        sends = [e for e in read_analytics(analytics_path(request))
                 if e.get("event") == "message_send"]
        properties = [e.get("properties") for e in sends]
        rows = [p for p in properties if isinstance(p, dict)]
        usage.input_tokens = sum(number(p.get("prompt_tokens")) for p in rows)
        usage.output_tokens = sum(number(p.get("completion_tokens")) for p in rows)
        costs = [float(c) for p in rows if isinstance(c := p.get("cost"), int | float)]
        if costs:
            usage.cost_usd = sum(costs)
            usage.cost_reported = True

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        return None  # not relayed: see docs/rate-limits.md

    def rate_limit(self, line: str) -> RateLimit | None:
        for marker, reason in _REFUSALS.items():
            if line.startswith(marker):
                return RateLimit(reason, wait_s=wait_in(line), detail=line.strip())
        return None

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        events = read_analytics(analytics_path(request))
        names = [e.get("event") for e in events]
        unanswered = 0
        for name in names:
            if name == "message_send_starting":
                unanswered += 1
            elif name == "message_send":
                unanswered = max(unanswered - 1, 0)
        errors = [line for line in tail if _API_ERROR.search(line)]
        message = "\n".join(line for line in tail[-20:] if line.strip()) or None
        session = "chat-history"  # a retry restores the chat history kept for this target
        if exit_code == 0 and not unanswered and not errors and "message_send" in names:
            return AgentVerdict(True, message, None, session)
        why = errors[-1] if errors else (
            "a message got no reply" if unanswered else f"exit {exit_code}")
        return AgentVerdict(False, message, f"aider reported an error: {why}", session)
