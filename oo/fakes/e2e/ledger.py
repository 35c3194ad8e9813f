"""Where every accepted reaction arrived: the outbox drained, serving's decision index, the event
log, the lake (after the ``events_ingest`` step) and the learner; and the run's figures.

A reaction is *delivered* when serving counted it (its decision index holds its reward under the
reaction's key) and the lake holds its reward and its reaction event (``events_ingest`` moved
them from the event log, and from the bus when it is NATS). *Lost*: accepted and missing from
either. *Duplicated*: more than one row for it in the lake, or serving counted another key for its
decision. Redeliveries the receivers absorbed (an event log line written twice because serving
was killed between writing it and answering) are counted apart: they are the at-least-once of the
relay, made exactly-once by the idempotency keys.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text

from oo.fakes.e2e.load import Conditions, LoadResult
from oo.fakes.e2e.stack import Stack


def outbox_counts(stack: Stack) -> dict[str, int]:
    """Outbox messages by status."""
    from oo.db import engine_for

    with engine_for(stack.settings().db_url).connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status")).all()
    return {str(status): int(n) for status, n in rows}


def wait_drained(stack: Stack, timeout_s: float) -> tuple[dict[str, int], float]:
    """Poll until no outbox message is pending, or ``timeout_s`` passed: the counts, the seconds.
    What is still pending then is reported as not delivered (lost, as far as the run can tell)."""
    start = time.monotonic()
    while True:
        counts = outbox_counts(stack)
        if not counts.get("pending") or time.monotonic() - start > timeout_s:
            return counts, time.monotonic() - start
        time.sleep(0.25)


def serving_rewards(stack: Stack) -> dict[str, str]:
    """Serving's decision index: the reaction key counted for each rewarded decision."""
    url = stack.env.get("OO_SERVING__INDEX_URL")
    if url:  # the index replicas share past one machine (serving.decision_index, schema ``serving``)
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as pg:
            return {str(d): str(r) for d, r in pg.execute("SELECT decision_id, reaction_id FROM serving.rewards")}
    path = stack.settings().serving_state_dir / "decisions.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return {str(d): str(r) for d, r in conn.execute("SELECT decision_id, reaction_id FROM rewards")}


def log_lines(stack: Stack, topic: str) -> Counter[str]:
    """Lines per event id in the event log of ``topic``."""
    path = stack.settings().paths.resolve("events") / f"{topic}.jsonl"
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                counts[str(json.loads(line)["event_id"])] += 1
    return counts


def ingest_lake(stack: Stack) -> dict[str, Any]:
    """Run the ``events_ingest`` step (event log, and NATS when configured, into the lake)."""
    from oo.bus import DbDeduplicator, NatsBus
    from oo.db import engine_for
    from oo.events_ingest import EventLog, ingest
    from oo.lake import Lake

    s = stack.settings()
    bus = (
        NatsBus(
            s.bus.nats_url,
            DbDeduplicator(engine_for(s.db_url)),
            stream=s.bus.stream,
            prefix=s.bus.subject_prefix,
            ack_wait_s=s.bus.ack_wait_s,
        )
        if s.bus.nats_url
        else None
    )
    return ingest(Lake(s.lake_root), EventLog(s.paths.resolve("events")), bus).summary()


def lake_rows(stack: Stack, dataset: str) -> Counter[str]:
    """Rows per event id in the lake's ``dataset``."""
    from oo.lake import Lake

    table = Lake(stack.settings().lake_root).read(dataset, columns=["event_id"])
    return Counter(str(v) for v in table.column("event_id").to_pylist())


def learner_stats(stack: Stack) -> dict[str, Any]:
    """The learner's counters from its newest snapshot."""
    path = stack.settings().snapshot_dir / "latest.json"
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    learner: dict[str, Any] = meta.get("learner", {})
    return learner


@dataclass
class Delivery:
    """What became of the accepted reactions."""

    feedback_accepted: int
    feedback_delivered: int
    lost_feedback: int
    duplicated_feedback: int
    to_serving: int
    to_lake_rewards: int
    to_lake_reactions: int
    redelivered_log_lines: int
    outbox: dict[str, int]
    drain_s: float
    learner_learned: int | None
    ingested_from_bus: dict[str, int]
    lost_examples: list[str]


