"""Load-and-fault benchmark: ``make bench-e2e`` writes ``bench/results/e2e.json``.

The platform's real processes on loopback (fake Todoist, serving with its separate learner, the
app API with its outbox relay), on the embedded defaults unless ``OO_DB__URL`` /
``OO_BUS__NATS_URL`` / ``OO_REDIS__URL`` are set. ``USERS`` (20) signed-up users, each connected
to a fake Todoist account, ask for tips and react at ``RPS`` (100) requests per second, open loop,
for ``SECONDS`` (60); ``OUT`` names another result file. At 20% serving is killed (SIGKILL, its
whole process tree) and started again, at 50% the learner is killed and started again 2 s later,
at 60% every user's Todoist is synced while the fake answers 429 and 5xx for 4 of them. Then the
relay is given up to 180 s to drain, the ``events_ingest`` step moves the event log into the
lake, and every accepted reaction is looked up in serving's decision index, the lake and the
learner's counters. Exit 1 when one is lost (not delivered by the deadline) or counted twice.

Fields: ``requests`` (sent in the timed window), ``errors`` (answers other than 200 / 202, and
timeouts; tips fail while serving is down, and that is counted), ``feedback_accepted`` (202s),
``feedback_delivered`` (in serving and the lake), ``lost_feedback``, ``p99_ms`` (every request,
from its scheduled send time); ``by_kind``, ``timeline_s``, ``delivery``, ``sync_check``,
``recovery``, ``conditions`` and ``setup`` say how.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oo.fakes.e2e.load import Conditions  # noqa: E402
from oo.fakes.e2e.run import run_e2e  # noqa: E402


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # stop the stack on SIGTERM too
    cond = Conditions(
        users=int(os.environ.get("USERS", "20")),
        rps=float(os.environ.get("RPS", "100")),
        seconds=float(os.environ.get("SECONDS", "60")),
        seed=int(os.environ.get("SEED", "0")),
    )
    var = Path(tempfile.mkdtemp(prefix="oo-bench-e2e-"))
    print(f"bench-e2e: {cond.users} users, {cond.rps:g} req/s for {cond.seconds:g} s; state and logs in {var}")
    report = run_e2e(var, cond, drain_timeout_s=180.0, recovery_timeout_s=120.0)
    out = ROOT / os.environ.get("OUT", "bench/results/e2e.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    head = {k: report[k] for k in ("requests", "errors", "feedback_accepted", "feedback_delivered", "lost_feedback")}
    print(f"bench-e2e: {head}, p99 {report['p99_ms']} ms, duplicated {report['duplicated_feedback']} -> {out}")
    return 1 if report["lost_feedback"] or report["duplicated_feedback"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
