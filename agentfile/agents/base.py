"""The provider protocol: how one agent CLI is run without a person (SPEC 7).

A provider builds the command for a prompt, reads the CLI's own output while it runs (usage,
session, final message, and the text a person reads of it), and decides success from those
events as well as the exit code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agentfile.manifest.model import Agent

# Linux takes one argument of at most 128 KiB (MAX_ARG_STRLEN): a prompt longer than this
# goes to a CLI on its standard input instead (each CLI reads its prompt there when none is
# given as an argument).
ARGUMENT_BYTES = 100 * 1024


def too_long_for_an_argument(text: str) -> bool:
    return len(text.encode("utf-8")) > ARGUMENT_BYTES


def home(env: Mapping[str, str]) -> Path:
    """The home directory a CLI started with `env` uses."""
    return Path(env.get("HOME") or Path.home())


@dataclass
class Usage:
    """What an agent has spent so far; totals, updated while it runs."""

    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_reported: bool = False  # the CLI said the cost, rather than tokens x price

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def priced(self, agent: Agent) -> float:
        """Dollars: as reported, else tokens x the agent's price (0 without a price)."""
        if self.cost_reported or agent.price is None:
            return self.cost_usd
        return (self.input_tokens * agent.price.input
                + self.output_tokens * agent.price.output) / 1_000_000


@dataclass
class AgentRequest:
    """One attempt of an agent target."""

    target: str
    run_id: str
    agent: Agent
    workspace: Path
    prompt_file: Path
    result_file: Path
    usage_file: Path
    attempt: int
    placeholders: Mapping[str, str] = field(default_factory=dict)
    session: str | None = None  # to resume, on a retry
    budget_usd_left: float | None = None


@dataclass
class AgentCommand:
    """What to start for an attempt."""

    command: str | list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    stdin: Path | None = None  # a file for the CLI's standard input (else /dev/null)


@dataclass(frozen=True)
class RateLimit:
    """The provider refused for its own sake (too many requests, overloaded, a spent quota),
    as the CLI printed it: the provider's condition, not the target's failure."""

    reason: str  # "rate limit", "overloaded" or "quota"
    retrying: bool = False  # the CLI waits and retries on its own; else its attempt ends
    wait_s: float | None = None  # how long the provider asked to wait (retry-after)
    resets_at: float | None = None  # epoch seconds: when a spent quota comes back
    detail: str = ""
    relayed: bool = False  # agentfile's relay held the request: the CLI never saw it

    def until(self, now: float) -> float | None:
        """Epoch seconds before which asking again is refused, when the provider said."""
        if self.resets_at is not None:
            return self.resets_at
        return now + self.wait_s if self.wait_s is not None else None


@dataclass
class AgentVerdict:
    """How an attempt went, read from the CLI's events and its exit code."""

    ok: bool
    message: str | None = None  # the agent's final message
    error: str | None = None  # why it failed, for the log and the next attempt's prompt
    session: str | None = None
    status: str | None = None  # a more precise status than "failed" (e.g. "over-budget")


class Provider(Protocol):
    name: str
    # Its output is a stream for machines (JSON lines): kept whole in a file beside the
    # log, which gets what parse_line renders of it.
    raw_stream: bool

    def check(self) -> None:
        """Raise UsageError when the CLI cannot run here (not installed), before a build."""

    def state(self, env: Mapping[str, str]) -> list[Path]:
        """The folders where its CLI keeps its own state outside the workspace (settings,
        sessions, credentials, in the home directory of `env`): writable in a sandbox, so
        that it works, and created first when missing, as the CLI would."""

    def command(self, request: AgentRequest) -> AgentCommand: ...

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        """Read one line of the CLI's output while it runs (usage, session, result), and
        return what a person reads of it: the agent's words, one line per tool call, [] for
        what is only for machines."""

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        """Called ten times a second: read usage the CLI writes elsewhere than stdout."""

    def rate_limit(self, line: str) -> RateLimit | None:
        """Whether one line of the CLI's output says the provider refused for its own sake."""

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        """The variable naming the API's base URL and the URL the CLI would call with `env`,
        when agentfile may relay its requests (agents/relay.py): an API key's, never a
        subscription login's. None: the CLI calls its API itself."""

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict: ...
