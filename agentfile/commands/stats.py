"""`agentfile stats [--by day|agent|target|repo] [--json]`: what was spent, from the ledger."""

from __future__ import annotations

import sys

from agentfile import ui
from agentfile.commands.common import print_json
from agentfile.errors import EXIT_OK
from agentfile.records.ledger import Ledger, home


def stats(*, by: str, as_json: bool) -> int:
    path = home() / "ledger.sqlite"
    if not path.is_file():
        if as_json:
            print_json([])
        else:
            print(f"nothing spent yet (the ledger is {path})")
        return EXIT_OK
    ledger = Ledger(path)
    try:
        rows = ledger.totals(by)
        today = ledger.spent_today()
    finally:
        ledger.close()
    if as_json:
        print_json(rows)
        return EXIT_OK
    ui.print_stats(ui.console_for(sys.stdout), rows, by=by, today=today)
    return EXIT_OK
