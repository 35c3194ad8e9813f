"""Every decision served, by id: whose it is, what was chosen, the answer given, its reward.

Replicas share it to refuse rewards for unknown or foreign decisions, to count a reward once and
to answer a repeated ``event_id`` with the decision already made. On one machine: SQLite in WAL
mode under the serving state dir (:class:`DecisionIndex`). Past one machine replicas behind a load
balancer must share it, or a reward that reaches another replica than the one that decided would
be refused as unknown: :class:`PostgresDecisionIndex` keeps the same tables in PostgreSQL (schema
``serving``), chosen by ``OO_SERVING__INDEX_URL`` (:func:`open_index`). It is an index, not the
record: the event log (or the spool) holds the decisions durably (fsynced) before the index is
written, so SQLite's commits skip the fsync (``synchronous=NORMAL``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    decided_at REAL NOT NULL,
    chosen_id TEXT NOT NULL,
    chosen_kind TEXT NOT NULL,
    deferred INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    activated_at REAL
);
CREATE TABLE IF NOT EXISTS rewards (
    decision_id TEXT PRIMARY KEY,
    reaction_id TEXT NOT NULL,
    reaction TEXT NOT NULL,
    reward REAL NOT NULL,
    status TEXT NOT NULL,
    occurred_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class IndexedDecision:
    """One decision as the index holds it."""

    decision_id: UUID
    user_id: str
    decided_at: datetime
    chosen_id: str
    chosen_kind: str
    deferred: bool
    request_hash: str
    response: str
    activated_at: datetime | None


@dataclass(frozen=True)
class IndexedReward:
    """The reward counted for a decision (the first one)."""

    decision_id: UUID
    reaction_id: UUID
    reaction: str
    reward: float
    status: str


log = logging.getLogger(__name__)


def _ts(at: datetime) -> float:
    return at.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


CHECKPOINT_EVERY_S = 1.0
"""How often a background connection moves the SQLite index's write-ahead log into its database
file (a passive checkpoint: no writer waits for it). SQLite's automatic checkpoint (every 1,000
pages) runs inside the commit that crosses the mark, here the group commit's thread that every
concurrent rank waits for: 5 to 16 ms every 230 or so decisions of 3.5 KB answers, measured."""


class _Checkpointer:
    """A daemon thread with its own connection, checkpointing a WAL database every ``every_s``."""

    def __init__(self, path: Path, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, every_s), name="oo-index-wal", daemon=True)
        self._thread.start()

    def _run(self, path: Path, every_s: float) -> None:
        db = sqlite3.connect(path, check_same_thread=False, timeout=10.0, isolation_level=None)
        try:
            while not self._stop.wait(every_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the next round tries again; the WAL only grows meanwhile
                    log.warning("decision index: WAL checkpoint failed (%s)", exc)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class DecisionIndex:
    """The decisions and rewards of every replica on this machine (thread-safe).

    Examples
    --------
    >>> import tempfile
    >>> index = DecisionIndex(Path(tempfile.mkdtemp()) / "index.db")
    >>> at = datetime(2026, 5, 1, tzinfo=UTC)
    >>> index.add(UUID(int=1), "u1", at, "task:1", "todoist_task", False, "h", "{}")
    True
    >>> index.get(UUID(int=1)).user_id, index.get(UUID(int=2))
    ('u1', None)
    >>> index.add_reward(UUID(int=1), UUID(int=9), "done", 1.0, "accepted", at), index.reward_of(UUID(int=1)).reward
    (True, 1.0)
    """

    def __init__(self, path: str | Path, checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints off the commit path
        self._db.executescript(SCHEMA)
        self._checkpointer = _Checkpointer(self.path, checkpoint_every_s)

    def add(
        self,
        decision_id: UUID,
        user_id: str,
        decided_at: datetime,
        chosen_id: str,
        chosen_kind: str,
        deferred: bool,
        request_hash: str,
        response: str,
    ) -> bool:
        """Index a decision; ``False`` when its id is already indexed (nothing changes)."""
        with self._lock:
            cur = self._exec(
                "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    str(decision_id),
                    user_id,
                    _ts(decided_at),
                    chosen_id,
                    chosen_kind,
                    int(deferred),
                    request_hash,
                    response,
                ),
            )
            return bool(cur.rowcount == 1)

    def get(self, decision_id: UUID) -> IndexedDecision | None:
        """The decision ``decision_id``, or ``None``."""
        with self._lock:
            row = self._exec("SELECT * FROM decisions WHERE decision_id = ?", (str(decision_id),)).fetchone()
        if row is None:
            return None
        return IndexedDecision(
            decision_id=UUID(row[0]),
            user_id=row[1],
            decided_at=datetime.fromtimestamp(row[2], UTC),
            chosen_id=row[3],
            chosen_kind=row[4],
            deferred=bool(row[5]),
            request_hash=row[6],
            response=row[7],
            activated_at=_dt(row[8]),
        )

    def activate(self, decision_id: UUID, at: datetime) -> bool:
        """Mark a decision seen; ``False`` when it already was."""
        with self._lock:
            cur = self._exec(
                "UPDATE decisions SET activated_at = ? WHERE decision_id = ? AND activated_at IS NULL",
                (_ts(at), str(decision_id)),
            )
            return bool(cur.rowcount == 1)

    def reward_of(self, decision_id: UUID) -> IndexedReward | None:
        """The reward counted for ``decision_id``, or ``None``."""
        with self._lock:
            row = self._exec("SELECT * FROM rewards WHERE decision_id = ?", (str(decision_id),)).fetchone()
        if row is None:
            return None
        return IndexedReward(UUID(row[0]), UUID(row[1]), row[2], float(row[3]), row[4])

    def add_reward(
        self, decision_id: UUID, reaction_id: UUID, reaction: str, reward: float, status: str, occurred_at: datetime
    ) -> bool:
        """Count a reward for ``decision_id``; ``False`` when one was counted already."""
        with self._lock:
            cur = self._exec(
                "INSERT OR IGNORE INTO rewards VALUES (?, ?, ?, ?, ?, ?)",
                (str(decision_id), str(reaction_id), reaction, reward, status, _ts(occurred_at)),
            )
            return bool(cur.rowcount == 1)

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        """Every decision indexed for ``user_id``, with its reward when one was counted (an export)."""
        with self._lock:
            rows = self._exec(
                "SELECT d.decision_id, d.decided_at, d.chosen_id, d.chosen_kind, d.deferred, d.activated_at,"
                " r.reaction, r.reward, r.status FROM decisions d LEFT JOIN rewards r USING (decision_id)"
                " WHERE d.user_id = ? ORDER BY d.decided_at",
                (user_id,),
            ).fetchall()
        return [
            {
                "decision_id": row[0],
                "decided_at": datetime.fromtimestamp(row[1], UTC).isoformat(),
                "chosen_id": row[2],
                "chosen_kind": row[3],
                "deferred": bool(row[4]),
                "activated_at": None if row[5] is None else datetime.fromtimestamp(row[5], UTC).isoformat(),
                "reaction": row[6],
                "reward": row[7],
                "reward_status": row[8],
            }
            for row in rows
        ]

    def forget(self, user_id: str) -> list[UUID]:
        """Remove ``user_id``'s decisions and their rewards; the ids removed."""
        with self._lock:
            ids = [r[0] for r in self._exec("SELECT decision_id FROM decisions WHERE user_id = ?", (user_id,))]
            self._transaction(
                [("DELETE FROM rewards WHERE decision_id = ?", (i,)) for i in ids]
                + [("DELETE FROM decisions WHERE user_id = ?", (user_id,))]
            )
        return [UUID(i) for i in ids]

    def close(self) -> None:
        """Close the connection (after the background checkpointer's)."""
        self._checkpointer.stop()
        with self._lock:
            self._db.close()

    # -- the statements, run under ``self._lock`` (one connection; SQLite's own lock does the rest)

    def _exec(self, sql: str, params: Sequence[Any]) -> Any:
        return self._db.execute(sql, params)

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        self._db.execute("BEGIN")
        for sql, params in statements:
            self._db.execute(sql, params)
        self._db.execute("COMMIT")


