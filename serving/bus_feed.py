"""The separate learner's input past one machine: decisions, rewards and activations from NATS
JetStream, acknowledged only once a checkpoint holds them.

Three durable pull consumers (``<name>_decisions``, ``<name>_rewards``, ``<name>_activations``)
hand messages to :meth:`serving.learning.LearnerLoop.apply` in whatever order they arrive from
every replica. A message is acked only after the checkpoint that includes its effect is written,
so a learner killed at any point loses nothing:

- killed before the checkpoint: the server redelivers the unacked messages (after
  ``OO_BUS__ACK_WAIT_S``) to the restarted learner, which starts from the older checkpoint and
  applies them once;
- killed between the checkpoint and the acks: they come again, and the checkpointed keys of what
  was consumed last recognise them (counted as ``redelivered``, not learned twice).

The learner therefore checkpoints at least every ``OO_BUS__ACK_WAIT_S / 2`` while it holds unacked
messages (sooner than ``OO_SERVING__CHECKPOINT_EVERY_S`` when that is longer), and whenever
``max_unacked`` pile up. A malformed message is dead-lettered and terminated.

NATS down: the learner checkpoints what it has, drops its connection and reconnects with a
growing pause (at most ``MAX_BACKOFF_S``); the messages it had not acked come again and are
recognised by the checkpointed keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from oo.bus import Delivery, NatsBus, Pull
from serving.learning import TOPICS, LearnerLoop

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 1.0
"""How often reward windows are closed (a pass over the pending decisions)."""

MAX_BACKOFF_S = 5.0
"""The longest pause between reconnection attempts while NATS is down."""


class BusFeed:
    """Feeds a :class:`LearnerLoop` from the bus; acks after its checkpoints."""

    def __init__(
        self,
        loop: LearnerLoop,
        bus: NatsBus,
        *,
        consumer: str = "learner",
        batch: int = 256,
        max_unacked: int = 50_000,
    ) -> None:
        self.loop = loop
        self.bus = bus
        self.consumer = consumer
        self.batch = batch
        self.max_unacked = max_unacked
        self.checkpoint_every_s = min(loop.settings.serving.checkpoint_every_s, bus.ack_wait_s / 2)
        self._pulls: list[Pull] = []
        self._unacked: list[tuple[Pull, Delivery]] = []
        self._oldest_unacked = 0.0
        self._last_expire = 0.0

    async def start(self) -> None:
        """Bind the durable consumers (created at the stream's end when new)."""
        self._pulls = [await self.bus.pull(t, f"{self.consumer}_{t}") for t in TOPICS]

    async def step(self, timeout: float) -> int:
        """Fetch what is pending on each topic and apply it; close due windows; snapshot and
        checkpoint when due, then ack what the checkpoint holds. Messages applied."""
        applied = 0
        for i, pull in enumerate(self._pulls):
            # wait on the last topic only, so an idle learner sleeps once per step
            got = await pull.fetch(self.batch, timeout if i == len(self._pulls) - 1 else 0.01)
            for delivery in got:
                outcome = self.loop.apply(delivery.topic, delivery.data)
                if outcome is None:
                    await pull.reject(delivery, f"malformed: not a valid {delivery.topic} record")
                    continue
                applied += outcome
                if not self._unacked:
                    self._oldest_unacked = time.monotonic()
                self._unacked.append((pull, delivery))
        if time.monotonic() - self._last_expire >= EXPIRE_EVERY_S:  # a scan of every pending decision
            self._last_expire = time.monotonic()
            self.loop.expire()
        before = self.loop.checkpoints
        self.loop.tick()
        if self.loop.checkpoints == before and self._unacked and self._checkpoint_due():
            self.loop.checkpoint()
        if self.loop.checkpoints != before:
            await self.ack()
        return applied

    def _checkpoint_due(self) -> bool:
        return (
            len(self._unacked) >= self.max_unacked or time.monotonic() - self._oldest_unacked >= self.checkpoint_every_s
        )

    async def ack(self) -> int:
        """Ack every message applied so far (call right after a checkpoint); how many."""
        done, self._unacked = self._unacked, []
        for pull in self._pulls:
            await pull.ack([d for p, d in done if p is pull])
        return len(done)

    @property
    def unacked(self) -> int:
        """Messages applied but not acknowledged yet."""
        return len(self._unacked)

    async def reconnect(self) -> None:
        """After a bus failure: checkpoint (the unacked messages will come again and be recognised),
        drop the connection and bind the consumers anew."""
        if self._unacked:
            self.loop.checkpoint()
        self._unacked = []
        self._pulls = []
        await self.bus.abort()
        await self.start()

    async def close(self) -> None:
        """Checkpoint, ack, unsubscribe and close the connection (just drop it when NATS is down)."""
        self.loop.checkpoint()
        try:
            await self.ack()
            for pull in self._pulls:
                await pull.close()
            await self.bus.close()
        except Exception as exc:  # the checkpoint holds them: redelivered and recognised next time
            log.warning("learner: could not ack on the way out (%s: %s)", type(exc).__name__, exc)
            await self.bus.abort()


async def run(
    feed: BusFeed, stop: threading.Event, deadline: float | None, poll_s: float, on_start: Callable[[], None]
) -> None:
    """Step ``feed`` until ``stop`` is set or the monotonic ``deadline`` passes; then close it."""
    await feed.start()
    on_start()
    backoff = 0.0
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if backoff:
                    await feed.reconnect()
                await feed.step(timeout=max(poll_s, 0.05))
                backoff = 0.0
            except Exception as exc:  # NATS down or gone: keep what was learned, reconnect later
                backoff = min(MAX_BACKOFF_S, max(0.25, backoff * 2))
                log.warning("learner: bus failed (%s: %s); reconnecting in %.2f s", type(exc).__name__, exc, backoff)
                until = time.monotonic() + backoff
                while not stop.is_set() and time.monotonic() < until:
                    await asyncio.sleep(0.05)
    finally:
        await feed.close()
        log.info("learner: bus feed closed (%s)", feed.loop.stats())
