"""Policy snapshots (learner -> replicas) and the learner's checkpoint, as atomically written files.

A snapshot is ``policy-<seq>.pkl`` (the versioned pickle of :func:`models.policies.dumps`) plus
``latest.json`` naming the newest one with its metadata; replicas watch ``latest.json``'s
modification time and load a newer snapshot without a restart. Every file is written to a temp
name, fsynced, renamed into place, and the folder fsynced, so a reader sees a whole old file or a
whole new one. The checkpoint is the learner itself (policy, pending decisions, waiting rewards,
counters) with its event-log offsets, pickled in one envelope that refuses other code versions.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.learner import OnlineLearner
from models.policies.base import POLICY_FORMAT, RIVER_VERSION, Policy, PolicyFormatError, dumps, loads

KEEP = 5
"""Snapshot files kept; older ones are removed after each publish."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temp file and a rename (then fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``latest.json`` says about the newest snapshot."""

    seq: int
    file: str
    policy: str
    policy_version: str
    source: str
    champion_version: str | None
    written_at: float
    learner: dict[str, Any] = field(default_factory=dict)
    apprentice: dict[str, Any] = field(default_factory=dict)


class SnapshotStore:
    """The snapshot folder shared by the learner (writer) and the replicas (readers).

    Examples
    --------
    >>> import tempfile
    >>> from models.policies import RuleBased
    >>> store = SnapshotStore(tempfile.mkdtemp())
    >>> store.latest() is None
    True
    >>> store.publish(RuleBased(version="r1"), source="rule_baseline", champion_version=None).seq
    1
    >>> info, policy = store.load_latest()
    >>> info.seq, policy.version
    (1, 'r1')
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def pointer(self) -> Path:
        """``latest.json``."""
        return self.root / "latest.json"

    def stamp(self) -> int:
        """The pointer's modification time in ns (0 when none): cheap to poll."""
        try:
            return os.stat(self.pointer).st_mtime_ns
        except FileNotFoundError:
            return 0

    def latest(self) -> SnapshotInfo | None:
        """The newest snapshot's metadata, or ``None``."""
        try:
            return SnapshotInfo(**json.loads(self.pointer.read_text()))
        except FileNotFoundError:
            return None

    def load_latest(self) -> tuple[SnapshotInfo, Policy] | None:
        """The newest snapshot and its policy, or ``None``."""
        info = self.latest()
        if info is None:
            return None
        return info, loads((self.root / info.file).read_bytes())

    def publish(
        self,
        policy: Policy,
        *,
        source: str,
        champion_version: str | None,
        learner: dict[str, Any] | None = None,
        apprentice: dict[str, Any] | None = None,
        written_at: float = 0.0,
    ) -> SnapshotInfo:
        """Write ``policy`` as the next snapshot and point ``latest.json`` at it."""
        previous = self.latest()
        seq = (previous.seq if previous else 0) + 1
        name = f"policy-{seq:08d}.pkl"
        write_atomic(self.root / name, dumps(policy))
        info = SnapshotInfo(
            seq=seq,
            file=name,
            policy=policy.name,
            policy_version=policy.version,
            source=source,
            champion_version=champion_version,
            written_at=written_at,
            learner=learner or {},
            apprentice=apprentice or {},
        )
        write_atomic(self.pointer, json.dumps(asdict(info)).encode())
        for old in sorted(self.root.glob("policy-*.pkl"))[:-KEEP]:
            old.unlink(missing_ok=True)
        return info


CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """The learner's whole state, where in the event log it stands and what it consumed last."""

    learner: OnlineLearner
    offsets: dict[str, int]
    source: str
    champion_version: str | None
    consumed: list[str] = field(default_factory=list)
    """The latest event keys applied (oldest first): a bus's redelivery after a restart is
    recognised and not learned twice."""


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Pickle ``checkpoint`` atomically, in an envelope naming the format and River versions."""
    envelope = {
        "oo_checkpoint_format": CHECKPOINT_FORMAT,
        "oo_policy_format": POLICY_FORMAT,
        "river": RIVER_VERSION,
        "payload": pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL),
    }
    write_atomic(path, pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` when there is none; :class:`PolicyFormatError` when it
    was written by other code."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    envelope = pickle.loads(data)
    versions = (envelope.get("oo_checkpoint_format"), envelope.get("oo_policy_format"), envelope.get("river"))
    if versions != (CHECKPOINT_FORMAT, POLICY_FORMAT, RIVER_VERSION):
        raise PolicyFormatError(f"learner checkpoint {path} written by other code {versions}")
    checkpoint = pickle.loads(envelope["payload"])
    if not isinstance(checkpoint, Checkpoint):
        raise PolicyFormatError(f"{path} holds a {type(checkpoint).__name__}, not a Checkpoint")
    return checkpoint
