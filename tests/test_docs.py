"""The README and docs/ stand alone: their links resolve, they cite no unshipped notes, and the
README's example is a valid Agentfile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, Run, git

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "examples").glob("*/README.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unshipped_references(page: Path) -> None:
    text = page.read_text()
    assert "SPEC" not in text and "§" not in text
    assert not re.search(r"background 00\d|\b00\d's\b", text)


def test_readme_example_checks(tmp_path: Path, agentfile_cli: Run) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## An example", 1)[1].split("```", 2)[1]
    git(tmp_path, "init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "Agentfile").write_text(example.removeprefix("\n"))
    result = agentfile_cli("check", cwd=tmp_path)
    assert result.code == 0, result.out + result.err
