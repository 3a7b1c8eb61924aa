"""make's habits from the command line: `build NAME=VALUE`, `options.dotenv`, `list` and
`graph` of some targets, and shell completion scripts run in a real bash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Run

MANIFEST = """\
MODEL = "small"

options:
    dotenv = ".env"

a:
    run = "echo model=${MODEL} dot=${FROM_DOT} key=$API_KEY"

b: a
    run = "echo b"

m/{x}:
    foreach x in ["p", "q"]
    run = "echo {x}"

c: m
    run = "echo c"
"""
SECRET = "s3cret-value-42"


@pytest.fixture
def project(repo: Path) -> Path:
    (repo / "Agentfile").write_text(MANIFEST)
    (repo / ".env").write_text(f"API_KEY={SECRET}\nFROM_DOT=fromdot\n# a comment\n")
    return repo


def _log(repo: Path, target: str) -> str:
    # The newest by time: two builds in the same second have run ids that sort at random.
    logs = (repo / ".agentfile" / "runs").glob(f"*/logs/{target}.log")
    return max(logs, key=lambda log: log.stat().st_mtime_ns).read_text()


def test_a_variable_set_on_the_command_line_overrides_the_manifest(
        project: Path, agentfile_cli: Run) -> None:
    result = agentfile_cli("build", "a", "MODEL=large", "DB_PASSWORD=hunter2-long", cwd=project)
    assert result.code == 0, result.err
    assert "model=large" in _log(project, "a")
    runs = json.loads(agentfile_cli("runs", "--json", cwd=project).out)
    # Shown in the run's record, a secret's value masked there as everywhere.
    assert runs[0]["variables"] == {"MODEL": "large", "DB_PASSWORD": "***"}
    assert "variables: MODEL=large DB_PASSWORD=***" in agentfile_cli("report", cwd=project).out
    assert "MODEL=large" in agentfile_cli("runs", cwd=project).out
    database = (project / ".agentfile" / "state.sqlite").read_bytes()
    assert b"hunter2-long" not in database
    # The next build without it uses the manifest's value: the target is not up to date.
    assert agentfile_cli("build", "a", cwd=project).code == 0
    assert "model=small" in _log(project, "a")
    assert json.loads(agentfile_cli("runs", "--json", cwd=project).out)[0]["variables"] == {}


def test_a_bad_variable_name_is_a_usage_error(project: Path, agentfile_cli: Run) -> None:
    result = agentfile_cli("build", "1X=3", cwd=project)
    assert result.code == 2 and "NAME=VALUE" in result.err


def test_dotenv_variables_expand_reach_targets_and_are_masked(project: Path,
                                                              agentfile_cli: Run) -> None:
    result = agentfile_cli("build", "a", cwd=project, env={"API_KEY": ""})
    assert result.code == 0, result.err
    log = _log(project, "a")
    assert "dot=fromdot" in log
    # The process's own environment wins over the file's (an empty value included)...
    assert "key=\n" in log
    result = agentfile_cli("build", "-B", "a", cwd=project,
                           env={k: v for k, v in os.environ.items() if k != "API_KEY"})
    assert result.code == 0, result.err
    # ... and without it the file's value reaches the target, never shown.
    log = _log(project, "a")
    assert "key=***" in log and SECRET not in log
    for path in (project / ".agentfile").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_missing_dotenv_file_defines_nothing(project: Path, agentfile_cli: Run) -> None:
    (project / ".env").unlink()
    result = agentfile_cli("check", cwd=project)
    assert result.code == 2 and "unknown variable '${FROM_DOT}'" in result.err
    (project / "Agentfile").write_text(MANIFEST.replace("${FROM_DOT}", "x"))
    assert agentfile_cli("check", cwd=project).code == 0


def test_list_and_graph_show_the_named_targets_and_what_they_need(
        project: Path, agentfile_cli: Run) -> None:
    listed = json.loads(agentfile_cli("list", "--json", "b", cwd=project).out)
    assert [row["name"] for row in listed] == ["a", "b"]
    listed = json.loads(agentfile_cli("list", "--json", "c", cwd=project).out)
    assert [row["name"] for row in listed] == ["m/p", "m/q", "c"]
    shown = json.loads(agentfile_cli("graph", "--format", "json", "c", cwd=project).out)
    assert [n["name"] for n in shown["nodes"]] == ["m/p", "m/q", "c"]
    assert shown["edges"] == [["m/p", "c"], ["m/q", "c"]]
    everything = json.loads(agentfile_cli("graph", "--format", "json", cwd=project).out)
    assert len(everything["nodes"]) == 5
    missing = agentfile_cli("list", "zz", cwd=project)
    assert missing.code == 2 and "no target 'zz'" in missing.err


def test_list_names_is_what_a_command_line_may_name(project: Path,
                                                    agentfile_cli: Run) -> None:
    names = agentfile_cli("list", "--names", cwd=project).out.split()
    assert names == ["a", "b", "m", "m/p", "m/q", "c"]


def _bash(script: str, cwd: Path, line: list[str]) -> list[str]:
    """Source a completion script in bash and complete `line` as bash would."""
    words = " ".join(f"'{w}'" for w in line)
    driver = f"""
source {script}
complete -p agentfile
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
_shtab_agentfile
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    # The script runs `agentfile`: this interpreter's, as a user's shell would find it.
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", driver], cwd=cwd, capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "complete -o bashdefault -F _shtab_agentfile agentfile"
    return [w for w in lines[1:] if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_of_commands_options_and_targets(project: Path, agentfile_cli: Run,
                                                         tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "agentfile").exists():
        pytest.skip("the agentfile script is not installed beside this interpreter")
    script = tmp_path / "agentfile.bash"
    result = agentfile_cli("completion", "bash", cwd=project)
    assert result.code == 0
    script.write_text(result.out)
    assert _bash(str(script), project, ["agentfile", "bui"]) == ["build"]
    assert set(_bash(str(script), project, ["agentfile", ""])) >= {
        "build", "check", "list", "graph", "lsp", "completion"}
    assert _bash(str(script), project, ["agentfile", "build", "--keep"]) == [
        "--keep-going", "--keep-worktrees"]
    assert _bash(str(script), project, ["agentfile", "build", ""]) == [
        "a", "b", "m", "m/p", "m/q", "c"]
    assert _bash(str(script), project, ["agentfile", "build", "m"]) == ["m", "m/p", "m/q"]
    assert _bash(str(script), project, ["agentfile", "graph", "--format", ""]) == [
        "dot", "mermaid", "json"]
    # `-C DIR` already typed: the names come from that directory's manifest.
    assert _bash(str(script), tmp_path, ["agentfile", "-C", str(project), "logs", "m/"]) == [
        "m/p", "m/q"]
    assert _bash(str(script), tmp_path, ["agentfile", "build", ""]) == []


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_the_target_function(shell: str, project: Path,
                                                       agentfile_cli: Run) -> None:
    result = agentfile_cli("completion", shell, cwd=project)
    assert result.code == 0
    assert "_agentfile_target_names" in result.out and "list --names" in result.out
    if shutil.which(shell):
        checked = subprocess.run([shell, "-n"], input=result.out, text=True,
                                 capture_output=True)
        assert checked.returncode == 0, checked.stderr
