"""The static commands through the real CLI: check, list, plan, graph, schema, convert, init."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import Run, git

from agentfile.manifest.load import load

MANIFEST = '''\
options:
    jobs = 2
a:
    description = "first"
    run = "true"
b: a
    prompt = "do b"
c: a
    run = "true"
all: b c
'''


def test_check_ok_and_json(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    result = agentfile_cli("check", cwd=repo)
    assert result.code == 0, result.err
    assert "4 targets" in result.out
    # b's agent (claude, the default) can run: nothing to warn about.
    result = agentfile_cli("check", "--json", cwd=repo, env={"AGENTFILE_CLAUDE": sys.executable})
    assert json.loads(result.out) == {"ok": True, "problems": [], "targets": 4, "warnings": []}


def test_check_bad_exits_2_with_caret(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('a:\n    promt = "x"\n')
    result = agentfile_cli("check", cwd=repo)
    assert result.code == 2
    assert result.err.startswith("Agentfile:2:5: error: unknown target attribute 'promt'; "
                                 "did you mean 'prompt'?")
    assert "\n        ^" in result.err and "Traceback" not in result.err
    result = agentfile_cli("check", "--json", cwd=repo)
    assert json.loads(result.out) == {"ok": False, "problems": [{
        "path": "Agentfile", "line": 2, "column": 5,
        "message": "unknown target attribute 'promt'; did you mean 'prompt'?"}]}


def test_discovery_up_to_git_root_and_flags(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    deep = repo / "src" / "deep"
    deep.mkdir(parents=True)
    assert agentfile_cli("check", cwd=deep).code == 0
    assert agentfile_cli("-C", str(repo), "list", cwd=repo.parent).code == 0
    assert agentfile_cli("list", "-C", str(repo), cwd=repo.parent).code == 0
    (repo / "other.agentfile").write_text('x:\n    run = "true"\n')
    assert "x" in agentfile_cli("list", "-f", "other.agentfile", cwd=repo).out
    missing = agentfile_cli("check", cwd=repo.parent)
    assert missing.code == 2 and "no Agentfile" in missing.err


def test_yaml_manifest_is_found(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile.yaml").write_text("targets:\n  a:\n    run: 'true'\n")
    assert agentfile_cli("check", cwd=repo).code == 0


def test_list(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    result = agentfile_cli("list", cwd=repo)
    assert result.out.splitlines()[0].split() == ["TARGET", "KIND", "AGENT", "ISOLATION",
                                                  "UP", "TO", "DATE", "DESCRIPTION"]
    assert result.out.splitlines()[1].split() == ["a", "run", "-", "none", "no", "first"]
    rows = json.loads(agentfile_cli("list", "--json", cwd=repo).out)
    assert rows[1] == {"name": "b", "kind": "agent", "agent": "claude",
                       "isolation": "worktree", "deps": ["a"], "up_to_date": False,
                       "description": ""}
    (repo / "Agentfile").write_text(MANIFEST.replace('prompt = "do b"', 'run = "true"'))
    assert agentfile_cli("build", cwd=repo).code == 0
    rows = json.loads(agentfile_cli("list", "--json", cwd=repo).out)
    assert all(r["up_to_date"] for r in rows)


def test_graph_formats(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    shape = json.loads(agentfile_cli("graph", "--format", "json", cwd=repo).out)
    assert shape["nodes"][0] == {"name": "a", "kind": "run", "deps": []}
    assert shape["nodes"][3] == {"name": "all", "kind": "group", "deps": ["b", "c"]}
    assert sorted(shape["edges"]) == [["a", "b"], ["a", "c"], ["b", "all"], ["c", "all"]]
    dot = agentfile_cli("graph", "--format", "dot", cwd=repo).out
    assert '"a" -> "b";' in dot and dot.startswith("digraph")
    mermaid = agentfile_cli("graph", "--format", "mermaid", cwd=repo).out
    assert mermaid.startswith("graph LR") and "n0 --> n1" in mermaid


def test_plan(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    data = json.loads(agentfile_cli("plan", "--json", cwd=repo).out)
    assert data["waves"] == [["a"], ["b", "c"], ["all"]]
    assert data["critical_path"] == ["a", "b", "all"]
    assert data["estimate"] == {"unit": "targets", "sequential": 4.0, "parallel": 3.0,
                                "guessed": 0}
    one = json.loads(agentfile_cli("plan", "-j1", "--json", "b", cwd=repo).out)
    assert one["waves"] == [["a"], ["b"]] and one["estimate"]["parallel"] == 2.0
    text = agentfile_cli("plan", cwd=repo).out
    assert "wave 2: b, c" in text and "critical path (3 targets): a -> b -> all" in text
    unknown = agentfile_cli("plan", "bb", cwd=repo)
    assert unknown.code == 2 and "did you mean 'b'" in unknown.err


def test_schema_command_matches_committed_file(agentfile_cli: Run, tmp_path: Path) -> None:
    from conftest import ROOT

    printed = agentfile_cli("schema", cwd=tmp_path).out
    assert printed == (ROOT / "schema" / "agentfile.schema.json").read_text(), (
        "schema/agentfile.schema.json drifted from the model: regenerate it with "
        "`agentfile schema -o schema/agentfile.schema.json`")
    assert json.loads(printed)["$schema"].endswith("2020-12/schema")


def test_validation_reads_the_schema_the_model_generates() -> None:
    from agentfile.manifest.validate import schema_document, shipped_schema

    # Validation reads the shipped file (the wheel's copy when installed) instead of
    # generating it at every start: the two must be one document.
    assert shipped_schema() == schema_document()


def test_convert_round_trips(repo: Path, agentfile_cli: Run) -> None:
    multi_line = '"""\n        multi\n        line\n        """'
    (repo / "Agentfile").write_text(MANIFEST.replace('"do b"', multi_line))
    original = load(repo / "Agentfile").manifest
    for form, name in (("yaml", "x.yaml"), ("json", "x.json")):
        result = agentfile_cli("convert", "Agentfile", "--to", form, "-o", name, cwd=repo)
        assert result.code == 0, result.err
        assert load(repo / name).manifest == original
        back = agentfile_cli("convert", name, "--to", "agentfile", cwd=repo)
        (repo / f"back-{form}.agentfile").write_text(back.out)
        assert load(repo / f"back-{form}.agentfile").manifest == original
    assert (repo / "x.yaml").read_text().startswith("# yaml-language-server: $schema=")


def test_init_writes_a_checked_starter(repo: Path, agentfile_cli: Run) -> None:
    result = agentfile_cli("init", cwd=repo)
    assert result.code == 0 and (repo / "Agentfile").is_file()
    assert agentfile_cli("check", cwd=repo).code == 0
    again = agentfile_cli("init", cwd=repo)
    assert again.code == 2 and "exists" in again.err
    git(repo, "status")


def test_usage_errors_exit_2(repo: Path, agentfile_cli: Run) -> None:
    assert agentfile_cli("graph", "--format", "png", cwd=repo).code == 2
    assert agentfile_cli("nonsense", cwd=repo).code == 2
    assert agentfile_cli("-f", "missing", "check", cwd=repo).code == 2


def test_plan_uses_earlier_durations(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('slow:\n    run = "sleep 0.4"\nquick:\n    run = "true"\n'
                                    'after: quick\n    run = "true"\n')
    before = json.loads(agentfile_cli("plan", "--json", cwd=repo).out)
    assert before["critical_path"] == ["quick", "after"]  # by target count: 2 > 1
    assert agentfile_cli("build", cwd=repo).code == 0
    after = json.loads(agentfile_cli("plan", "--json", cwd=repo).out)
    assert after["critical_path"] == ["slow"]  # by duration: 0.4 s > two no-ops
    assert after["estimate"]["unit"] == "seconds" and after["estimate"]["guessed"] == 0


def test_places_that_cannot_be_used_are_clear_errors(repo: Path, agentfile_cli: Run,
                                                     tmp_path: Path) -> None:
    """An output file that cannot be written, a folder that is not there, a lock that is not
    a file, a ledger home that is a file, an absurd --limit: exit 2 and what is wrong, never
    an internal error (found by fuzzing the command line)."""
    (repo / "Agentfile").write_text('a:\n    run = "true"\nagent bot: command\n'
                                    '    command = "true"\nask:\n    agent = bot\n'
                                    '    isolation = none\n    prompt = "hi"\n')
    missing = tmp_path / "no-such-folder"
    assert agentfile_cli("build", "a", cwd=repo).code == 0
    cases = {
        ("convert", "Agentfile", "--to", "yaml", "-o", f"{missing}/x"): "cannot write",
        ("schema", "-o", f"{missing}/x"): "cannot write",
        ("report", "--html", f"{missing}/x.html"): "cannot write",
        ("-C", str(missing), "check"): "cannot change to",
        ("runs", "--limit", "99999999999999999999999"): "--limit needs",
    }
    for args, said in cases.items():
        result = agentfile_cli(*args, cwd=repo)
        assert result.code == 2 and said in result.err, (args, result.err)
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    ledger = agentfile_cli("build", "ask", cwd=repo, env={"AGENTFILE_HOME": str(home)})
    assert ledger.code == 2 and "cannot keep the spend ledger" in ledger.err, ledger.err
    lock = repo / ".agentfile" / "build.lock"
    lock.unlink()
    lock.mkdir()
    for command in ("build", "status"):
        result = agentfile_cli(command, cwd=repo)
        assert result.code == 2 and "cannot use the build lock" in result.err, result.err
        assert "internal error" not in result.err


def test_nonsense_budgets_and_loads_are_refused(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('a:\n    run = "touch ran"\n')
    for flag, value in (("--budget", "$-1"), ("--budget", "$1e999"), ("--budget", "nan"),
                        ("--max-load", "-1"), ("--max-load", "nan"), ("--max-load", "0")):
        result = agentfile_cli("build", flag, value, cwd=repo)
        assert result.code == 2 and flag in result.err, (flag, value, result.err)
    assert not (repo / "ran").exists()


def test_small_refusals_of_the_command_line(repo: Path, agentfile_cli: Run) -> None:
    """-j below 1 for plan as for build; init beside a YAML manifest; clean of a run that
    does not exist: each exit 2 with a line that says why."""
    (repo / "Agentfile.yaml").write_text("targets:\n  a:\n    run: 'true'\n")
    for args in (["plan", "-j", "0"], ["plan", "-j", "-3"], ["build", "-j", "0"]):
        result = agentfile_cli(*args, cwd=repo)
        assert result.code == 2 and "at least 1" in result.err, (args, result.err)
    refused = agentfile_cli("init", cwd=repo)
    assert refused.code == 2 and "Agentfile.yaml is this folder's manifest" in refused.err
    assert not (repo / "Agentfile").exists()
    assert agentfile_cli("build", cwd=repo).code == 0
    bogus = agentfile_cli("clean", "--run", "bogus", cwd=repo)
    assert bogus.code == 2 and "no run bogus" in bogus.err


def test_graph_dot_writes_names_as_they_are(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('fan/{x}:\n    foreach x in ["é", "say \\"hi\\""]\n'
                                    "    run = 'true'\n")
    dot = agentfile_cli("graph", "--format", "dot", cwd=repo)
    assert dot.code == 0, dot.err
    assert '"fan/é" [shape=' in dot.out and '"fan/say \\"hi\\"" [shape=' in dot.out


def test_list_names_each_instance_in_its_description(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('fix/{bug}:\n    foreach bug in ["b1", "b2"]\n'
                                    '    description = "Fix {bug}"\n    run = "true"\n')
    rows = json.loads(agentfile_cli("list", "--json", cwd=repo).out)
    assert [r["description"] for r in rows] == ["Fix b1", "Fix b2"]
