"""Events reach the lake incrementally from a watermark, idempotently, each in its own date's
partition; malformed lines are quarantined with a reason; the NATS path acks only what is safe."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from oo.events_ingest import EventLog, ingest
from oo.lake import Lake
from tests.models.features.synthetic import T0, decision, reaction, reward


@pytest.fixture
def lake(tmp_path) -> Lake:  # type: ignore[no-untyped-def]
    return Lake(tmp_path / "lake")


@pytest.fixture
def events(tmp_path) -> EventLog:  # type: ignore[no-untyped-def]
    return EventLog(tmp_path / "events")


def test_ingest_moves_new_events_once_and_a_late_event_lands_in_its_own_day(lake, events) -> None:  # type: ignore[no-untyped-def]
    d = decision(1, "u1", T0, ["t1"])
    events.append("decisions", d)
    events.append("reactions", reaction(1, d, "done", T0 + timedelta(minutes=5)))
    events.append("rewards", reward(1, d, "done", T0 + timedelta(minutes=5), 1.0))
    first = ingest(lake, events)
    assert first.written == 3
    assert ingest(lake, EventLog(events.root)).written == 0  # the watermark survives a new reader

    late = decision(2, "u1", T0 - timedelta(days=3), ["t1"])  # arrives now, happened 3 days ago
    events.append("decisions", late)
    events.append("decisions", d)  # and a duplicate of one already in the lake
    again = ingest(lake, events)
    assert again.topics["decisions"].written == 1 and again.topics["decisions"].duplicates == 1
    days = sorted(p.parent.name for p in lake.files("decisions"))
    assert days == ["dt=2026-04-28", "dt=2026-05-01"]


def test_replaying_the_whole_log_adds_nothing(lake, events) -> None:  # type: ignore[no-untyped-def]
    d = decision(1, "u1", T0, ["t1"])
    events.append("decisions", d)
    ingest(lake, events)
    events.commit("decisions", "events_ingest", 0)  # a lost watermark: everything is read again
    report = ingest(lake, events)
    assert report.written == 0 and report.topics["decisions"].duplicates == 1
    assert lake.read("decisions").num_rows == 1


def test_malformed_lines_are_quarantined_and_a_half_written_line_waits(lake, events) -> None:  # type: ignore[no-untyped-def]
    d = decision(1, "u1", T0, ["t1"])
    events.append("decisions", d)
    with open(events.path("decisions"), "ab") as f:
        f.write(b'{"not": "a decision"}\n{"decision_id": "half-writ')
    report = ingest(lake, events)
    assert report.topics["decisions"].written == 1 and report.topics["decisions"].quarantined == 1
    quarantined = lake.read("quarantine").to_pylist()
    assert quarantined[0]["dataset"] == "decisions" and "decision_id" in " ".join(quarantined[0]["reasons"])
    with open(events.path("decisions"), "ab") as f:  # the writer finishes its line
        f.write(b'ten"}\n')
    assert ingest(lake, events).topics["decisions"].quarantined == 1  # now read (and refused), once


@pytest.mark.integration
def test_nats_events_reach_the_lake_through_the_durable_consumer(lake, events, nats_url, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    from oo.bus import DbDeduplicator, NatsBus
    from oo.db import engine_for, migrate

    migrate(sqlite_url)
    tag = uuid.uuid4().hex[:8]

    def bus() -> NatsBus:
        return NatsBus(nats_url, DbDeduplicator(engine_for(sqlite_url)), stream=f"T_{tag}", prefix=f"t{tag}")

    d = decision(1, "u1", datetime.now(UTC), ["t1"])

    async def publish() -> None:
        b = bus()
        await b.publish("decisions", d)
        await b.publish("reactions", reaction(1, d, "dismiss", d.decided_at + timedelta(seconds=3)))
        await b.close()

    asyncio.run(publish())
    report = ingest(lake, events, bus())
    assert report.topics["decisions"].from_bus == 1 and report.written == 2
    assert ingest(lake, events, bus()).written == 0  # the consumer's position is the watermark
    assert lake.read("reactions").column("reaction").to_pylist() == ["dismiss"]


def test_ingest_before_anything_was_logged_writes_nothing_and_does_not_fail(lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = EventLog(tmp_path / "no-events-yet")
    assert not missing.root.exists()
    assert ingest(lake, missing).written == 0
    assert ingest(lake, missing).written == 0  # and again, from the stored watermarks
