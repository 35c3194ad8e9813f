"""Where the served policy comes from in a replica: the embedded learner's own policy, or the
newest snapshot of the separate learner (loaded without a restart)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from models.policies import Policy
from oo.settings import Settings
from serving import lifecycle, metrics
from serving.learning import LearnerLoop
from serving.snapshots import SnapshotStore

log = logging.getLogger(__name__)


class PolicySource(Protocol):
    """What the ranker needs: the current policy (under a lock while it scores) and a description."""

    lock: Any

    def policy(self) -> Policy:
        """The learning policy now."""

    def refresh(self) -> None:
        """Catch up (a replica looks for a newer snapshot)."""

    def describe(self) -> dict[str, Any]:
        """Model source and learner stats for readiness."""


class EmbeddedSource:
    """The embedded default: the in-process learner's policy, updated the moment a reward lands."""

    def __init__(self, loop: LearnerLoop) -> None:
        self.loop = loop
        self.lock = loop.lock

    def policy(self) -> Policy:
        return self.loop.policy

    def refresh(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        p = self.loop.policy
        return {
            "learner": "embedded",
            "model_source": self.loop.source,
            "champion_version": self.loop.champion_version,
            "policy": p.name,
            "policy_version": p.version,
            "learner_stats": self.loop.stats(),
            "apprentice": _apprentice(self.loop.learner.apprentice),
        }


def _apprentice(stats: Any) -> dict[str, Any]:
    return {
        "decisions": stats.decisions,
        "baseline_reward": stats.baseline_reward,
        "learner_reward": stats.learner_reward,
        "ratio": stats.ratio,
    }


class SnapshotSource:
    """A replica of many: the policy at start (champion / snapshot / rule), then each newer snapshot."""

    def __init__(self, settings: Settings, snapshots: SnapshotStore) -> None:
        self.settings = settings
        self.snapshots = snapshots
        self.lock = threading.RLock()
        loaded = lifecycle.initial_policy(settings, snapshots)
        self._policy = loaded.policy
        self.source = loaded.source
        self.champion_version = loaded.champion_version
        info = snapshots.latest()
        self.seq = info.seq if info is not None and loaded.source == lifecycle.SNAPSHOT else 0
        self._stamp = snapshots.stamp()
        self._checked = time.monotonic()
        self.loads = 0

    def policy(self) -> Policy:
        return self._policy

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.settings.serving.snapshot_poll_s:
            return
        self._checked = now
        stamp = self.snapshots.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        loaded = self.snapshots.load_latest()
        if loaded is None or loaded[0].seq <= self.seq:
            return
        info, policy = loaded
        with self.lock:
            self._policy, self.seq = policy, info.seq
            self.source, self.champion_version = lifecycle.SNAPSHOT, info.champion_version
        self.loads += 1
        metrics.SNAPSHOT_LOADS.inc()
        log.info("replica: loaded snapshot %d (%s %s)", info.seq, info.policy, info.policy_version)

    def describe(self) -> dict[str, Any]:
        info = self.snapshots.latest()
        return {
            "learner": "separate",
            "model_source": self.source,
            "champion_version": self.champion_version,
            "policy": self._policy.name,
            "policy_version": self._policy.version,
            "snapshot_seq": self.seq,
            "snapshot_loads": self.loads,
            "learner_stats": info.learner if info else {},
            "apprentice": info.apprentice if info else {},
        }
