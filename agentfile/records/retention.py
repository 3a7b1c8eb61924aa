"""How many builds' run folders (`.agentfile/runs/RUN_ID`: logs, events, results) are kept.

Every build, a no-op one too, writes a run folder; without pruning they pile up. The newest
`keep` stay, and so do the running build's and the newest (whatever `keep` says): `logs`,
`report` and `--retry-failed` read them. The state's records of older runs stay (durations,
fingerprints, `runs`); only their folders go.
"""

from __future__ import annotations

import shutil

from agentfile.records.layout import Layout

DEFAULT_KEEP_RUNS = 50


def prune_runs(layout: Layout, keep: int, *, running: str | None) -> list[str]:
    """Remove the run folders beyond the newest `keep`; the ids removed, oldest first."""
    if not layout.runs_dir.is_dir():
        return []
    # Run ids begin with their start time (20261204-183512-1a2b): by name is by age.
    names = sorted(p.name for p in layout.runs_dir.iterdir() if p.is_dir())
    spared = set(names[-max(keep, 1):]) | {running}
    gone = [name for name in names if name not in spared]
    for name in gone:
        shutil.rmtree(layout.run_dir(name), ignore_errors=True)
    return gone
