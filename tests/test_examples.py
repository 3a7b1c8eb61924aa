"""Every example loads, and the JSON Schema accepts the YAML form of every example."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import EXAMPLES, ROOT

from agentfile.manifest.load import load, read_document
from agentfile.manifest.render import to_yaml
from agentfile.resources import resource_path

EXAMPLE_DIRS = sorted(p.parent for p in EXAMPLES.glob("*/Agentfile"))


def test_every_pattern_has_an_example() -> None:
    names = {p.name for p in EXAMPLE_DIRS}
    assert {"feature-decomposition", "bugfix-swarm", "refactoring-pipeline",
            "migration-fanout", "writer-reviewer", "dev-stack", "quickstart",
            "branch-per-task", "ordered-migration"} <= names


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_loads(folder: Path) -> None:
    loaded = load(folder / "Agentfile")
    assert loaded.targets


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_schema_validates_yaml_form(folder: Path, tmp_path: Path) -> None:
    source = read_document(folder / "Agentfile")
    assert not source.problems
    text = to_yaml(source.doc, "https://example.invalid/schema.json")
    schema = yaml.safe_load((ROOT / "schema" / "agentfile.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(text), schema)
    # ...and the YAML form, next to the example's files, loads to the same model.
    converted = folder / "Agentfile.test-converted.yaml"
    try:
        converted.write_text(text)
        assert load(converted).manifest == load(folder / "Agentfile").manifest
    finally:
        converted.unlink()


def test_grammar_and_schema_are_shipped() -> None:
    assert resource_path("agentfile.lark").is_file()
    assert resource_path("agentfile.schema.json").is_file()
