"""``python -m serving.learner``: the one learner process for replicas in ``separate`` mode.

Reads every replica's decisions, rewards and activations from the event log, learns, publishes a
snapshot every ``OO_SERVING__SNAPSHOT_EVERY_REWARDS`` rewards or ``..._EVERY_S`` seconds, follows
``@champion``, and checkpoints on SIGTERM / SIGINT (and with every snapshot).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType

from oo.runtime import configure

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
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    loop.publish()  # replicas start from this learner's policy
    log.info("learner: ready (%s %s from %s)", loop.policy.name, loop.policy.version, loop.source)
    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
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
