#!/usr/bin/env python3
"""A tiny, deterministic stand-in for a coding agent, so the quickstart runs offline.

Usage: python3 demo_agent.py PROMPT_FILE   (or set AGENTFILE_PROMPT_FILE)

The agent does exactly what its prompt spells out, line by line; everything else in the
prompt (prose, context, a retry note) is ignored:

    FILE: out/greeting.txt      start writing this file (relative to the current directory)
    CONTENT: Hello, world!      one line of that file; repeat for more lines
    WAIT: 0.5                   sleep this many seconds (to make parallel runs visible)

Each FILE is written as a whole (so running twice gives the same result). The final message
("Wrote out/greeting.txt (1 line)") goes to stdout and to $AGENTFILE_RESULT_FILE; usage
goes to $AGENTFILE_USAGE_FILE as JSON, with tokens estimated from word counts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

PRICE_IN, PRICE_OUT = 3.00, 15.00  # dollars per million tokens, like a mid-size model


def parse(prompt: str) -> tuple[dict[str, list[str]], float]:
    """The files the prompt asks for (path -> lines), and how long to wait."""
    files: dict[str, list[str]] = {}
    current, wait = None, 0.0
    for raw in prompt.splitlines():
        key, _, value = raw.strip().partition(":")
        value = value.strip()
        if key == "FILE" and value:
            current = value
            files[current] = []
        elif key == "CONTENT" and current is not None:
            files[current].append(value)
        elif key == "WAIT" and value:
            wait = float(value)
    return files, wait


def tokens(text: str) -> int:
    """About 4 tokens for every 3 words."""
    return round(len(text.split()) * 4 / 3)


def main() -> int:
    prompt_path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AGENTFILE_PROMPT_FILE")
    if not prompt_path:
        print("usage: demo_agent.py PROMPT_FILE", file=sys.stderr)
        return 2
    prompt = Path(prompt_path).read_text(encoding="utf-8")
    files, wait = parse(prompt)
    if not files:
        print("demo agent: the prompt has no 'FILE: path' line; nothing to do", file=sys.stderr)
        return 1

    time.sleep(wait)
    written = []
    for path, lines in files.items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(f"{path} ({len(lines)} line{'s' if len(lines) != 1 else ''})")
        print(f"demo agent: wrote {path}")

    message = "Wrote " + ", ".join(written)
    if os.environ.get("AGENTFILE_RESULT_FILE"):
        Path(os.environ["AGENTFILE_RESULT_FILE"]).write_text(message, encoding="utf-8")

    tokens_in = tokens(prompt)
    tokens_out = tokens(message) + sum(tokens(" ".join(lines)) for lines in files.values())
    usage = {
        "cost_usd": round((tokens_in * PRICE_IN + tokens_out * PRICE_OUT) / 1_000_000, 6),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
    }
    if os.environ.get("AGENTFILE_USAGE_FILE"):
        Path(os.environ["AGENTFILE_USAGE_FILE"]).write_text(json.dumps(usage), encoding="utf-8")

    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
