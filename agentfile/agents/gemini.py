"""The `gemini` provider: Gemini CLI, headless (`gemini -p … -o stream-json`).

Observed with Gemini CLI 0.61 against a stand-in API: the last event is `result` with
`status` success or error and `stats` (the run's tokens); assistant `message` events with
`delta: true` are joined into the final message; `error` events are warnings. Exit codes: 0,
the documented 1/42/53/55…, and after an API error the HTTP status & 0xff (e.g. 244 for 500).
Headless runs need `--skip-trust` and `--yolo` (else write tools are not registered, and the
run still "succeeds"), and a model: the default `auto` first asks a classifier.

Rate limits (captured from 0.61, tests/data/gemini/fail-http429.*): the `result` is an error
"[API Error: Resource has been exhausted (e.g. check quota).]" and the exit code 173 (429 &
0xff); while it retries on its own, its stderr says "Attempt N failed with status 429.
Retrying with backoff…", and "Attempt N failed: … Max attempts reached" when it gives up.
A message may name the wait ("Please retry in 35.2s"); a spent daily quota says "exhausted
your daily quota".
"""

from __future__ import annotations

import re
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
    number,
    prose,
    tool_line,
    wait_in,
)

BINARY_VARIABLE = "AGENTFILE_GEMINI"
DEFAULT_MODEL = "gemini-2.5-pro"
EXIT_MEANINGS = {1: "a general or API error", 41: "authentication", 42: "bad input",
                 44: "the sandbox", 52: "configuration", 53: "the turn limit",
                 54: "a fatal tool error", 55: "an untrusted workspace"}
_REFUSED = re.compile(r"Resource has been exhausted|RESOURCE_EXHAUSTED|status 429|"
                      r"rate limit|daily quota|status 503|overloaded", re.IGNORECASE)


def refusal(message: str, *, retrying: bool) -> RateLimit | None:
    """What a Gemini CLI message says of the provider's limits, if anything."""
    if not _REFUSED.search(message):
        return None
    lowered = message.lower()
    reason = ("quota" if "daily quota" in lowered else
              "overloaded" if "503" in message or "overloaded" in lowered else "rate limit")
    return RateLimit(reason, retrying=retrying, wait_s=wait_in(message), detail=message.strip())


def binary() -> str:
    return find_cli("gemini", BINARY_VARIABLE, "`npm install -g @google/gemini-cli`")


class _Attempt:
    def __init__(self) -> None:
        self.session: str | None = None
        self.parts: list[str] = []
        self.result: dict[str, object] | None = None
        self.unsaid = ""  # streamed words not yet shown: the line they are on goes on


class GeminiProvider:
    name = "gemini"
    raw_stream = True

    def __init__(self) -> None:
        self.attempts: dict[str, _Attempt] = {}

    def check(self) -> None:
        binary()

    def state(self, env: Mapping[str, str]) -> list[Path]:
        # Its settings, chats (`--resume`), trusted folders and credentials.
        return [home(env) / ".gemini"]

    def command(self, request: AgentRequest) -> AgentCommand:
        prompt = request.prompt_file.read_text(encoding="utf-8")
        piped = too_long_for_an_argument(prompt)  # without -p, gemini reads it from stdin
        argv = [binary(), *([] if piped else ["-p", prompt]), "-o", "stream-json",
                "-m", request.agent.model or DEFAULT_MODEL, "--skip-trust", "--yolo"]
        if request.session:
            argv += ["--resume", request.session]
        argv += list(request.agent.args)
        self.attempts[str(request.result_file)] = _Attempt()
        return AgentCommand(argv, stdin=request.prompt_file if piped else None)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> list[str]:
        event = json_line(line)
        if event is None:
            return [line]  # not an event: a warning of the CLI's, as it is
        state = self.attempts.setdefault(str(request.result_file), _Attempt())
        kind = event.get("type")
        if kind == "message" and event.get("role") == "assistant":
            content = str(event.get("content") or "")
            if not event.get("delta"):
                state.parts = []
            state.parts.append(content)
            # Words come in pieces: a line is shown once it is whole (or the words end).
            state.unsaid += content if event.get("delta") else content + "\n"
            whole, _, state.unsaid = state.unsaid.rpartition("\n")
            return prose(whole)
        shown = prose(state.unsaid) + readable(event, request.workspace)
        state.unsaid = ""
        if kind == "init":
            state.session = str(event.get("session_id") or "") or None
        elif kind == "result":
            state.result = event
            stats = event.get("stats") or {}
            usage.input_tokens = number(stats.get("input_tokens"))
            usage.output_tokens = number(stats.get("output_tokens"))
        return shown

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        return None

    def api(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        return None  # not relayed: see docs/rate-limits.md

    def rate_limit(self, line: str) -> RateLimit | None:
        if line.startswith("Attempt ") and " failed" in line:  # its retries, on stderr
            return refusal(line, retrying="Retrying" in line)
        if '"result"' not in line:
            return None
        event = json_line(line)
        if event is None or event.get("type") != "result" or event.get("status") != "error":
            return None
        error = event.get("error")
        return refusal(str(error.get("message") or ""), retrying=False) \
            if isinstance(error, dict) else None

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        state = self.attempts.pop(str(request.result_file), _Attempt())
        message = "".join(state.parts) or None
        session = state.session or request.session
        result = state.result
        if exit_code == 0 and result is not None and result.get("status") == "success":
            return AgentVerdict(True, message, None, session)
        error = result.get("error") if result else None
        if isinstance(error, dict) and error.get("message"):
            why = str(error["message"])
        elif exit_code in EXIT_MEANINGS:
            why = f"exit {exit_code}: {EXIT_MEANINGS[exit_code]}"
        else:
            why = f"exit {exit_code} without a successful result"
        return AgentVerdict(False, message, f"Gemini CLI reported an error: {why}", session)


# Gemini CLI's tools by the names Claude Code gives the same ones: one vocabulary in logs.
_TOOLS = {"write_file": "Write", "replace": "Edit", "run_shell_command": "Bash",
          "read_file": "Read", "read_many_files": "Read", "glob": "Glob",
          "search_file_content": "Grep", "list_directory": "List", "web_fetch": "WebFetch",
          "google_web_search": "WebSearch", "save_memory": "Memory"}


def readable(event: dict[str, Any], workspace: Path) -> list[str]:
    """What a person reads of one stream-json event besides the assistant's words (which
    come in pieces, joined by the provider): a line per tool call, errors, how it ended."""
    kind = event.get("type")
    if kind == "init":
        return [f"Gemini CLI session {event.get('session_id')} ({event.get('model')})"]
    if kind == "tool_use":
        name = str(event.get("tool_name") or "tool")
        return [tool_line(_TOOLS.get(name, name),
                          first_of(event.get("parameters"), SHOWN_ARGUMENTS), workspace)]
    error = mapping(event.get("error"))
    if kind == "tool_result" and event.get("status") == "error":
        return ["  " + tool_line("error:", error.get("message") or "the tool failed")]
    if kind == "error":
        return [f"warning: {event.get('message')}"]
    if kind == "result" and event.get("status") != "success":
        return [f"error: {error.get('message') or 'the run failed'}"]
    return []