class PostgresDecisionIndex(DecisionIndex):
    """The same index in PostgreSQL (schema ``serving``), shared by replicas on many machines.

    One autocommit connection per process, under the same lock as SQLite's (each statement is a
    single round trip on a keyed row). A broken connection (the server restarted) is opened again
    and the statement retried once; the inserts are ``ON CONFLICT DO NOTHING``, so a retry after a
    commit whose answer was lost reports the row as already there rather than adding it twice.
    """

    def __init__(self, url: str) -> None:  # noqa: D107 (no path: the URL names the database)
        self.url = url
        self._lock = threading.Lock()
        self._pg: Any = self._connect()

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        conn.execute("CREATE SCHEMA IF NOT EXISTS serving")
        conn.execute("SET search_path TO serving")
        for statement in SCHEMA.replace(" REAL", " DOUBLE PRECISION").split(";"):
            if statement.strip():
                conn.execute(statement)
        return conn

    @staticmethod
    def _sql(sql: str) -> str:
        if sql.startswith("INSERT OR IGNORE"):
            sql = sql.replace("INSERT OR IGNORE", "INSERT", 1) + " ON CONFLICT DO NOTHING"
        return sql.replace("?", "%s")

    def _exec(self, sql: str, params: Sequence[Any]) -> Any:
        import psycopg

        try:
            return self._pg.execute(self._sql(sql), params)
        except psycopg.OperationalError as exc:
            if not self._pg.closed and not self._pg.broken:
                raise
            log.warning("decision index: connection lost (%s); reconnecting", exc)
            self._pg = self._connect()
            return self._pg.execute(self._sql(sql), params)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._pg.close()

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._pg.transaction():
            for sql, params in statements:
                self._pg.execute(self._sql(sql), params)


def open_index(url: str | None, state_dir: Path) -> DecisionIndex:
    """PostgreSQL at ``url`` when given (replicas on many machines), else SQLite in ``state_dir``."""
    if url:
        return PostgresDecisionIndex(url)
    return DecisionIndex(state_dir / "decisions.db")
