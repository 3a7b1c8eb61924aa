"""The one JSON Schema and the pydantic model, as checks that speak the user's language.

`schema_document()` generates the committed `schema/agentfile.schema.json` from the model.
`validate()` runs a lowered document through jsonschema, then pydantic, and turns every error
into a Problem at the line of the offending key, with a suggestion for a misspelt name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema_rs
from pydantic import ValidationError

from agentfile import quantities as q

if TYPE_CHECKING:
    import jsonschema
from agentfile.errors import Problem, suggest
from agentfile.manifest.expand import span_for
from agentfile.manifest.lower import KeyPath, SpanTable
from agentfile.manifest.model import (
    IDENTIFIER_PATTERN,
    PROVIDERS,
    TARGET_NAME_PATTERN,
    VARIABLE_PATTERN,
    Manifest,
)
from agentfile.resources import resource_path

# A reference relative to wherever the schema is read from: the file names itself, whether in
# schema/ of this repository or copied to .agentfile/ by `agentfile convert`.
SCHEMA_ID = "agentfile.schema.json"
_PATTERN_PARSERS: dict[str, Callable[[str], object]] = {
    q.DURATION_PATTERN: q.parse_duration,
    q.SIZE_PATTERN: q.parse_size,
    q.PERCENT_PATTERN: q.parse_percent,
}
_NOUNS = {"targets": "target attribute", "agents": "agent attribute", "options": "option"}


def schema_document() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the data form, generated from the model."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["properties"]["$schema"] = {"type": "string",
                                       "description": "the schema this file follows"}
    # pydantic checks dictionary keys but does not write them into the schema; editors
    # should see the same rule.
    for key, pattern in (("targets", TARGET_NAME_PATTERN), ("agents", IDENTIFIER_PATTERN),
                         ("vars", VARIABLE_PATTERN)):
        schema["properties"][key]["propertyNames"] = {"pattern": pattern}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Agentfile",
        "description": "An agentfile manifest in data form (YAML or JSON). "
                       "Generated from agentfile.manifest.model; do not edit by hand.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(schema_document(), indent=2, ensure_ascii=False) + "\n"


def shipped_schema_text() -> str:
    """The committed schema's text, without generating it (pydantic takes 40 ms)."""
    try:
        return resource_path(SCHEMA_ID).read_text("utf-8")
    except OSError:
        return schema_text()


@functools.cache
def shipped_schema() -> dict[str, Any]:
    """The committed schema, as shipped: the same document schema_document() generates (a
    test fails when they drift), read in a millisecond where pydantic takes forty to write
    it, at every start of agentfile."""
    try:
        document = json.loads(resource_path("agentfile.schema.json").read_text("utf-8"))
    except (OSError, ValueError):
        return schema_document()
    return document if isinstance(document, dict) else schema_document()


@functools.cache
def _fast_validator() -> Any:
    """jsonschema-rs: the same schema, checked in Rust; the Python validator only runs to
    explain a document this one rejected."""
    return jsonschema_rs.validator_for(shipped_schema())


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema  # only to explain a rejected document: it loads in 40 ms

    schema = shipped_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate(doc: dict[str, Any], spans: SpanTable) -> tuple[Manifest | None, list[Problem]]:
    """Schema first, then the model; every problem found, or the model."""
    data = {k: v for k, v in doc.items() if k != "$schema"}
    problems = [] if _fast_validator().is_valid(data) else [
        Problem(span_for(spans, _where(leaf)), _schema_message(leaf))
        for err in _validator().iter_errors(data)
        for leaf in _leaf_errors(err)
    ]
    if problems:
        return None, problems
    try:
        return Manifest.model_validate(data), []
    except ValidationError as err:
        return None, [Problem(span_for(spans, tuple(e["loc"])), _model_message(e))
                      for e in err.errors()]


def _rule(err: jsonschema.ValidationError) -> Any:
    """The value of the failed keyword (jsonschema types it loosely)."""
    return err.validator_value


def _schema_of(err: jsonschema.ValidationError) -> dict[str, Any]:
    return err.schema if isinstance(err.schema, dict) else {}


def _branch_matches(branch: Any, instance: Any) -> bool:
    if not isinstance(branch, dict):
        return False
    if "$ref" in branch:
        return isinstance(instance, dict)
    kinds = branch.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks = {"string": str, "object": dict, "array": list, "boolean": bool,
              "null": type(None)}
    for kind in kinds:
        if kind in ("number", "integer"):
            if isinstance(instance, int | float) and not isinstance(instance, bool):
                return True
        elif kind in checks and isinstance(instance, checks[kind]):
            return True
    return False


