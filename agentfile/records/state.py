"""The per-repository store, `.agentfile/state.sqlite`: runs, attempts, outcomes, fingerprints.

Only the build's main thread writes; commands such as `runs` and `report` read. WAL mode lets a
reader look at a running build.

While a build's loop runs, its rows are gathered and written a tick at a time (`deferred`), in
one transaction, not one per target: a commit costs more than a no-op target. A crash can lose
the rows of the last tick (those targets run again next time), never a failure's (written at
once by the scheduler) nor a record of what agentfile created (committed as it is written).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentfile.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    status TEXT,
    exit_code INTEGER,
    pid INTEGER,
    argv TEXT,
    requested TEXT,
    cost_usd REAL DEFAULT 0,
    tokens INTEGER DEFAULT 0,
    duration_s REAL,
    sequential_s REAL,
    counts TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    run TEXT NOT NULL,
    target TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started REAL,
    finished REAL,
    duration_s REAL,
    cost_usd REAL DEFAULT 0,
    tokens INTEGER DEFAULT 0,
    peak_rss_bytes INTEGER,
    cpu_s REAL,
    session TEXT,
    PRIMARY KEY (run, target, attempt)
);
CREATE TABLE IF NOT EXISTS outcomes (
    run TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    duration_s REAL DEFAULT 0,
    cost_usd REAL DEFAULT 0,
    tokens INTEGER DEFAULT 0,
    peak_rss_bytes INTEGER,
    cpu_s REAL,
    exit_code INTEGER,
    detail TEXT,
    node TEXT,
    PRIMARY KEY (run, target)
);
CREATE TABLE IF NOT EXISTS fingerprints (
    target TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    run TEXT NOT NULL,
    recorded REAL NOT NULL
);
-- The commit of a worktree or branch target's work, once merged into a build's integration
-- branch: the target is up to date only while the user's branch holds it.
CREATE TABLE IF NOT EXISTS work (
    target TEXT PRIMARY KEY,
    tip TEXT NOT NULL,
    run TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT,
    created REAL NOT NULL,
    removed REAL,
    PRIMARY KEY (kind, name)
);
-- A worktree or branch target's work, recorded the moment its commit exists (before it is
-- merged, written at once): after a crash of the build the next build merges it from there
-- instead of running it again. `consumed` once a later build has concluded the target.
CREATE TABLE IF NOT EXISTS finished_work (
    run TEXT NOT NULL,
    target TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    branch TEXT NOT NULL,
    base TEXT NOT NULL,
    tip TEXT NOT NULL,
    attempts TEXT NOT NULL,
    recorded REAL NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, target)
);
CREATE INDEX IF NOT EXISTS outcomes_by_target ON outcomes (target, finished);
"""


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    run: str
    target: str
    status: str
    attempts: int
    started: float | None
    finished: float | None
    duration_s: float
    cost_usd: float
    tokens: int
    peak_rss_bytes: int | None
    cpu_s: float | None
    exit_code: int | None
    detail: str | None
    node: str | None = None  # the cluster node it ran on (--executor ray)


@dataclass(frozen=True, slots=True)
class FinishedWork:
    """A finished target's committed work, as recorded before its merge."""

    run: str
    target: str
    fingerprint: str
    branch: str
    base: str
    tip: str
    attempts: list[dict[str, Any]]  # as the attempts table holds them (cost, session, ...)

    @property
    def cost_usd(self) -> float:
        return sum(float(a.get("cost_usd") or 0) for a in self.attempts)


ROOM_BYTES = 256 << 10  # enough for a build's last records: a few dozen pages of the log
# The state databases this process opened: where to look for a damaged row when reading one
# failed (damaged_rows).
OPENED: set[Path] = set()


