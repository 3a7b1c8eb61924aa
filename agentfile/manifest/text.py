"""Rules on the text of an Agentfile that both of its readers apply (the hand-written fast
path in fastparse.py and lark in parse.py): string escapes, `\"\"\"` blocks, and the
characters no manifest may hold."""

from __future__ import annotations

import re

from agentfile.errors import ManifestError, Problem, Span

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\", "/": "/",
            "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)

TAB_INDENT = re.compile(r"^ *\t", re.MULTILINE)
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def unescape(raw: str, span: Span) -> str:
    """Decode the JSON-style escapes of a quoted string's body."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u") and len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise ManifestError([Problem(span, f"unknown escape '\\{code}' in a string")])

    if "\\" not in raw:
        return raw
    text = _ESCAPE_RE.sub(one, raw)
    if _SURROGATE.search(text):
        # A pair of escapes (\ud83d\ude00) is one character; a surrogate alone is none,
        # and no file, terminal or process argument can hold it.
        try:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            raise ManifestError([Problem(span, "a \\u escape of half a surrogate pair "
                                         "(\\ud800 to \\udfff) is no character: write "
                                         "the character, or both halves")]) from None
    return text


def dedent_block(raw: str) -> str:
    """The body of a `\"\"\"` string as written: first newline dropped, common indentation
    removed (before its escapes are decoded: a `\n` in it is not a line of its own)."""
    lines = raw.split("\n")
    if lines and not lines[0].strip():
        lines = lines[1:]
    if lines and not lines[-1].strip():
        lines[-1] = ""
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
    cut = min(indents, default=0)
    return "\n".join(ln[cut:] for ln in lines)


def indented_start(text: str, path: str) -> list[Problem]:
    """The file's first statement indented: there is no target above it for it to belong
    to (both readers would take `    run = "x"` for a variable of the file)."""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" "):
            return []
        return [Problem(Span(path, number, len(line) - len(line.lstrip(" ")) + 1),
                        "an indented line before any target: indentation puts an attribute "
                        "in the target above it, and there is none (write `NAME:` above it, "
                        "or start a variable at the line's first column)")]
    return []
