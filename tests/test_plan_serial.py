"""`plan` admits targets as a build does: locks, exclusive, the checkout, max_parallel, canary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import EXAMPLES, Run, git

from agentfile import graph as g
from agentfile.manifest.load import load


def planned(tmp_path: Path, manifest: str, jobs: int = 8) -> tuple[list[list[str]], float]:
    path = tmp_path / "Agentfile"
    path.write_text(manifest)
    loaded = load(path)
    from agentfile.commands.plan import admission_rules

    names = list(loaded.graph.order)
    graph = g.with_canaries(loaded.graph, names)
    rules = admission_rules(loaded, names)
    return g.waves(graph, names, rules), g.estimate(graph, names, jobs, None, rules).parallel


def fan(n: int, extra: str = "", isolation: str = "none") -> str:
    values = ", ".join(f'"{i}"' for i in range(n))
    return (f'f/{{x}}:\n    foreach x in [{values}]\n'
            f'    run = "true"\n    isolation = {isolation}\n{extra}')


def test_unconstrained_targets_share_a_wave(tmp_path: Path) -> None:
    assert planned(tmp_path, fan(3)) == ([["f/0", "f/1", "f/2"]], 1.0)


def test_a_shared_lock_makes_one_wave_each(tmp_path: Path) -> None:
    waves, steps = planned(tmp_path, fan(3, '    locks = ["db"]\n'))
    assert waves == [["f/0"], ["f/1"], ["f/2"]] and steps == 3.0


def test_exclusive_runs_alone_and_nothing_overtakes_it(tmp_path: Path) -> None:
    manifest = ('a:\n    run = "true"\n'
                'x:\n    run = "true"\n    exclusive = true\n    priority = 1\n'
                'b:\n    run = "true"\n')
    waves, steps = planned(tmp_path, manifest)
    assert waves == [["x"], ["a", "b"]] and steps == 2.0


def test_branch_isolation_has_the_checkout_alone(tmp_path: Path) -> None:
    manifest = fan(2, isolation="branch") + 'w:\n    run = "true"\n    isolation = worktree\n' \
        'n:\n    run = "true"\n'
    waves, steps = planned(tmp_path, manifest)
    assert len(waves) == 3 and steps == 3.0
    assert ["f/0", "w"] in waves  # a worktree target runs beside it
    assert [w for w in waves if "w" not in w] == [["f/1"], ["n"]]


def test_overlapping_dirs_wait_for_each_other(tmp_path: Path) -> None:
    for folder in ("apps/a", "apps/b"):
        (tmp_path / folder).mkdir(parents=True)
    manifest = ('whole:\n    run = "true"\n    isolation = dir("apps")\n'
                'a:\n    run = "true"\n    isolation = dir("apps/a")\n'
                'b:\n    run = "true"\n    isolation = dir("apps/b")\n')
    waves, _ = planned(tmp_path, manifest)
    assert waves == [["whole"], ["a", "b"]]


def test_max_parallel_and_jobs(tmp_path: Path) -> None:
    manifest = ('agent solo: command\n    command = "true"\n    max_parallel = 2\n'
                'p/{x}:\n    foreach x in ["1", "2", "3", "4", "5"]\n    agent = solo\n'
                '    prompt = "p"\n    isolation = worktree\n')
    waves, steps = planned(tmp_path, manifest)
    assert [len(w) for w in waves] == [2, 2, 1] and steps == 3.0
    assert planned(tmp_path, manifest, jobs=1)[1] == 5.0


def test_canaries_go_first(tmp_path: Path) -> None:
    waves, steps = planned(tmp_path, fan(4, "    canary = 1\n"))
    assert waves == [["f/0"], ["f/1", "f/2", "f/3"]] and steps == 2.0


def test_the_serial_examples_are_planned_one_at_a_time(tmp_path: Path,
                                                       agentfile_cli: Run) -> None:
    for name, waves in (("ordered-migration", 4), ("branch-per-task", 2)):
        copy = tmp_path / name
        shutil.copytree(EXAMPLES / name, copy)
        git(copy, "init", "-q")
        result = agentfile_cli("plan", "--json", cwd=copy)
        assert result.code == 0, result.err
        plan = json.loads(result.out)
        assert len(plan["waves"]) == waves and all(len(w) == 1 for w in plan["waves"])
        assert plan["estimate"]["parallel"] == plan["estimate"]["sequential"]  # no speed-up
        assert plan["serialised_by"]
        text = agentfile_cli("plan", cwd=copy).out
        assert "(1.0x)" in text and "serialised by: " in text