class Store:
    """A connection to one repository's state database."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        OPENED.add(path)
        with damaged_is_an_error(path, "every target runs again, and `agentfile clean` no "
                                       "longer knows the worktrees and branches builds made "
                                       "(`git worktree list` shows them)"):
            if path.is_dir():
                raise sqlite3.DatabaseError("a directory, not a database")
            if readonly:
                self.db = sqlite3.connect(_readonly_uri(path), uri=True, timeout=10)
                self.db.execute("SELECT count(*) FROM sqlite_master")  # damaged: it says here
            else:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    why = "a file of that name is in the way" if path.parent.is_file() \
                        else err.strerror
                    raise UsageError(f"cannot keep build state in {path.parent}: {why}") \
                        from None
                # Workers record the worktrees and branches they create, under `self.lock`.
                self.db = sqlite3.connect(path, timeout=10, isolation_level=None,
                                          check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                # A crash may lose the last transaction, never corrupt: enough for a build log.
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                for table, columns in _ADDED.items():
                    _add_columns(self.db, table, columns)
            # Tables of the same names but other columns: another program's, or version's.
            present = {name for (name,) in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in present & _COLUMNS.keys():
                wanted = [c for c in _COLUMNS[table] if c not in _ADDED.get(table, ())]
                self.db.execute(f"SELECT {', '.join(wanted)} FROM {table} LIMIT 0")
        self.tables = present  # read-only, an older version's database may lack some
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        self.defer = False  # writes wait in `pending` until commit() (see deferred)
        self.pending: list[tuple[str, Sequence[Any]]] = []
        # Set when the disk is full: writes then wait in `pending`, written once there is
        # room again (or lost with the process); the build stops, nothing is raised.
        self.full: str | None = None

    @property
    def room(self) -> Path:
        """A file of ROOM_BYTES set aside beside the database (keep_room)."""
        return self.path.with_name(self.path.name + ".room")

    def keep_room(self) -> None:
        """Set ROOM_BYTES of the disk aside for a build's last records: should the disk fill
        up, `use_room` gives them up so that the run's end and its targets' outcomes are
        written all the same. Kept from one build to the next; nothing if there is no room."""
        room = self.room
        with contextlib.suppress(OSError):
            if room.stat().st_size == ROOM_BYTES:
                return
        try:
            # Written, not truncated to size: a sparse file would hold no room at all.
            descriptor = os.open(room, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                 0o644)
            try:
                block = bytes(65536)
                for _ in range(ROOM_BYTES // len(block)):
                    os.write(descriptor, block)
            finally:
                os.close(descriptor)
        except OSError:
            with contextlib.suppress(OSError):
                room.unlink()

    def use_room(self) -> None:
        """When the disk is full and records wait: give up the room set aside, and write
        them (the run's end, its outcomes), now."""
        if self.full is None:
            return
        with contextlib.suppress(OSError):
            self.room.unlink()
        self.commit()

    def close(self) -> None:
        self.commit()  # what deferred writes gathered, should nothing have written it yet
        self.db.close()

    def _write(self, sql: str, args: Sequence[Any] = ()) -> None:
        if self.defer or self.full:
            self.pending.append((sql, args))
            return
        self._execute(sql, args)

    def _write_now(self, sql: str, args: Sequence[Any] = ()) -> None:
        """A write committed at once, deferred writes or not (from any thread): a record of
        what agentfile created must survive a crash in the very next moment."""
        self._execute(sql, args)

    def _execute(self, sql: str, args: Sequence[Any]) -> None:
        with self.lock:
            try:
                self.db.execute(sql, args)
            except sqlite3.OperationalError as err:
                if not _is_full(err):
                    raise
                self.full = str(err)
                self.pending.append((sql, args))

    def commit(self) -> None:
        """What deferred writes gathered, written in one transaction: in order within each
        table (the tables do not refer to each other), runs of the same statement as one
        executemany."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        pending.sort(key=lambda write: _table(write[0]))  # stable: a table's order is kept
        with self.lock:
            try:
                self.db.execute("BEGIN")
                try:
                    for sql, rows in itertools.groupby(pending, key=lambda write: write[0]):
                        self.db.executemany(sql, [args for _, args in rows])
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                if not _is_full(err):
                    raise
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                self.full = str(err)
                self.pending = pending + self.pending  # kept, in order, for the next try
                return
            self.full = None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """A query that sees this connection's deferred writes too."""
        self.commit()
        return self.db.execute(sql, args)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Writes wait until `commit()` (or a read), and are written at the end. Rows come
        from one thread, the build's loop; resource records are written at once regardless."""
        self.defer = True
        try:
            yield
        finally:
            self.defer = False
            self.commit()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several writes as one transaction: one commit for a finished target's rows (inside
        `deferred`, they simply wait with the others)."""
        if self.defer:
            yield
            return
        with self.lock:
            self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            with self.lock:
                self.db.execute("ROLLBACK")
            raise
        with self.lock:
            self.db.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, run_id: str, *, pid: int, argv: Sequence[str],
                  requested: Sequence[str], variables: Mapping[str, str] | None = None) -> None:
        self._write(
            "INSERT INTO runs (id, started, pid, argv, requested, variables, status) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running')",
            (run_id, time.time(), pid, json.dumps(list(argv)), json.dumps(list(requested)),
             json.dumps(dict(variables or {}))))

    def finish_run(self, run_id: str, *, status: str, exit_code: int, cost_usd: float,
                   tokens: int, duration_s: float, sequential_s: float,
                   counts: Mapping[str, int]) -> None:
        self._write(
            "UPDATE runs SET finished=?, status=?, exit_code=?, cost_usd=?, tokens=?, "
            "duration_s=?, sequential_s=?, counts=? WHERE id=?",
            (time.time(), status, exit_code, cost_usd, tokens, duration_s, sequential_s,
             json.dumps(dict(counts)), run_id))

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM runs ORDER BY started DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def nodes(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """The cluster nodes each run's targets ran on (none for a local build)."""
        found: dict[str, list[str]] = {}
        marks = ",".join("?" * len(run_ids))
        try:
            rows = self._read(f"SELECT DISTINCT run, node FROM outcomes WHERE node IS NOT NULL "
                              f"AND run IN ({marks}) ORDER BY node", tuple(run_ids))
        except sqlite3.OperationalError:  # a database older than the column, read-only
            return found
        for run, node in rows:
            found.setdefault(run, []).append(node)
        return found

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._read("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def last_run(self, *, finished: bool = False,
                 besides: str | None = None) -> dict[str, Any] | None:
        """The newest run (that finished; other than `besides`)."""
        where = ["finished IS NOT NULL"] if finished else []
        args: tuple[str, ...] = ()
        if besides is not None:
            where.append("id != ?")
            args = (besides,)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        row = self._read(f"SELECT * FROM runs {clause} ORDER BY started DESC LIMIT 1",
                         args).fetchone()
        return dict(row) if row else None

    def close_dead_runs(self, besides: str) -> list[str]:
        """Runs still `running` whose agentfile was killed (SIGKILL, a crash of the machine):
        called by a build holding the lock, so no other build is alive to own them. The
        ids of those closed now."""
        dead = [r["id"] for r in self._read(
            "SELECT id FROM runs WHERE status = 'running' AND id != ?", (besides,))]
        self._write_now("UPDATE runs SET status = 'died' WHERE status = 'running' AND id != ?",
                        (besides,))
        return dead

    def dead_runs(self, *, besides: str | None = None) -> list[str]:
        """Runs that died (or that still say `running`, other than `besides`, the live
        build's): newest first."""
        rows = self._read("SELECT id FROM runs WHERE status IN ('died', 'running') "
                          "AND id IS NOT ? ORDER BY started DESC", (besides,))
        return [r["id"] for r in rows]

    # -- attempts and outcomes ----------------------------------------------------------

    def record_attempt(self, run_id: str, target: str, attempt: int, *, status: str,
                       exit_code: int | None, started: float, finished: float,
                       cost_usd: float, tokens: int, peak_rss_bytes: int | None,
                       cpu_s: float | None, session: str | None) -> None:
        self._write(
            "INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, target, attempt, status, exit_code, started, finished,
             finished - started, cost_usd, tokens, peak_rss_bytes, cpu_s, session))

    def record_outcome(self, row: OutcomeRow) -> None:
        self._write("INSERT OR REPLACE INTO outcomes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (row.run, row.target, row.status, row.attempts, row.started,
                         row.finished, row.duration_s, row.cost_usd, row.tokens,
                         row.peak_rss_bytes, row.cpu_s, row.exit_code, row.detail, row.node))

    def outcomes(self, run_id: str) -> list[OutcomeRow]:
        rows = self._read("SELECT * FROM outcomes WHERE run=? ORDER BY started, target",
                               (run_id,))
        return [OutcomeRow(**dict(r)) for r in rows]

    def durations(self) -> dict[str, float]:
        """Each target's duration in its latest successful run (to weigh the critical path)."""
        rows = self._read(
            "SELECT target, duration_s FROM outcomes o WHERE status='succeeded' AND "
            "finished = (SELECT MAX(finished) FROM outcomes i WHERE i.target=o.target "
            "AND i.status='succeeded')")
        return {r["target"]: float(r["duration_s"] or 0) for r in rows}

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM attempts WHERE run=? ORDER BY started", (run_id,))
        return [dict(r) for r in rows]

    # -- fingerprints -------------------------------------------------------------------

    def fingerprints(self) -> dict[str, str]:
        rows = self._read("SELECT target, fingerprint FROM fingerprints")
        return {r["target"]: r["fingerprint"] for r in rows}

    def record_fingerprint(self, target: str, fingerprint: str, run_id: str) -> None:
        self._write("INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?)",
                        (target, fingerprint, run_id, time.time()))

    def forget_fingerprint(self, target: str) -> None:
        self._write("DELETE FROM fingerprints WHERE target=?", (target,))

    def fingerprint_run(self, target: str) -> str | None:
        row = self._read("SELECT run FROM fingerprints WHERE target=?", (target,)
                              ).fetchone()
        return str(row["run"]) if row else None

    def work_tips(self) -> dict[str, str]:
        return {r["target"]: r["tip"] for r in self._read("SELECT target, tip FROM work")}

    def record_work(self, target: str, tip: str, run_id: str) -> None:
        self._write("INSERT OR REPLACE INTO work VALUES (?,?,?)", (target, tip, run_id))

    def forget_work(self, target: str) -> None:
        self._write("DELETE FROM work WHERE target=?", (target,))

    # -- finished work, for recovery after a crash ---------------------------------------

    def record_finished_work(self, work: FinishedWork) -> None:
        """Written at once, from the worker that made the commit: durable before anything
        after it (the merge, the target's rows) can be cut short."""
        self._write_now("INSERT OR REPLACE INTO finished_work VALUES (?,?,?,?,?,?,?,?,0)",
                        (work.run, work.target, work.fingerprint, work.branch, work.base,
                         work.tip, json.dumps(work.attempts), time.time()))

    def recoverable_work(self, runs: Sequence[str]) -> dict[str, FinishedWork]:
        """Each target's newest unconsumed finished work among those runs (dead ones)."""
        if not runs or "finished_work" not in self.tables:
            return {}
        marks = ",".join("?" * len(runs))
        rows = self._read(f"SELECT * FROM finished_work WHERE consumed = 0 AND run IN ({marks})"
                          " ORDER BY recorded", list(runs))
        return {r["target"]: _finished(r) for r in rows}  # the newest last, so it stays

    def finished_work(self, run_id: str) -> list[FinishedWork]:
        if "finished_work" not in self.tables:
            return []
        rows = self._read("SELECT * FROM finished_work WHERE run = ? ORDER BY recorded",
                          (run_id,))
        return [_finished(r) for r in rows]

    def consume_finished_work(self, target: str, besides_run: str) -> None:
        """A later build concluded the target: earlier builds' work of it is not merged again."""
        self._write("UPDATE finished_work SET consumed = 1 WHERE target = ? AND run != ?",
                    (target, besides_run))

    # -- what a build created (SPEC 6.6): recorded before it exists, marked when removed ----

    def record_resource(self, run_id: str, kind: str, name: str, target: str | None) -> None:
        self._write_now("INSERT OR REPLACE INTO resources VALUES (?,?,?,?,?,NULL)",
                        (run_id, kind, name, target, time.time()))

    def resource_removed(self, kind: str, name: str) -> None:
        self._write_now("UPDATE resources SET removed=? WHERE kind=? AND name=?",
                        (time.time(), kind, name))

    def resources(self, *, run_id: str | None = None,
                  present: bool = True) -> list[dict[str, Any]]:
        query = "SELECT * FROM resources WHERE 1=1"
        args: list[Any] = []
        if run_id is not None:
            query += " AND run=?"
            args.append(run_id)
        if present:
            query += " AND removed IS NULL"
        return [dict(r) for r in self._read(query + " ORDER BY created", args)]


