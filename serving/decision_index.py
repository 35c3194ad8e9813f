"""Every decision served, by id: whose it is, what was chosen, the answer given, its reward.

Replicas share it to refuse rewards for unknown or foreign decisions, to count a reward once and
to answer a repeated ``event_id`` with the decision already made. SQLite in WAL mode under the
serving state dir (one machine; past one, the same table belongs in the app database). It is an
index, not the record: the event log holds the decisions durably (fsynced) before the index is
written, so its commits skip the fsync (``synchronous=NORMAL``).
"""

from __future__ import annotations

import sqlite3
import threading
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


def _ts(at: datetime) -> float:
    return at.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

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
            cur = self._db.execute(
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
            return cur.rowcount == 1

    def get(self, decision_id: UUID) -> IndexedDecision | None:
        """The decision ``decision_id``, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM decisions WHERE decision_id = ?", (str(decision_id),)).fetchone()
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
            cur = self._db.execute(
                "UPDATE decisions SET activated_at = ? WHERE decision_id = ? AND activated_at IS NULL",
                (_ts(at), str(decision_id)),
            )
            return cur.rowcount == 1

    def reward_of(self, decision_id: UUID) -> IndexedReward | None:
        """The reward counted for ``decision_id``, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM rewards WHERE decision_id = ?", (str(decision_id),)).fetchone()
        if row is None:
            return None
        return IndexedReward(UUID(row[0]), UUID(row[1]), row[2], float(row[3]), row[4])

    def add_reward(
        self, decision_id: UUID, reaction_id: UUID, reaction: str, reward: float, status: str, occurred_at: datetime
    ) -> bool:
        """Count a reward for ``decision_id``; ``False`` when one was counted already."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO rewards VALUES (?, ?, ?, ?, ?, ?)",
                (str(decision_id), str(reaction_id), reaction, reward, status, _ts(occurred_at)),
            )
            return cur.rowcount == 1

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        """Every decision indexed for ``user_id``, with its reward when one was counted (an export)."""
        with self._lock:
            rows = self._db.execute(
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
            ids = [r[0] for r in self._db.execute("SELECT decision_id FROM decisions WHERE user_id = ?", (user_id,))]
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM rewards WHERE decision_id = ?", [(i,) for i in ids])
            self._db.execute("DELETE FROM decisions WHERE user_id = ?", (user_id,))
            self._db.execute("COMMIT")
        return [UUID(i) for i in ids]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
