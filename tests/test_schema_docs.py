"""The schema documents itself: every property described, examples valid, the reference page
generated from the same descriptions, and `$id`/`$schema` paths that resolve."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import ROOT, Run

from agentfile.manifest.reference import markdown

SCHEMA_FILE = ROOT / "schema" / "agentfile.schema.json"


def _schema() -> dict[str, Any]:
    document = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(document, dict)
    return document


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, schema) of a property anywhere in the schema, `$defs` included."""
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}".lstrip("."), sub
        for key, sub in node.items():
            inner = where if key in ("properties", "$defs", "anyOf", "items") else \
                f"{where}.{key}".lstrip(".")
            if key == "$defs":
                for name, definition in sub.items():
                    yield from _properties(definition, name)
            elif key == "properties":
                for name, definition in sub.items():
                    yield from _properties(definition, f"{inner}.{name}".lstrip("."))
            else:
                yield from _properties(sub, inner)
    elif isinstance(node, list):
        for sub in node:
            yield from _properties(sub, where)


def test_every_schema_property_has_a_description() -> None:
    missing = sorted({path for path, sub in _properties(_schema())
                      if not str(sub.get("description", "")).strip()})
    assert not missing, (
        f"schema properties without a description: {', '.join(missing)} — give each a "
        "Field(description=...) in agentfile/manifest/model.py, then run "
        "`agentfile schema -o schema/agentfile.schema.json`")


def test_the_walk_finds_every_model_field() -> None:
    found = {path for path, _ in _properties(_schema())}
    assert {"Target.prompt", "Options.throttle", "Budget.usd", "Foreach.list",
            "targets", "$schema"} <= found


def test_every_example_is_valid_for_its_property() -> None:
    schema = _schema()
    checked = 0
    for path, sub in _properties(schema):
        for example in sub.get("examples", []):
            standalone = {"$defs": schema["$defs"], **sub}
            errors = [e.message for e in jsonschema.Draft202012Validator(standalone)
                      .iter_errors(example)]
            assert not errors, f"{path}: example {example!r} is invalid: {errors}"
            checked += 1
    assert checked > 40


def test_attribute_reference_is_generated_from_the_model() -> None:
    page = ROOT / "docs" / "attributes.md"
    assert page.read_text() == markdown(), (
        "docs/attributes.md drifted from the model's descriptions: regenerate it with "
        "`python -m agentfile.manifest.reference > docs/attributes.md`")
    assert "| `prompt` |" in page.read_text()


def test_schema_id_and_catalog_resolve_to_the_schema() -> None:
    schema = _schema()
    assert (SCHEMA_FILE.parent / schema["$id"]).resolve() == SCHEMA_FILE.resolve()
    catalog = json.loads((ROOT / "schema" / "catalog.json").read_text())
    for entry in catalog["schemas"]:
        assert (ROOT / "schema" / entry["url"]).resolve() == SCHEMA_FILE.resolve()


@pytest.mark.parametrize("form", ["yaml", "json"])
def test_converted_manifest_names_a_schema_that_exists(repo: Path, agentfile_cli: Run,
                                                       form: str) -> None:
    (repo / "Agentfile").write_text('hello:\n    run = "echo hi"\n')
    (repo / "conf").mkdir()
    out = repo / "conf" / f"Agentfile.{form}"
    result = agentfile_cli("convert", "Agentfile", "--to", form, "-o", str(out), cwd=repo)
    assert result.code == 0, result.err
    text = out.read_text()
    if form == "yaml":
        found = re.match(r"# yaml-language-server: \$schema=(\S+)\n", text)
        assert found is not None, text
        reference = found.group(1)
    else:
        reference = json.loads(text)["$schema"]
    assert reference == "../.agentfile/agentfile.schema.json"
    # Editors resolve the path against the converted file's folder.
    written = (out.parent / reference).resolve()
    assert json.loads(written.read_text()) == _schema()
    assert agentfile_cli("check", "-f", str(out), cwd=repo).code == 0