@contextmanager
def damaged_is_an_error(path: Path, consequence: str) -> Iterator[None]:
    """A database file that is not one, or is corrupt, is the user's to move aside: say so
    (exit 2) rather than crash. Any other database error (locked, read-only) passes."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        name = getattr(err, "sqlite_errorname", "")
        if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            raise UsageError(f"{path} is locked by another process ({err}): wait for it to "
                             "end, or stop it, and try again") from None
        if name == "SQLITE_CANTOPEN":
            raise UsageError(f"cannot open {path} ({err}): check that it is a file agentfile "
                             "may read and write") from None
        if name not in ("SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_ERROR", ""):
            raise
        what = "is damaged" if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT", "") else \
            "is not agentfile's (another program's or version's tables)"
        aside = f"mv {shlex.quote(str(path))} {shlex.quote(f'{path}.damaged')}"
        raise UsageError(f"{path} {what} ({err}); move it aside, e.g. `{aside}`, and "
                         f"agentfile starts a new one: {consequence}") from None


# Columns holding JSON (each a list or an object): a row whose value does not decode is damaged.
_JSON_COLUMNS = {"runs": ("argv", "requested", "variables", "counts"),
                 "finished_work": ("attempts",)}


def damaged_rows(path: Path) -> str | None:
    """The first row of the state database at `path` that agentfile cannot read — a number
    column holding text, a JSON column holding no JSON (a hand edit, another program, a bad
    disk) — said as `table runs, column counts (id 2026…)`; None if every row reads."""
    try:
        db = sqlite3.connect(_readonly_uri(path), uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        present = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in sorted(present & _COLUMNS.keys()):
            declared = {row[1]: str(row[2]).upper() for row in
                        db.execute(f"PRAGMA table_info({table})")}
            key = "id" if table == "runs" else "rowid"
            for column, kind in declared.items():
                if kind not in ("REAL", "INTEGER"):
                    continue
                found = db.execute(
                    f"SELECT {key}, {column} FROM {table} WHERE typeof({column}) NOT IN "
                    "('integer', 'real', 'null') LIMIT 1").fetchone()
                if found is not None:
                    return (f"table {table}, column {column} holds {str(found[1])[:40]!r}, "
                            f"not a number ({key} {found[0]})")
            for column in _JSON_COLUMNS.get(table, ()):
                if column not in declared:
                    continue
                for row_key, value in db.execute(
                        f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL"):
                    try:
                        decoded = json.loads(value)
                    except (TypeError, ValueError):
                        decoded = None
                    if not isinstance(decoded, (list, dict)):
                        return (f"table {table}, column {column} holds "
                                f"{str(value)[:40]!r}, not JSON ({key} {row_key})")
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return None


def damaged_row_error(path: Path, where: str) -> UsageError:
    aside = f"mv {shlex.quote(str(path))} {shlex.quote(f'{path}.damaged')}"
    return UsageError(f"{path} has a damaged row: {where}. Move the file aside, e.g. "
                      f"`{aside}`, and agentfile starts a new one (every target runs again, "
                      "and `agentfile clean` no longer knows the worktrees and branches "
                      "builds made: `git worktree list` shows them)")


def _is_full(err: sqlite3.Error) -> bool:
    return getattr(err, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(err)


def _columns(schema: str) -> dict[str, tuple[str, ...]]:
    """Each table's columns, as SCHEMA declares them."""
    tables: dict[str, tuple[str, ...]] = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", schema,
                                 flags=re.S):
        words = [line.split()[0] for line in body.strip().splitlines() if line.strip()]
        tables[name] = tuple(w for w in words if w not in ("PRIMARY", "UNIQUE"))
    return tables


