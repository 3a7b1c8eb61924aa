"""The Agentfile language: the SPEC's own example loads to the model it describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentfile.errors import ManifestError
from agentfile.manifest.load import load
from agentfile.manifest.model import DirRef, FileRef

SPEC_EXAMPLE = '''\
include "agents/common.agentfile"        # other files, relative to this one

MODEL = "claude-sonnet-4-5"              # a variable; ${MODEL} expands inside any string

options:
    jobs = 4
    default = test
    agent = claude
    isolation = worktree
    budget = $20, 2h
    daily_budget = $50, alert 80%
    throttle = memory 85%, load 2.0, free 1GiB
    merge = auto

agent reviewer: claude
    model = ${MODEL}
    args = ["--max-turns", "30"]
    max_parallel = 2

agent bot: command
    command = "./scripts/bot.sh {prompt_file}"
    price = $3/Mtok in, $15/Mtok out

schema:
    description = "Database schema"
    prompt = "Create the database schema in db/schema.sql"
    outputs = ["db/schema.sql"]
    budget = $1.50, 10m, 2GiB, 200k tokens

models: schema
    prompt = file("prompts/models.md")
    context = ["docs/architecture.md"]
    verify = "pytest -q tests/models"
    retries = 2

migrate/{file}: schema
    foreach file in glob("src/**/*.py")
    prompt = """
        Migrate {file} from the old logging API to the new one.
        """
    verify = "python -m py_compile {file}"
    canary = 3

review: models
    agent = reviewer
    isolation = none
    prompt = "Review this change for edge cases and race conditions:\\n{deps.models.diff}"

test: models migrate review
    run = "pytest -q"
    locks = ["db"]

all: test
'''


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def spec_repo(repo: Path) -> Path:
    write(repo, {
        "Agentfile": SPEC_EXAMPLE,
        "agents/common.agentfile": 'agent helper: codex\n    model = "gpt-5"\n',
        "prompts/models.md": "Write the models.\n",
        "docs/architecture.md": "Layers.\n",
        "src/app/a.py": "", "src/b.py": "", "src/notes.txt": "",
    })
    (repo / "src" / "pkg.py").mkdir()  # a directory matching the glob is not a target
    return repo


def test_spec_example_loads(spec_repo: Path) -> None:
    loaded = load(spec_repo / "Agentfile")
    m = loaded.manifest
    assert m.options.jobs == 4 and m.options.default == ["test"]
    assert m.options.budget is not None and m.options.budget.usd == 20
    assert m.options.budget.time == 7200
    assert m.options.daily_budget is not None and m.options.daily_budget.alert == 80
    assert m.options.throttle is not None and m.options.throttle.free == 2**30
    assert m.options.throttle.load == 2.0 and m.options.throttle.memory == 85
    assert m.agents["reviewer"].model == "claude-sonnet-4-5"
    assert m.agents["helper"].provider == "codex"  # from the include
    assert m.agents["bot"].price is not None and m.agents["bot"].price.output == 15
    schema = m.targets["schema"]
    assert schema.budget is not None
    assert (schema.budget.usd, schema.budget.time, schema.budget.memory,
            schema.budget.tokens) == (1.5, 600, 2 * 2**30, 200_000)
    assert m.targets["models"].prompt == FileRef(file="prompts/models.md")
    assert m.targets["migrate/{file}"].prompt == (
        "Migrate {file} from the old logging API to the new one.\n")
    names = [t.name for t in loaded.targets]
    # glob: relative to the manifest, sorted, files only
    assert names == ["schema", "models", "migrate/src/app/a.py", "migrate/src/b.py",
                     "review", "test", "all"]
    test = next(t for t in loaded.targets if t.name == "test")
    assert test.deps == ("models", "migrate/src/app/a.py", "migrate/src/b.py", "review")
    migrate = next(t for t in loaded.targets if t.name == "migrate/src/b.py")
    assert migrate.bindings == {"file": "src/b.py"} and migrate.instance == 1
    # A run target, but after the agents' worktrees: it runs on their merged work.
    assert loaded.agent_of(test) is None and loaded.isolation_of(test) == "worktree"
    review = next(t for t in loaded.targets if t.name == "review")
    assert loaded.agent_of(review) == "reviewer" and loaded.isolation_of(review) == "none"
    assert loaded.resolve(["migrate"]) == ["migrate/src/app/a.py", "migrate/src/b.py"]


def test_values_of_every_kind(repo: Path) -> None:
    write(repo, {"apps/users/x": "", "Agentfile": '''\
N = 3
a:
    run = "echo ${N} $${HOME} {{literal}}"
    env = {A = 1, "B-C" = true}
    isolation = dir("apps/users")
    budget = 1h30m, 512MiB, 1.5M tokens
    retries = ${N}
    always = true
    locks = db, cache
b: a
    prompt = """
        line one
          indented
        "quoted" and {deps.a.result}
        """
    copy = [".env"]
    foreach x in ["p", "q"]
'''.replace("b: a\n", "b/{x}: a\n")})
    loaded = load(repo / "Agentfile")
    a = loaded.manifest.targets["a"]
    assert a.run == "echo 3 ${HOME} {{literal}}"
    assert a.env == {"A": "1", "B-C": "true"}
    assert a.isolation == DirRef(dir="apps/users")
    assert a.budget is not None and (a.budget.time, a.budget.memory, a.budget.tokens) == (
        5400, 512 * 2**20, 1_500_000)
    assert a.retries == 3 and a.always and a.locks == ["db", "cache"]
    b = loaded.manifest.targets["b/{x}"]
    assert b.prompt == 'line one\n  indented\n"quoted" and {deps.a.result}\n'
    assert b.copy_files == [".env"]
    assert [t.name for t in loaded.targets] == ["a", "b/p", "b/q"]


@pytest.mark.parametrize("fast", [True, False])  # the hand-written reader, and lark's
def test_a_block_is_dedented_as_written_and_never_keeps_a_cr(
        repo: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """CRLF line endings leave no \r in a \"\"\" block; its indentation is cut as it is
    written, before escapes are decoded (a \\n inside is not a line of its own)."""
    if not fast:
        from agentfile.manifest import fastparse

        monkeypatch.setattr(fastparse, "parse", lambda *args, **kwargs: None)
    text = ('a:\n    run = """\n        test -d sub\n        """\n'
            'b:\n    run = """\n        Para one.\\n second\n        Para two\\tx\n        """\n')
    (repo / "Agentfile").write_bytes(text.replace("\n", "\r\n").encode())
    targets = load(repo / "Agentfile").manifest.targets
    assert targets["a"].run == "test -d sub\n"
    assert targets["b"].run == "Para one.\n second\nPara two\tx\n"


def test_lines_fanout_and_paired_dependencies(repo: Path) -> None:
    write(repo, {"bugs.txt": "# open bugs\nbug-1\n\nbug-2\n", "Agentfile": '''\
fix/{bug}:
    foreach bug in lines("bugs.txt")
    prompt = "Fix {bug}"
check/{bug}: fix/{bug}
    foreach bug in lines("bugs.txt")
    run = "echo {bug}"
report: fix
    run = "true"
'''})
    loaded = load(repo / "Agentfile")
    deps = {t.name: t.deps for t in loaded.targets}
    assert deps["check/bug-1"] == ("fix/bug-1",)
    assert deps["report"] == ("fix/bug-1", "fix/bug-2")


def test_include_cycle_is_reported(repo: Path) -> None:
    write(repo, {"Agentfile": 'include "a.af"\nx:\n    run = "true"\n',
                 "a.af": 'include "Agentfile"\n'})
    with pytest.raises(ManifestError) as err:
        load(repo / "Agentfile")
    assert "include cycle" in err.value.problems[0].message


def test_every_problem_is_reported(repo: Path) -> None:
    write(repo, {"Agentfile": '''\
a: nope
    run = "x"
b:
    run = "y" "z"
c:
    promt = "p"
d:
    run = 'single quotes' +
'''})
    with pytest.raises(ManifestError) as err:
        load(repo / "Agentfile")
    lines = sorted(p.span.line for p in err.value.problems)
    assert 4 in lines and 6 in lines and 8 in lines


def test_resources_are_a_map_over_the_agents(repo: Path) -> None:
    write(repo, {"Agentfile": '''\
agent boxed: command
    command = "true"
    resources = {gpu_box = 1, "accelerator_type:A100" = 0.5}
x:
    agent = boxed
    prompt = "p"
    resources = {gpu_box = 2, GPU = 1}
y:
    run = "true"
'''})
    loaded = load(repo / "Agentfile")
    x, y = (loaded.graph.targets[n] for n in ("x", "y"))
    assert loaded.resources_of(x) == {"gpu_box": 2, "accelerator_type:A100": 0.5, "GPU": 1}
    assert loaded.resources_of(y) == {}


@pytest.mark.parametrize(("written", "said"), [
    ("{CPU = 2}", "'CPU' is not for `resources`: a target on Ray asks for 1 CPU"),
    ("{memory = 2}", "'memory' is not for `resources`"),
    ("{box = 0}", "box: 0 is less than or equal to the minimum of 0"),
    ('{"a box" = 1}', "'a box' is not a valid name"),
])
def test_resources_agentfile_asks_for_itself_are_refused(repo: Path, written: str,
                                                         said: str) -> None:
    write(repo, {"Agentfile": f'y:\n    run = "true"\n    resources = {written}\n'})
    with pytest.raises(ManifestError) as err:
        load(repo / "Agentfile")
    (problem,) = err.value.problems
    assert problem.message.startswith(said), problem.message
    assert problem.span.line == 3


def test_a_long_bad_quantity_is_refused_in_linear_time() -> None:
    """`budget = 1111…1x`: every digit was tried as the start of a duration, time quadratic in
    the literal's length (100,000 digits took over a minute). Run in a child process so that
    a return of the bug fails here instead of hanging the run."""
    probe = ("from agentfile import quantities as q\n"
             "for parse in (q.parse_duration, q.parse_size, q.parse_tokens, q.classify):\n"
             "    try:\n"
             "        parse('1' * 300_000 + 'x')\n"
             "    except ValueError:\n"
             "        print('refused')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["refused"] * 4


def test_yaml_too_deep_or_too_wide_is_a_manifest_error(tmp_path: Path) -> None:
    """Nesting deeper than libyaml's C stack (it killed the process), and aliases that expand
    to billions of values (it never finished): refused with a manifest error. In a child
    process, so that a return of the crash fails this test instead of the run."""
    laughs = ['version: 1', 'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    laughs += ["targets:", "  a:", "    run: x", "    outputs: *a8"]
    head = "version: 1\ntargets:\n  a:\n    run: x\n    env: "
    cases = {
        "flow.yaml": head + "[" * 50_000 + "]" * 50_000 + "\n",
        "block.yaml": head + "- " * 50_000 + "x\n",
        "laughs.yaml": "\n".join(laughs) + "\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        done = subprocess.run([sys.executable, "-m", "agentfile", "-f", name, "check"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (name, done.returncode, done.stderr)
        assert f"{name}:1:1: error: invalid YAML: the manifest" in done.stderr, done.stderr


@pytest.mark.parametrize("text", [
    "version: 1\ntargets:\n  a:\n    run: !!binary aGVsbG8=\n",
    "version: 1\ntargets:\n  a:\n    run: 2024-01-01\n",
    "version: 1\ntargets:\n  a:\n    run: !!set {x: null}\n",
])
def test_yaml_values_json_has_no_type_for_are_manifest_errors(tmp_path: Path,
                                                              text: str) -> None:
    """Dates, binary and sets (YAML has them, JSON and the language do not) were an
    internal error; now the manifest's problem, with what to do. (As a key, `2024-01-01:`
    is a name, as every key is.)"""
    path = tmp_path / "Agentfile.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as raised:
        load(path)
    assert "quote it to make it a string" in str(raised.value)


@pytest.mark.parametrize("vars_text", ["vars:\n", "vars: A0\n", "vars: [1, 2]\n"])
def test_vars_that_are_not_a_table_are_reported(tmp_path: Path, vars_text: str) -> None:
    """A YAML `vars` that is a string, a list or nothing crashed the variable expansion
    (found by the property test); the schema now says what is wrong, where."""
    path = tmp_path / "Agentfile.yaml"
    path.write_text("targets:\n  a:\n    run: x\n" + vars_text)
    with pytest.raises(ManifestError) as raised:
        load(path)
    assert "vars should be a table" in str(raised.value)


def test_variables_that_double_at_each_level_are_refused(tmp_path: Path) -> None:
    """`V0 = "${V1}${V1}"`, `V1 = "${V2}${V2}"`, ...: 40 levels would need a terabyte (it ran
    out of memory); past a million characters the value is refused where it is defined."""
    lines = [f'V{i} = "${{V{i + 1}}}${{V{i + 1}}}"' for i in range(40)]
    path = tmp_path / "Agentfile"
    path.write_text("\n".join([*lines, 'V40 = "x"', "a:", '    run = "${V0}"']) + "\n")
    with pytest.raises(ManifestError) as raised:
        load(path, environ={})
    assert "expands to more than 1,048,576 characters" in str(raised.value)


def test_a_file_included_from_two_places_is_merged_once(repo: Path) -> None:
    write(repo, {
        "sub/deeper/common.agentfile": "common:\n    run = 'true'\n",
        "sub/a.agentfile": 'include "deeper/common.agentfile"\na: common\n    run = "true"\n',
        "sub/b.agentfile": 'include "deeper/common.agentfile"\nb: common\n    run = "true"\n',
        "Agentfile": 'include "sub/a.agentfile"\ninclude "sub/b.agentfile"\n'
                     "all: a b\n"})
    loaded = load(repo / "Agentfile")
    assert sorted(loaded.manifest.targets) == ["a", "all", "b", "common"]
