"""`agentfile list`: every target with its kind, agent, isolation and description."""

from __future__ import annotations

from agentfile.commands.common import load_manifest, print_json
from agentfile.errors import EXIT_OK
from agentfile.manifest.model import describe_isolation


def list_targets(*, file: str | None, as_json: bool) -> int:
    loaded = load_manifest(file)
    rows = [
        {
            "name": t.name,
            "kind": t.kind,
            "agent": loaded.agent_of(t),
            "isolation": describe_isolation(loaded.isolation_of(t)),
            "deps": list(t.deps),
            "description": t.definition.description or "",
        }
        for t in loaded.targets
    ]
    if as_json:
        print_json(rows)
        return EXIT_OK
    header = {"name": "TARGET", "kind": "KIND", "agent": "AGENT", "isolation": "ISOLATION",
              "description": "DESCRIPTION"}
    columns = list(header)
    table = [header, *({c: str(r[c] or "-") for c in columns} for r in rows)]
    widths = {c: max(len(str(r[c])) for r in table) for c in columns}
    for row in table:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    return EXIT_OK
