"""`agentfile check`: load and validate; print every problem; exit 0 or 2."""

from __future__ import annotations

import sys

from agentfile.commands.common import load_manifest, missing_clis, print_json, sandbox_problem
from agentfile.errors import EXIT_OK, ManifestError, Problem, Span, UsageError
from agentfile.manifest.load import LoadedManifest, display_path, load
from agentfile.manifest.locate import manifest_path
from agentfile.ui import plural


def check(*, file: str | None, as_json: bool) -> int:
    """A valid manifest exits 0, even when an agent CLI it names is missing here (that is
    this machine's state, not the manifest's): such CLIs are warned about, all at once."""
    if not as_json:
        loaded = load_manifest(file)
        templates = len(loaded.manifest.targets)
        print(f"{display_path(loaded.path)}: ok: {plural(templates, 'target')} "
              f"({len(loaded.targets)} after fan-out), "
              f"{plural(len(loaded.manifest.agents), 'agent')}")
        for warning in _warnings(loaded):
            print(f"agentfile: warning: {warning}", file=sys.stderr)
        return EXIT_OK
    try:
        loaded = load(manifest_path(file))
    except ManifestError as err:
        print_json({"ok": False, "problems": [p.as_json() for p in err.problems]})
        return err.exit_code
    except UsageError as err:
        problem = Problem(Span(file or ".", 1, 1), str(err))
        print_json({"ok": False, "problems": [problem.as_json()]})
        print(err.render(), file=sys.stderr)
        return err.exit_code
    print_json({"ok": True, "problems": [], "targets": len(loaded.targets),
                "warnings": _warnings(loaded)})
    return EXIT_OK


def _warnings(loaded: LoadedManifest) -> list[str]:
    """What cannot run on this machine: a sandbox, agent CLIs."""
    names = list(loaded.graph.order)
    sandbox = sandbox_problem(loaded, names)
    return ([sandbox] if sandbox else []) + missing_clis(loaded, names)
