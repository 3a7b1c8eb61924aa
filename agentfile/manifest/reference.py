"""The manifest's reference, read from the model's field descriptions: one source for the
JSON Schema, the language server's hover text and `docs/attributes.md`.

`python -m agentfile.manifest.reference > docs/attributes.md` writes the page; a test fails
when it drifts from the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agentfile.manifest.model import (
    Agent,
    Budget,
    DailyBudget,
    Foreach,
    Manifest,
    Options,
    Price,
    Target,
    Throttle,
)

# Each block of the manifest and the model of its attributes, in the order the page shows.
BLOCKS: dict[str, type[BaseModel]] = {
    "targets": Target,
    "agents": Agent,
    "options": Options,
    "budget": Budget,
    "daily_budget": DailyBudget,
    "throttle": Throttle,
    "price": Price,
    "foreach": Foreach,
    "top level": Manifest,
}
_TITLES = {
    "targets": "Target attributes (`NAME: DEPENDENCIES`, `targets:`)",
    "agents": "Agent attributes (`agent NAME: PROVIDER`, `agents:`)",
    "options": "Options (`options:`)",
    "budget": "`budget` (of a target or of `options`)",
    "daily_budget": "`options.daily_budget`",
    "throttle": "`options.throttle`",
    "price": "An agent's `price`",
    "foreach": "A target's `foreach`",
    "top level": "The top level of the data form",
}

# The words some attributes take, and what each means: hover text and the page's last table.
VALUES: dict[str, dict[str, str]] = {
    "provider": {
        "claude": "Claude Code: `claude -p PROMPT --output-format stream-json`; its own cost "
                  "report counts.",
        "codex": "Codex CLI: `codex exec --json`; tokens × `price` count.",
        "gemini": "Gemini CLI: `gemini -p PROMPT -o stream-json`; tokens × `price` count.",
        "aider": "aider: `aider --message-file PROMPT --yes-always`; its analytics log's cost "
                 "counts.",
        "command": "Any program: the agent's `command` through the shell, `{prompt_file}` "
                   "naming the prompt; success is exit 0.",
    },
    "isolation": {
        "worktree": "Its own git worktree and branch, from the build's integration branch; "
                    "its work is committed and merged, dependencies first.",
        "branch": "The main checkout, switched to its own branch (one such target at a time); "
                  "merged like a worktree's.",
        "none": "The repository root, as it is; what it changes stays.",
        "dir": "`dir(\"path\")`: that directory of the checkout; a change outside it ends the "
               "target as `violation`.",
    },
    "merge": {
        "auto": "Merge into the build's integration branch and fast-forward your branch when "
                "every merge was clean (the default).",
        "manual": "Merge into the integration branch; landing it is yours to do.",
        "none": "Merge nothing: every target's branch stays for review.",
    },
    "terminal": {
        "tmux": "In a window of the build's tmux session (`agentfile attach` to watch).",
        "headless": "Without a terminal, output to its log (the default).",
    },
}


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute as a reader meets it: its name as written, and what the model says."""

    name: str
    description: str
    examples: tuple[Any, ...]


def attributes(block: str) -> tuple[Attribute, ...]:
    """The attributes of a block (`targets`, `agents`, `options`, `budget`, ...)."""
    model = BLOCKS[block]
    return tuple(Attribute(field.alias or name, field.description or "",
                           tuple(field.examples or ()))
                 for name, field in model.model_fields.items())


def attribute(block: str, name: str) -> Attribute | None:
    """One attribute of a block by the name written in the manifest, else None."""
    if block not in BLOCKS:
        return None
    return next((a for a in attributes(block) if a.name == name), None)


def example_text(value: Any) -> str:
    """An example as the data form writes it: JSON, a string bare."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def markdown() -> str:
    """docs/attributes.md: one table per block."""
    lines = ["# Attributes", "",
             "Every attribute of a manifest, in both forms: `name = value` in an `Agentfile`, "
             "`name: value` in YAML/JSON. Generated from the model by "
             "`python -m agentfile.manifest.reference` (the JSON Schema and the language "
             "server's hover text say the same); examples are in the data form.", ""]
    for block in BLOCKS:
        lines += [f"## {_TITLES[block]}", "", "| name | what it is | example |",
                  "| --- | --- | --- |"]
        for entry in attributes(block):
            example = "; ".join(f"`{example_text(e)}`" for e in entry.examples)
            cells = (f"`{entry.name}`", entry.description, example)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += ["## Values", "", "| attribute | value | means |", "| --- | --- | --- |"]
    for name, words in VALUES.items():
        lines += [f"| `{name}` | `{word}` | {text} |" for word, text in words.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
