"""The one learner: reads decisions, rewards and activations from the event log, feeds the
:class:`models.learner.OnlineLearner`, publishes snapshots and checkpoints, follows ``@champion``.

Every replica appends to the same event log (fsynced), so the learner sees every replica's
decisions; it reads the three topics from its own offsets, in whatever order their lines
arrive (the learner holds a reward that comes before its decision). Its whole state and the
offsets are checkpointed together, atomically, so a restarted learner resumes exactly: pending
decisions, waiting rewards and the learned policy intact, and the lines after the checkpoint
replayed once.

In the embedded default, the service owns a loop and calls :meth:`LearnerLoop.poll` right after
it logs a decision or a reward (a reward reaches the next rank within milliseconds);
``python -m serving.learner`` runs the same loop alone, for replicas that follow snapshots.
Past one machine, :mod:`serving.bus_feed` hands it the bus's messages through :meth:`LearnerLoop.apply`
instead; the event keys it consumed last are checkpointed too, so a message the bus delivers again
after a restart is recognised and not learned twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from data_contracts import Activation, Decision, RewardEvent
from models.learner import OnlineLearner
from models.policies import Policy
from oo.bus import event_key
from oo.events_ingest import EventLog
from oo.settings import Settings
from serving import lifecycle
from serving.snapshots import Checkpoint, SnapshotStore, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

TOPICS = ("decisions", "rewards", "activations")
"""What the learner reads (in this order on each poll)."""

_MODELS: dict[str, type[Decision] | type[RewardEvent] | type[Activation]] = {
    "decisions": Decision,
    "rewards": RewardEvent,
    "activations": Activation,
}

RECENT_KEYS = 100_000
"""Event keys the learner remembers (and checkpoints) to recognise a redelivered event."""

EXPECTED_LINES = 1024
"""Decisions this process logged whose records the learner keeps until it reads their lines."""


def round_trips(decision: Decision) -> bool:
    """Whether ``decision`` reads back from its JSON line as itself: not when a feature is NaN or
    infinite (JSON has no such number; the line holds ``null``, which the contract refuses)."""
    return math.isfinite(sum(decision.features.values())) and all(
        math.isfinite(sum(c.features.values())) for c in decision.candidates
    )


def would_pick(decision: Decision, learner_policy: Policy) -> str | None:
    """In apprentice mode, the learner's own pick logged as the decision's first shadow."""
    if decision.policy == learner_policy.name:
        return None
    for pick in decision.shadow:
        if pick.policy == learner_policy.name:
            return pick.chosen_id
    return None


class LearnerLoop:
    """The learner's state and the I/O around it (event log in, snapshots and checkpoint out).

    Thread-safe: :attr:`lock` guards the learner; the service holds it while the policy scores.
    """

    def __init__(
        self,
        settings: Settings,
        events: EventLog,
        snapshots: SnapshotStore,
        *,
        on_champion_change: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.snapshots = snapshots
        self.checkpoint_path = settings.serving_state_dir / "learner.ckpt"
        self.lock = threading.RLock()
        self._checkpointing = threading.Lock()
        self.on_champion_change = on_champion_change
        self.champion_reloads = 0
        self.malformed = 0
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._last_champion_poll = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self.checkpoints = 0
        self.redelivered = 0
        self.consumed: OrderedDict[str, None] = OrderedDict()
        self._expected: OrderedDict[bytes, Decision] = OrderedDict()
        self._expected_lock = threading.Lock()  # not the learner's: a rank never waits for a poll here
        cfg = settings.serving
        restored = load_checkpoint(self.checkpoint_path)
        loaded = lifecycle.initial_policy(settings, snapshots) if restored is None else None
        if restored is not None:
            self.learner = restored.learner
            self.offsets = dict(restored.offsets)
            self.source = restored.source
            self.champion_version = restored.champion_version
            self.consumed = OrderedDict.fromkeys(getattr(restored, "consumed", []))
            log.info(
                "learner: resumed from checkpoint (%d pending, %d waiting, offsets %s)",
                self.learner.pending,
                self.learner.waiting,
                self.offsets,
            )
            self.poll_champion()
        else:
            assert loaded is not None
            self.learner = OnlineLearner(
                loaded.policy,
                window=timedelta(hours=settings.reward.window_hours),
                max_pending=cfg.max_pending,
                default_reward=settings.reward.default_reward,
                hold=timedelta(seconds=cfg.reward_hold_s),
                max_waiting=cfg.max_waiting_rewards,
                apprentice_window=cfg.apprentice_window,
            )
            # a new learner starts from a trained policy: it learns what is logged from now on
            self.offsets = {t: self._end_of(t) for t in TOPICS}
            self.source = loaded.source
            self.champion_version = loaded.champion_version

    def _end_of(self, topic: str) -> int:
        path = self.events.path(topic)
        return path.stat().st_size if path.exists() else 0

    @property
    def policy(self) -> Policy:
        """The learning policy (served as is in the embedded online mode)."""
        return self.learner.policy

    # -- reading the log ---------------------------------------------------------------------
    def poll(self, now: datetime | None = None) -> int:
        """Apply every new line of the three topics; close windows due by ``now``. Lines applied."""
        applied = 0
        with self.lock:
            for topic in TOPICS:
                lines, end = self.events.read(topic, "learner", start=self.offsets.get(topic, 0))
                for line in lines:
                    applied += self.apply(topic, line) is not None
                self.offsets[topic] = end
            self.expire(now)
        return applied

    def expect(self, line: bytes, decision: Decision) -> None:
        """``decision`` is about to be logged as ``line`` (its JSON, without the newline): when the
        learner reads that line it takes ``decision`` as it is rather than parsing and validating
        the line again (most of an embedded poll after a rank). Only records that read back as
        themselves are kept (see :func:`round_trips`); the line is what decides, byte for byte."""
        if not round_trips(decision):
            return
        with self._expected_lock:
            self._expected[line] = decision
            while len(self._expected) > EXPECTED_LINES:
                self._expected.popitem(last=False)

    def expire(self, now: datetime | None = None) -> int:
        """Close the reward windows due by ``now`` (default rewards, skipped deferred decisions)."""
        with self.lock:
            return self.learner.expire(now or datetime.now(UTC))

    def apply(self, topic: str, line: bytes) -> bool | None:
        """Apply one event (a line of the event log, a message of the bus): ``True`` when applied,
        ``False`` when it was applied before (a redelivery), ``None`` when malformed (skipped)."""
        record: Decision | RewardEvent | Activation | None = None
        if topic == "decisions" and self._expected:
            with self._expected_lock:
                record = self._expected.pop(line, None)
        if record is None:
            try:
                record = _MODELS[topic].model_validate_json(line)
            except ValidationError as exc:  # the ingest quarantines it; the learner skips it
                self.malformed += 1
                log.warning("learner: skipping a malformed %s event: %s", topic, exc.errors()[:1])
                return None
        key = f"{topic}:{event_key(record)}"
        with self.lock:
            if key in self.consumed:
                self.redelivered += 1
                return False
            self._apply(record)
            self.consumed[key] = None
            while len(self.consumed) > RECENT_KEYS:
                self.consumed.popitem(last=False)
        return True

    def _apply(self, record: Decision | RewardEvent | Activation) -> None:
        if isinstance(record, Decision):
            d = record
            chosen = next(c for c in d.candidates if c.candidate_id == d.chosen_id)
            statuses = self.learner.observe(
                d.decision_id,
                d.features,
                chosen,
                d.decided_at,
                deferred=d.defer_activation,
                would_pick=would_pick(d, self.learner.policy),
            )
            self._since_snapshot += statuses.count("learned")
        elif isinstance(record, RewardEvent):
            r = record
            if not r.late:
                status = self.learner.offer_reward(r.decision_id, r.reward, r.occurred_at, datetime.now(UTC))
                self._since_snapshot += status == "learned"
        else:
            a = record
            self._since_snapshot += self.learner.activate(a.decision_id, a.activated_at) == "learned"

    # -- snapshots, checkpoint, champion -----------------------------------------------------
    def tick(self, now: float | None = None) -> bool:
        """Publish a snapshot when N rewards or S seconds have passed with news; checkpoint and
        poll ``@champion`` when due. Whether a snapshot was published.

        The checkpoint holds every pending decision, so it is written on its own (slower) clock:
        what came after it is replayed from the event log on restart.
        """
        cfg = self.settings.serving
        mono = time.monotonic() if now is None else now
        if mono - self._last_champion_poll >= cfg.champion_poll_s:
            self.poll_champion()
        due = self._since_snapshot >= cfg.snapshot_every_rewards or (
            self._since_snapshot > 0 and mono - self._last_snapshot >= cfg.snapshot_every_s
        )
        if due:
            self.publish()
        if mono - self._last_checkpoint >= cfg.checkpoint_every_s:
            self.checkpoint()
        return due

    def publish(self) -> None:
        """Publish the policy as a snapshot."""
        with self.lock:
            info = self.snapshots.publish(
                self.learner.policy,
                source=self.source,
                champion_version=self.champion_version,
                learner=self.stats(),
                apprentice=asdict(self.learner.apprentice),
                written_at=time.time(),
            )
            self._since_snapshot = 0
            self._last_snapshot = time.monotonic()
        log.debug("learner: snapshot %d", info.seq)

    def checkpoint(self) -> None:
        """Persist the learner, its offsets and the keys it consumed last (atomic).

        The learner's lock (which every rank of the embedded default takes) is held only while a
        copy is taken; the copy is pickled and written after it, one checkpoint at a time, so an
        older state never replaces a newer one."""
        self._last_checkpoint = time.monotonic()
        with self._checkpointing:
            with self.lock:
                learner, offsets, consumed = self.learner.checkpoint_copy(), dict(self.offsets), self.consumed.copy()
                source, champion = self.source, self.champion_version
            save_checkpoint(self.checkpoint_path, Checkpoint(learner, offsets, source, champion, list(consumed)))
            self.checkpoints += 1

    def poll_champion(self) -> bool:
        """Restart the online state from a new ``@champion``, if it moved; whether it did."""
        self._last_champion_poll = time.monotonic()
        try:
            version = lifecycle.champion_version(self.settings)
            if version is None or version == self.champion_version:
                return False
            policy = lifecycle.load_champion(self.settings, version)
        except lifecycle.MlflowUnavailable as exc:
            log.warning("learner: cannot look up @champion (%s); keeping %s", exc, self.learner.policy.version)
            return False
        previous = self.champion_version
        with self.lock:
            self.learner.replace_policy(policy)
            self.champion_version = version
            self.source = lifecycle.CHAMPION
            self.champion_reloads += 1
        log.info(
            "learner: @champion moved from v%s to v%s; online state restarted from %s",
            previous,
            version,
            policy.version,
        )
        if self.on_champion_change is not None:
            self.on_champion_change(previous, version)
        self.publish()
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for readiness and the snapshot metadata."""
        return {
            **asdict(self.learner.counts),
            "pending": self.learner.pending,
            "waiting": self.learner.waiting,
            "champion_reloads": self.champion_reloads,
            "malformed": self.malformed,
            "redelivered": self.redelivered,
        }


class Background:
    """Runs ``poll`` and ``tick`` of a loop every ``interval`` seconds in a daemon thread."""

    def __init__(self, loop: LearnerLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oo-learner", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.loop.poll()
                self.loop.tick()
            except Exception:  # keep learning after a transient failure (disk full, MLflow blip)
                log.exception("learner: poll failed; retrying in %.2f s", self.interval)

    def stop(self) -> None:
        """Stop the thread, then checkpoint."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.loop.checkpoint()
