"""The data-form document -> text: YAML, JSON, or the Agentfile language (for `convert`).

Rendering works on the document as written (variables and includes kept), so converting and
loading the result gives the same model as loading the original.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from agentfile import quantities as q
from agentfile.manifest.model import IDENTIFIER_PATTERN

_BARE_NAME = re.compile(IDENTIFIER_PATTERN)
_KEYWORDS = {"true", "false", "include", "foreach", "in"}
_SCHEMA_COMMENT = "# yaml-language-server: $schema={url}\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so prompts stay readable."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(doc: dict[str, Any], schema_url: str) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return _SCHEMA_COMMENT.format(url=schema_url) + body


def to_json(doc: dict[str, Any], schema_url: str) -> str:
    return json.dumps({"$schema": schema_url, **doc}, indent=2, ensure_ascii=False) + "\n"


def to_agentfile(doc: dict[str, Any]) -> str:
    out: list[str] = []
    for path in doc.get("include", []):
        out.append(f"include {_string(path)}")
    if out:
        out.append("")
    for name, value in doc.get("vars", {}).items():
        out.append(f"{name} = {_value(value)}")
    if doc.get("vars"):
        out.append("")
    options = _attributes(doc.get("options") or {})
    if options:
        out += ["options:", *options, ""]
    for name, agent in doc.get("agents", {}).items():
        fields = {k: v for k, v in agent.items() if k != "provider"}
        out.append(f"agent {name}: {agent['provider']}")
        out += _attributes(fields)
        out.append("")
    for name, target in doc.get("targets", {}).items():
        deps = " ".join(target.get("deps", []))
        out.append(f"{name}:" + (f" {deps}" if deps else ""))
        fields = {k: v for k, v in target.items() if k != "deps"}
        if "foreach" in fields:
            out.append(f"    {_foreach(fields.pop('foreach'))}")
        out += _attributes(fields)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _attributes(fields: dict[str, Any], indent: str = "    ") -> list[str]:
    lines: list[str] = []
    for key, value in fields.items():
        if value is None or (isinstance(value, dict) and not value and key in (*_TYPED, "env")):
            continue  # an empty table says nothing (and `env:` alone would not parse)
        if key == "env" and isinstance(value, dict) and all(
                _BARE_NAME.fullmatch(k) and k not in _KEYWORDS for k in value):
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}    {k} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, dict) and key in _TYPED:
            lines.append(f"{indent}{key} = {_TYPED[key](value)}")
        else:
            lines.append(f"{indent}{key} = {_value(value, indent)}")
    return lines


def _foreach(spec: dict[str, Any]) -> str:
    var = spec["var"]
    if "glob" in spec:
        return f"foreach {var} in glob({_string(spec['glob'])})"
    if "lines" in spec:
        return f"foreach {var} in lines({_string(spec['lines'])})"
    return f"foreach {var} in {_value(spec['list'])}"


def _string(text: str, indent: str = "    ") -> str:
    if "\n" in text and text.strip() and _fits_long_string(text):
        lines = text.split("\n")
        if text.endswith("\n"):
            lines = lines[:-1]
        body = "\n".join(f"{indent}    {ln}" if ln else "" for ln in lines)
        closing = f"\n{indent}    " + '"""' if text.endswith("\n") else '"""'
        return f'"""\n{body}{closing}'
    return json.dumps(text, ensure_ascii=False)


def _fits_long_string(text: str) -> bool:
    """Whether a triple-quoted block gives this text back exactly (it has no escapes)."""
    if '"""' in text or text.endswith('"') or "\\" in text:
        return False
    lines = text.split("\n")
    first, last = lines[0], lines[-1]
    if not first.strip() or (last and not last.strip()):
        return False  # a blank first line or a blank last line is dropped by the dedent
    if not any(ln.strip() and not ln.startswith(" ") for ln in lines):
        return False  # indentation every line shares would be cut by the dedent too
    return all(c == "\n" or (c.isprintable() and c != "\t") for c in text)


def _value(value: Any, indent: str = "    ") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return q.format_number(value)
    if isinstance(value, str):
        if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
            return value
        return _string(value, indent)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if len(value) == 1:
            (func, arg), = value.items()
            if func in ("file", "glob", "lines", "dir") and isinstance(arg, str):
                return f"{func}({_string(arg)})"
        entries = ", ".join(
            f"{k if _BARE_NAME.fullmatch(k) and k not in _KEYWORDS else json.dumps(k)}"
            f" = {_value(v)}" for k, v in value.items())
        return "{" + entries + "}"
    return json.dumps(value)


def _quantity(value: Any, fmt: Any, parse: Any = None) -> str:
    if isinstance(value, str):
        if parse is not None:
            parse(value)
        return value.strip()
    return str(fmt(value))


def _budget(value: dict[str, Any]) -> str:
    parts = []
    if value.get("usd") is not None:
        parts.append(_money(value["usd"]))
    if value.get("time") is not None:
        parts.append(_quantity(value["time"], q.format_duration))
    if value.get("memory") is not None:
        parts.append(_quantity(value["memory"], q.format_size))
    if value.get("tokens") is not None:
        parts.append(f"{value['tokens']} tokens")
    return ", ".join(parts)


def _money(value: Any) -> str:
    return value.strip() if isinstance(value, str) else q.format_money(float(value))


def _percent(value: Any) -> str:
    return value.strip() if isinstance(value, str) else f"{q.format_number(value)}%"


def _throttle(value: dict[str, Any]) -> str:
    parts = []
    if value.get("memory") is not None:
        parts.append(f"memory {_percent(value['memory'])}")
    if value.get("load") is not None:
        load = q.plain_decimal(float(value["load"]))
        parts.append(f"load {load if '.' in load else load + '.0'}")  # a float, read back
    if value.get("free") is not None:
        parts.append(f"free {_quantity(value['free'], q.format_size)}")
    return ", ".join(parts)


def _daily(value: dict[str, Any]) -> str:
    parts = [_money(value["usd"])]
    if value.get("alert") is not None:
        parts.append(f"alert {_percent(value['alert'])}")
    return ", ".join(parts)


def _price(value: dict[str, Any]) -> str:
    return (f"{_money(value['input'])}/Mtok in, "
            f"{_money(value['output'])}/Mtok out")


_TYPED: dict[str, Any] = {
    "budget": _budget,
    "throttle": _throttle,
    "daily_budget": _daily,
    "price": _price,
}