def account(stack: Stack, result: LoadResult, drain_timeout_s: float, learner_timeout_s: float = 30.0) -> Delivery:
    """Wait for the relay to drain, ingest, and count every accepted reaction where it arrived."""
    outbox, drain_s = wait_drained(stack, drain_timeout_s)
    ingested = ingest_lake(stack)
    counted = serving_rewards(stack)
    rewards, reactions = lake_rows(stack, "rewards"), lake_rows(stack, "reactions")
    log = log_lines(stack, "rewards")
    accepted = {key: item.decision_id for key, item in result.accepted.items()}
    to_serving = {k for k, d in accepted.items() if counted.get(d) == k}
    delivered = {k for k in to_serving if rewards.get(k, 0) >= 1 and reactions.get(k, 0) >= 1}
    duplicated = {
        k
        for k, d in accepted.items()
        if rewards.get(k, 0) > 1 or reactions.get(k, 0) > 1 or (d in counted and counted[d] != k)
    }
    lost = sorted(set(accepted) - delivered)
    learned = _learned(stack, len(delivered), learner_timeout_s)
    return Delivery(
        feedback_accepted=len(accepted),
        feedback_delivered=len(delivered),
        lost_feedback=len(lost),
        duplicated_feedback=len(duplicated),
        to_serving=len(to_serving),
        to_lake_rewards=sum(1 for k in accepted if rewards.get(k)),
        to_lake_reactions=sum(1 for k in accepted if reactions.get(k)),
        redelivered_log_lines=sum(n - 1 for k, n in log.items() if k in accepted and n > 1),
        outbox=outbox,
        drain_s=round(drain_s, 2),
        learner_learned=learned,
        ingested_from_bus={topic: int(report["from_bus"]) for topic, report in ingested.items()},
        lost_examples=lost[:5],
    )


def _learned(stack: Stack, expected: int, timeout_s: float) -> int | None:
    """The learner's count of rewards learned, once it reaches ``expected`` (or at the deadline)."""
    start = time.monotonic()
    learned = None
    while time.monotonic() - start < timeout_s:
        learned = learner_stats(stack).get("learned")
        if learned is not None and learned >= expected:
            return int(learned)
        time.sleep(0.5)
    return None if learned is None else int(learned)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 for none.

    Examples
    --------
    >>> percentile([float(v) for v in range(1, 101)], 0.99)
    99.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


SERVING_TIMEOUT_S = 2.0
"""The app's wait for serving (``OO_APP__SERVING_TIMEOUT_S``): a tip sent this long before the kill
may still fail because of it."""


def _around_outage(result: LoadResult) -> dict[str, dict[str, int]]:
    """Tips due during serving's outage (from the app's timeout before the kill until healthy
    again) and outside it: how many, and how many failed (a busy machine times some out)."""
    killed = result.events.get("serving_killed_s", float("inf"))
    healthy = result.events.get("serving_healthy_s", float("inf"))
    out: dict[str, dict[str, int]] = {"during": {"tips": 0, "errors": 0}, "outside": {"tips": 0, "errors": 0}}
    for s in result.samples:
        if s.kind == "tip":
            part = out["during" if killed - SERVING_TIMEOUT_S - 0.5 <= s.due_s <= healthy else "outside"]
            part["tips"] += 1
            part["errors"] += s.status != 200
    return out


def _span(values: list[float]) -> list[float]:
    """``[first, last]`` of ``values`` (rounded), or ``[]``."""
    return [round(min(values), 2), round(max(values), 2)] if values else []


def figures(cond: Conditions, result: LoadResult, delivery: Delivery, extra: dict[str, Any]) -> dict[str, Any]:
    """The report: the issue's fields first, then what they were measured under."""
    timed = [s for s in result.samples if s.kind != "retry"]
    ok = {"tip": {200}, "feedback": {202}, "resend": {202}, "retry": {202}}
    errors = [s for s in timed if s.status not in ok[s.kind]]
    by_kind: dict[str, Any] = {}
    for kind in ("tip", "feedback", "resend", "retry"):
        mine = [s for s in result.samples if s.kind == kind]
        by_kind[kind] = {
            "requests": len(mine),
            "errors": sum(1 for s in mine if s.status not in ok[kind]),
            "p50_ms": round(percentile([s.latency_ms for s in mine], 0.50), 1),
            "p99_ms": round(percentile([s.latency_ms for s in mine], 0.99), 1),
            "statuses": dict(Counter(str(s.status) for s in mine)),
        }
    return {
        "requests": len(timed),
        "errors": len(errors),
        "feedback_accepted": delivery.feedback_accepted,
        "feedback_delivered": delivery.feedback_delivered,
        "lost_feedback": delivery.lost_feedback,
        "p99_ms": round(percentile([s.latency_ms for s in timed], 0.99), 1),
        "duplicated_feedback": delivery.duplicated_feedback,
        "lost_means": "accepted (202) but not in serving's decision index and the lake when the bounded wait "
        "for the outbox ended; delivery.outbox.pending says how many were still durable in the outbox then",
        "by_kind": by_kind,
        "tip_errors_due_s": _span([s.due_s for s in timed if s.kind == "tip" and s.status not in ok["tip"]]),
        "tips_around_serving_outage": _around_outage(result),
        "resend_answers": dict(result.resends),
        "feedback_never_accepted": len(result.unaccepted),
        "delivery": {k: v for k, v in asdict(delivery).items() if k not in ("lost_examples",)},
        "timeline_s": {k: round(v, 2) for k, v in result.events.items()},
        "syncs": result.syncs,
        "conditions": asdict(cond),
        "elapsed_s": round(result.elapsed_s, 2),
        **extra,
    }