_COLUMNS = _columns(SCHEMA)
# Columns a later version added: a database written before them lacks them until the next
# build opens it for writing (_add_columns); readers do without.
_ADDED: dict[str, dict[str, str]] = {"outcomes": {"node": "TEXT"}, "runs": {"variables": "TEXT"}}


def _finished(row: sqlite3.Row) -> FinishedWork:
    return FinishedWork(row["run"], row["target"], row["fingerprint"], row["branch"],
                        row["base"], row["tip"], json.loads(row["attempts"]))


@functools.cache
def _table(sql: str) -> str:
    """The table a write statement changes."""
    match = re.search(r"\b(?:INTO|UPDATE|FROM)\s+(\w+)", sql)
    return match.group(1) if match else ""


def _readonly_uri(path: Path) -> str:
    """Where to read the database without writing anything beside it. With no write-ahead log
    there is no writer (the last connection folds the log back in and deletes it): the file
    is read as it is, since a plain read-only open would create the log and its index (`-n`
    writes nothing). A writer's log is read too, through the index it keeps. A build that
    starts during such a read writes to its own log, not the file, until a checkpoint: the
    readers here are short (one query or a few), so they do not meet one."""
    uri = path.absolute().as_uri() + "?mode=ro"
    if not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"
    return uri


def open_store(path: Path, *, readonly: bool = False) -> Store | None:
    """The store, or None when reading one that does not exist yet."""
    if readonly and not path.is_file():
        return None
    return Store(path, readonly=readonly)



def _add_columns(db: sqlite3.Connection, table: str, columns: Mapping[str, str]) -> None:
    """Columns a later version added to a table, added to a database an earlier one made."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
