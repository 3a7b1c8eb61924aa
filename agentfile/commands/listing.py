"""`agentfile list [TARGET…]`: every target (or those named and what they need) with its
kind, agent, isolation and description; `--names` only the names, for shell completion."""

from __future__ import annotations

from collections.abc import Sequence

from agentfile.commands.common import load_manifest, print_json, shown_targets
from agentfile.errors import EXIT_OK
from agentfile.fingerprint import freshness, work_in_checkout
from agentfile.manifest.expand import fanout_stem, substitute
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import describe_isolation
from agentfile.records.layout import Layout
from agentfile.records.state import open_store


def list_targets(*, file: str | None, as_json: bool, targets: Sequence[str] = (),
                 names_only: bool = False) -> int:
    loaded = load_manifest(file)
    if names_only:
        print("\n".join(completion_names(loaded)))
        return EXIT_OK
    listed = shown_targets(loaded, targets)
    store = open_store(Layout(loaded.root).database, readonly=True)
    recorded = store.fingerprints() if store else {}
    tips = store.work_tips() if store else {}
    if store:
        store.close()
    fresh = freshness(loaded, [t.name for t in listed], recorded,
                      in_checkout=work_in_checkout(loaded, tips))
    rows = [
        {
            "name": t.name,
            "kind": t.kind,
            "agent": loaded.agent_of(t),
            "isolation": describe_isolation(loaded.isolation_of(t)),
            "deps": list(t.deps),
            "up_to_date": fresh[t.name],
            # "Fix {bug}" names each instance's own bug.
            "description": substitute(t.definition.description or "", t.bindings),
        }
        for t in listed
    ]
    if as_json:
        print_json(rows)
        return EXIT_OK
    header = {"name": "TARGET", "kind": "KIND", "agent": "AGENT", "isolation": "ISOLATION",
              "up_to_date": "UP TO DATE", "description": "DESCRIPTION"}
    columns = list(header)
    shown = [{**r, "up_to_date": "yes" if r["up_to_date"] else "no"} for r in rows]
    table = [header, *({c: str(r[c] or "-") for c in columns} for r in shown)]
    widths = {c: max(len(str(r[c])) for r in table) for c in columns}
    for row in table:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    return EXIT_OK


def completion_names(loaded: LoadedManifest) -> list[str]:
    """What a command line may name: each target, and each fan-out's stem."""
    names: dict[str, None] = {}
    for target in loaded.targets:
        if target.template != target.name:
            stem = fanout_stem(target.template)
            if stem:
                names.setdefault(stem)
        names.setdefault(target.name)
    return list(names)
