"""The README's quick start: the example build runs offline, and a second build runs nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import EXAMPLES, Run


def test_quickstart_builds_offline_then_is_up_to_date(tmp_path: Path,
                                                     agentfile_cli: Run) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", folder)
    first = agentfile_cli("-C", str(folder), "build", cwd=tmp_path)
    assert first.code == 0, first.out + first.err
    assert "4 succeeded" in first.out
    assert "greeting" in (folder / "out" / "summary.txt").read_text()
    second = agentfile_cli("-C", str(folder), "build", cwd=tmp_path)
    assert second.code == 0 and "4 up-to-date" in second.out
    runs = json.loads(agentfile_cli("-C", str(folder), "runs", "--json", cwd=tmp_path).out)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[1]["cost_usd"] > 0  # the demo agent reports usage like a real one
