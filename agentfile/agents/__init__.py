"""Agent providers, one module each, behind one protocol (`base.Provider`)."""

from __future__ import annotations

from agentfile.agents.aider import AiderProvider
from agentfile.agents.base import Provider
from agentfile.agents.claude import ClaudeProvider
from agentfile.agents.codex import CodexProvider
from agentfile.agents.command import CommandProvider
from agentfile.agents.gemini import GeminiProvider
from agentfile.errors import UsageError

_PROVIDERS: dict[str, Provider] = {
    "command": CommandProvider(),
    "claude": ClaudeProvider(),
    "codex": CodexProvider(),
    "gemini": GeminiProvider(),
    "aider": AiderProvider(),
}


def provider(name: str) -> Provider:
    """The provider called `name`; a clear error for one this version cannot run."""
    found = _PROVIDERS.get(name)
    if found is None:
        raise UsageError(f"the {name} provider cannot run in this version of agentfile "
                         f"(available: {', '.join(sorted(_PROVIDERS))})")
    return found


def available() -> list[str]:
    return sorted(_PROVIDERS)
