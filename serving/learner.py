"""``python -m serving.learner``: the one learner process for replicas in ``separate`` mode.

Where its input comes from:

- with ``OO_BUS__NATS_URL`` (replicas on any number of machines): every replica's decisions,
  rewards and activations from NATS JetStream, through durable consumers it acknowledges only
  after a checkpoint holds what it learned from them (:mod:`serving.bus_feed`);
- without (replicas on one machine): the shared event log, from the offsets in its checkpoint.

Either way it learns each reward once in any arrival order, publishes a snapshot every
``OO_SERVING__SNAPSHOT_EVERY_REWARDS`` rewards or ``..._EVERY_S`` seconds, follows ``@champion``,
and checkpoints on SIGTERM / SIGINT (and on its own clock).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import time
from types import FrameType

from oo.runtime import configure, freeze_startup_heap

log = logging.getLogger("serving.learner")


def main(argv: list[str] | None = None) -> int:
    """Run the learner until a signal (or ``--max-seconds``)."""
    parser = argparse.ArgumentParser(prog="python -m serving.learner", description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long (tests, demos)")
    args = parser.parse_args(argv)
    configure()
    from oo.events_ingest import get_event_log
    from oo.settings import get_settings
    from serving.learning import LearnerLoop
    from serving.snapshots import SnapshotStore

    settings = get_settings()
    loop = LearnerLoop(settings, get_event_log(), SnapshotStore(settings.snapshot_dir))
    freeze_startup_heap()  # no full-collection pauses over the start-up heap
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds

    def ready(where: str) -> None:
        loop.publish()  # replicas start from this learner's policy
        log.info(
            "learner: ready (%s %s from %s), reading %s", loop.policy.name, loop.policy.version, loop.source, where
        )

    if url := settings.bus.nats_url:
        from oo.bus import MemoryDeduplicator, NatsBus
        from serving import bus_feed

        b = settings.bus
        bus = NatsBus(
            url,
            MemoryDeduplicator(),  # unused: the feed acks and deduplicates itself, with its checkpoint
            stream=b.stream,
            prefix=b.subject_prefix,
            max_deliver=b.max_deliver,
            ack_wait_s=b.ack_wait_s,
        )
        feed = bus_feed.BusFeed(loop, bus)
        on_start = lambda: ready(f"NATS stream {b.stream}")  # noqa: E731
        asyncio.run(bus_feed.run(feed, stop, deadline, settings.serving.learner_poll_s, on_start))
    else:
        ready(f"the event log {get_event_log().root}")
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            applied = loop.poll()
            loop.tick()
            if not applied:
                stop.wait(settings.serving.learner_poll_s)
        loop.checkpoint()
    log.info("learner: stopped; checkpoint written (%s)", loop.stats())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
