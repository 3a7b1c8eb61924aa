"""The `command` provider: any program, run through the shell with placeholders expanded.

It reports usage by rewriting `$AGENTFILE_USAGE_FILE` and its final message by writing
`$AGENTFILE_RESULT_FILE`; without one, the last lines it printed stand for the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from agentfile.agents.base import AgentCommand, AgentRequest, AgentVerdict, RateLimit, Usage
from agentfile.manifest.expand import substitute_shell

MESSAGE_LINES = 20


class CommandProvider:
    name = "command"
    raw_stream = False  # it prints text: its log is its output, as it is

    def check(self) -> None:
        return None

    def state(self, env: Mapping[str, str]) -> list[Path]:
        return []  # any program: what it needs beyond its workspace is the user's to give

    def command(self, request: AgentRequest) -> AgentCommand:
        assert request.agent.command is not None  # checked when the manifest is loaded
        command, carried = substitute_shell(request.agent.command, request.placeholders)
        return AgentCommand(command, carried)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        return [line]

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        return None

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        return None  # not relayed: see docs/rate-limits.md

    def rate_limit(self, line: str) -> RateLimit | None:
        return None  # any program: its output has no agreed form

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        try:
            message = request.result_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            message = "\n".join(tail[-MESSAGE_LINES:])
        if exit_code == 0:
            return AgentVerdict(ok=True, message=message)
        # No error of its own: the exit code and the output's last lines say it (the
        # runner's failure text), and go into the next attempt's prompt.
        return AgentVerdict(ok=False, message=message)
