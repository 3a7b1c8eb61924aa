"""Golden tests for bad manifests (SPEC section 4).

Each file `tests/data/bad/NN-name.EXT` is one bad manifest; `tests/data/bad/expected.json`
lists the problems a user should get for it as `[line, column, message substring]` (with a
fourth element, a path relative to the folder, for a problem in another file) and, when
given, how many problems there are in all. Files in subfolders are only helpers (includes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentfile.errors import ManifestError, Problem
from agentfile.manifest.load import load

BAD = Path(__file__).resolve().parent / "data" / "bad"
EXPECTED_FILE = BAD / "expected.json"
CASE_NAME = re.compile(r"^\d\d-[a-z0-9-]+\.(agentfile|yaml|json)$")
CARET_LINE = re.compile(r"^\s*\^~*$")


@dataclass(frozen=True)
class ExpectedProblem:
    line: int
    column: int
    text: str
    # A path relative to BAD for a problem reported in another file (an include).
    other_file: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    problems: tuple[ExpectedProblem, ...]
    count: int | None
    copy_to_repo: bool


def _expected_problem(raw: Any) -> ExpectedProblem:
    assert isinstance(raw, list) and len(raw) in (3, 4), raw
    line, column, text = raw[0], raw[1], raw[2]
    assert isinstance(line, int) and isinstance(column, int) and isinstance(text, str), raw
    other = raw[3] if len(raw) == 4 else None
    assert other is None or isinstance(other, str), raw
    return ExpectedProblem(line, column, text, other)


def _load_cases() -> dict[str, Case]:
    raw = json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    cases: dict[str, Case] = {}
    for name, entry in raw.items():
        if name.startswith("$"):
            continue
        assert isinstance(entry, dict), name
        count = entry.get("count")
        assert count is None or isinstance(count, int), name
        problems = tuple(_expected_problem(p) for p in entry["problems"])
        assert problems, f"{name}: no expected problems"
        cases[name] = Case(name, problems, count, bool(entry.get("copy_to_repo", False)))
    return cases


CASES = _load_cases()
CASE_FILES = sorted(p.name for p in BAD.iterdir() if p.is_file() and CASE_NAME.match(p.name))


def _describe(problems: list[Problem]) -> str:
    return "\n".join(f"  {p.span.path}:{p.span.line}:{p.span.column}: {p.message}"
                     for p in problems)


def _same_file(reported: str, wanted: Path) -> bool:
    return Path(reported).resolve() == wanted.resolve()


def _matches(problem: Problem, expected: ExpectedProblem, main_file: Path) -> bool:
    wanted_file = BAD / expected.other_file if expected.other_file else main_file
    return (_same_file(problem.span.path, wanted_file)
            and problem.span.line == expected.line
            and problem.span.column == expected.column
            and expected.text in problem.message)


def _init_repo(path: Path) -> None:
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True,
                   capture_output=True)


def test_every_case_has_expectations() -> None:
    assert len(CASE_FILES) >= 35
    assert sorted(CASES) == CASE_FILES
    data_form = [name for name in CASE_FILES if not name.endswith(".agentfile")]
    assert len(data_form) >= 8


@pytest.mark.parametrize("name", CASE_FILES)
def test_bad_manifest(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = BAD / name
    if case.copy_to_repo:
        repo = tmp_path / "repo"
        _init_repo(repo)
        path = repo / "Agentfile"
        shutil.copyfile(BAD / name, path)

    with pytest.raises(ManifestError) as info:
        load(path)
    problems = info.value.problems

    assert problems, "ManifestError without problems"
    missing = [e for e in case.problems if not any(_matches(p, e, path) for p in problems)]
    assert not missing, (
        "expected problems not reported:\n"
        + "\n".join(f"  {e.other_file or name}:{e.line}:{e.column}: ...{e.text}..."
                    for e in missing)
        + "\nreported:\n" + _describe(problems))
    if case.count is not None:
        assert len(problems) == case.count, (
            f"expected {case.count} problem(s), got {len(problems)}:\n" + _describe(problems))


def _run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "agentfile", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=60)


CLI_CASES = [
    "01-invalid-utf8.agentfile",
    "08-misspelt-attribute.agentfile",
    "13-cycle.agentfile",
    "38-multiple-problems.agentfile",
    "41-yaml-bad-duration.yaml",
    "45-json-unknown-provider.json",
    "61-byte-order-mark.agentfile",
]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_check_reports_make_style(name: str, tmp_path: Path) -> None:
    shutil.copyfile(BAD / name, tmp_path / name)
    case = CASES[name]
    first = min((e for e in case.problems if e.other_file is None),
                key=lambda e: (e.line, e.column))

    result = _run_cli(tmp_path, "-f", name, "check")

    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{name}:{first.line}:{first.column}: error: "), \
        result.stderr
    lines = result.stderr.splitlines()
    assert any(CARET_LINE.match(line) for line in lines), result.stderr
    # Every problem of the file is reported, each with its own heading.
    headings = [line for line in lines if re.match(rf"^{re.escape(name)}:\d+:\d+: error: ", line)]
    if case.count is not None:
        assert len(headings) == case.count, result.stderr
    for expected in case.problems:
        assert any(line.startswith(f"{name}:{expected.line}:{expected.column}: error: ")
                   and expected.text in line for line in headings), result.stderr


def test_cli_check_json_shape(tmp_path: Path) -> None:
    name = "38-multiple-problems.agentfile"
    shutil.copyfile(BAD / name, tmp_path / name)

    result = _run_cli(tmp_path, "-f", name, "check", "--json")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    assert set(report) == {"ok", "problems"}
    assert report["ok"] is False
    problems = report["problems"]
    assert isinstance(problems, list) and len(problems) == 3
    for problem in problems:
        assert isinstance(problem, dict)
        assert set(problem) == {"path", "line", "column", "message"}
        assert problem["path"] == name
        assert isinstance(problem["line"], int) and isinstance(problem["column"], int)
        assert isinstance(problem["message"], str) and problem["message"]
    located = [(p["line"], p["column"]) for p in problems]
    assert located == [(2, 5), (5, 5), (7, 7)]
    assert "did you mean 'jobs'?" in problems[0]["message"]