def _leaf_errors(err: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For `anyOf` errors, the errors of the one branch meant for this kind of value
    (an optional table's fields, a duration's pattern), so each is reported at its key."""
    if err.validator not in ("anyOf", "oneOf") or not err.context:
        return [err]
    fitting = [i for i, b in enumerate(_rule(err)) if _branch_matches(b, err.instance)]
    if len(fitting) != 1:
        return [err]
    inner = [c for c in err.context if c.relative_schema_path[0] == fitting[0]]
    return [leaf for c in inner for leaf in _leaf_errors(c)] or [err]


def _where(err: jsonschema.ValidationError) -> KeyPath:
    path = tuple(err.absolute_path)
    if "propertyNames" in err.schema_path:
        return (*path, str(err.instance))
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        extra = _unexpected(err)
        if extra:
            return (*path, extra[0])
    return path


def _unexpected(err: jsonschema.ValidationError) -> list[str]:
    allowed = set(_schema_of(err).get("properties", {}))
    instance = err.instance if isinstance(err.instance, dict) else {}
    return [k for k in instance if k not in allowed]


def _noun(path: KeyPath) -> str:
    if not path:
        return "top-level key"
    if len(path) >= 2 and path[0] in ("targets", "agents") and len(path) == 2:
        return _NOUNS[str(path[0])]
    if len(path) == 1 and path[0] == "options":
        return "option"
    return f"key in {path[-1]}"


def _key(path: KeyPath) -> str:
    """The name a message speaks of: the last key, not a list index."""
    return next((str(k) for k in reversed(path) if isinstance(k, str)), "manifest")


def _schema_message(err: jsonschema.ValidationError) -> str:
    path = tuple(err.absolute_path)
    key = _key(path)
    if err.validator == "additionalProperties":
        extra = _unexpected(err)
        allowed = _schema_of(err).get("properties", {})
        return "; ".join(f"unknown {_noun(path)} '{name}'{suggest(name, allowed)}"
                         for name in extra)
    if "propertyNames" in err.schema_path:
        return _bad_name(str(err.instance), str(path[0]) if len(path) == 1 else "")
    if err.validator == "enum":
        choices = [str(c) for c in _rule(err)]
        what = "provider" if key == "provider" else key
        return (f"unknown {what} '{err.instance}'{suggest(str(err.instance), choices)}"
                f" (one of: {', '.join(choices)})")
    if err.validator in ("anyOf", "oneOf"):
        return _any_of_message(key, err)
    if err.validator == "pattern":
        parser = _PATTERN_PARSERS.get(str(_rule(err)))
        if parser is not None:
            try:
                parser(str(err.instance))
            except ValueError as bad:
                return str(bad)
        if path and path[0] in ("targets", "agents", "vars") and len(path) == 2:
            return f"'{err.instance}' is not a valid name"
        return f"{key}: {json.dumps(err.instance)} is not of the expected form"
    if err.validator == "type":
        return f"{key} should be {_type_words(_rule(err))}, not {_json_kind(err.instance)}"
    if err.validator == "required":
        return f"{key}: {err.message}"
    return f"{key}: {err.message}"


def _bad_name(name: str, section: str) -> str:
    allowed = {"targets": "letters, digits, _ - . / and {var}",
               "agents": "letters, digits, _ and -, not starting with a digit",
               "vars": "letters, digits and _, not starting with a digit"}.get(section, "")
    return f"'{name}' is not a valid name" + (f" ({allowed})" if allowed else "")


def _any_of_message(key: str, err: jsonschema.ValidationError) -> str:
    if key == "isolation":
        return (f"isolation {json.dumps(err.instance)} is not worktree, branch, none "
                'or dir("path")')
    if key == "prompt":
        return 'prompt should be a string or file("path")'
    # The branch meant for this kind of value says what is wrong with it.
    specific = [c for c in err.context or [] if c.validator not in ("type", "const")
                and len(c.relative_schema_path) >= 2]
    if specific:
        best = min(specific, key=lambda c: len(c.absolute_path))
        return _schema_message(best) if best.validator != "anyOf" else best.message
    types = []
    for branch in _rule(err):
        branch_type = branch.get("type") if isinstance(branch, dict) else None
        if branch_type and branch_type != "null":
            types.append(_type_words(branch_type))
        elif isinstance(branch, dict) and "$ref" in branch:
            types.append("a table of settings")
        elif isinstance(branch, dict) and "enum" in branch:
            types.append(" or ".join(str(v) for v in branch["enum"]))
    return f"{key} should be {' or '.join(dict.fromkeys(types))}, not {_json_kind(err.instance)}"


def _type_words(kind: Any) -> str:
    if isinstance(kind, list):
        return " or ".join(_type_words(k) for k in kind)
    return {"string": "a string", "number": "a number", "integer": "a whole number",
            "boolean": "true or false", "array": "a list", "object": "a table of settings",
            "null": "empty"}.get(str(kind), str(kind))


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    return "a table of settings" if isinstance(value, dict) else "empty"


def _model_message(error: Any) -> str:
    loc = tuple(error["loc"])
    key = _key(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if "[key]" in loc:  # a key's own check says why; else the name's form is wrong
        if error["type"] == "value_error":
            return message
        return _bad_name(str(error["input"]), str(loc[0]) if loc.index("[key]") == 1 else "")
    if error["type"] == "literal_error" and key == "provider":
        return f"unknown provider '{error['input']}'{suggest(str(error['input']), PROVIDERS)}"
    return f"{key}: {message}" if loc else message

