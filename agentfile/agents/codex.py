"""The `codex` provider: Codex CLI, headless (`codex exec --json`).

Observed with codex-cli 0.169 against a stand-in Responses API: success is exit 0 and a
`turn.completed` event; failure is `turn.failed` (an `error` event alone may be a
"Reconnecting…" notice). Usage arrives only in `turn.completed.usage`, summed over the run's
model calls, and on `codex exec resume` it is the whole thread's total, so the tokens already
counted for that thread are subtracted. Codex reports no cost: dollars are tokens x `price`.
"""

from __future__ import annotations

from agentfile.agents.base import (
    AgentCommand,
    AgentRequest,
    AgentVerdict,
    Usage,
    too_long_for_an_argument,
)
from agentfile.agents.events import find_cli, json_line, number

BINARY_VARIABLE = "AGENTFILE_CODEX"


def binary() -> str:
    return find_cli("codex", BINARY_VARIABLE, "`npm install -g @openai/codex`")


class _Attempt:
    def __init__(self) -> None:
        self.thread: str | None = None
        self.message: str | None = None
        self.completed = False
        self.failure: str | None = None


class CodexProvider:
    name = "codex"

    def __init__(self) -> None:
        self.attempts: dict[str, _Attempt] = {}
        self.thread_tokens: dict[str, tuple[int, int]] = {}  # counted so far, per thread

    def check(self) -> None:
        binary()

    def command(self, request: AgentRequest) -> AgentCommand:
        prompt = request.prompt_file.read_text(encoding="utf-8")
        if request.session:
            argv = [binary(), "exec", "resume", "--json", "--skip-git-repo-check",
                    "-c", 'sandbox_mode="workspace-write"']
        else:
            argv = [binary(), "exec", "--json", "--skip-git-repo-check",
                    "--sandbox", "workspace-write"]
        if request.agent.model:
            argv += ["--model", request.agent.model]
        argv += list(request.agent.args)
        piped = too_long_for_an_argument(prompt)  # `-`: codex reads it from stdin
        given = "-" if piped else prompt
        argv += [request.session, given] if request.session else [given]
        self.attempts[str(request.result_file)] = _Attempt()
        return AgentCommand(argv, stdin=request.prompt_file if piped else None)

    def parse_line(self, line: str, usage: Usage, request: AgentRequest) -> None:
        event = json_line(line)
        if event is None:
            return
        state = self.attempts.setdefault(str(request.result_file), _Attempt())
        kind = event.get("type")
        if kind == "thread.started":
            state.thread = str(event.get("thread_id") or "") or None
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                state.message = item["text"]
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

    def poll(self, request: AgentRequest, usage: Usage) -> None:
        return None

    def verdict(self, request: AgentRequest, exit_code: int | None,
                tail: list[str]) -> AgentVerdict:
        state = self.attempts.pop(str(request.result_file), _Attempt())
        session = state.thread or request.session
        if exit_code == 0 and state.completed and state.failure is None:
            return AgentVerdict(True, state.message, None, session)
        why = state.failure or (f"Codex ended (exit {exit_code}) without completing its turn")
        return AgentVerdict(False, state.message, f"Codex reported an error: {why}", session)
