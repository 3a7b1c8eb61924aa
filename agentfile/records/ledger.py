"""The per-user spend ledger (SPEC 8): every agent attempt's cost, across repositories.

A sqlite file under `$AGENTFILE_HOME`, else the platform's user state directory
(platformdirs); `daily_budget` reads today's total from it and `agentfile stats` reports it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import platformdirs

from agentfile.errors import UsageError
from agentfile.records.state import damaged_is_an_error

SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    time REAL NOT NULL,
    day TEXT NOT NULL,
    repo TEXT NOT NULL,
    run TEXT NOT NULL,
    target TEXT NOT NULL,
    agent TEXT,
    provider TEXT,
    cost_usd REAL NOT NULL,
    tokens INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_day ON spend (day);
"""
GROUPS = {"day": "day", "agent": "agent", "target": "target", "repo": "repo"}


def home() -> Path:
    configured = os.environ.get("AGENTFILE_HOME")
    return Path(configured) if configured else Path(platformdirs.user_state_dir("agentfile"))


def today() -> str:
    return time.strftime("%Y-%m-%d")


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or home() / "ledger.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # e.g. AGENTFILE_HOME names a file
            raise UsageError(f"cannot keep the spend ledger in {self.path.parent}: "
                             f"{err.strerror or err}") from None
        with damaged_is_an_error(self.path, "what agents spent before is forgotten, today's "
                                            "daily budget included"):
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def record(self, *, repo: str, run: str, target: str, agent: str | None,
               provider: str | None, cost_usd: float, tokens: int) -> None:
        with self.lock:
            self.db.execute("INSERT INTO spend VALUES (?,?,?,?,?,?,?,?,?)",
                            (time.time(), today(), repo, run, target, agent, provider,
                             cost_usd, tokens))

    def recorded(self, *, run: str, target: str) -> bool:
        """Whether a run's spend on a target is written (a build that died may not have)."""
        with self.lock:
            row = self.db.execute("SELECT 1 FROM spend WHERE run=? AND target=? LIMIT 1",
                                  (run, target)).fetchone()
        return row is not None

    def spent_today(self, *, besides_run: str | None = None) -> float:
        """Today's spend across every repository (but one run's, which counts its own)."""
        with self.lock:
            row = self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM spend "
                                  "WHERE day=? AND run IS NOT ?", (today(), besides_run)
                                  ).fetchone()
        return float(row[0])

    def totals(self, by: str) -> list[dict[str, Any]]:
        column = GROUPS[by]
        rows = self.db.execute(
            f"SELECT {column} AS key, COUNT(*) AS attempts, SUM(cost_usd) AS cost_usd, "
            f"SUM(tokens) AS tokens, COUNT(DISTINCT run) AS runs FROM spend "
            f"GROUP BY {column} ORDER BY {'key DESC' if by == 'day' else 'cost_usd DESC'}")
        return [{"key": r[0], "attempts": r[1], "cost_usd": round(r[2] or 0, 6),
                 "tokens": r[3] or 0, "runs": r[4]} for r in rows]
