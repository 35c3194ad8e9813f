"""Erasing a user from the event log: their lines become blanks of the same length, so readers
holding byte-offset watermarks (the ingest's ``.offset`` files, the learner's checkpoint) neither
lose nor re-read anyone else's events, and a read that overlaps a redaction waits for it."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from data_contracts import Activation, RewardEvent
from oo.event_erasure import read_user, redact_user
from oo.events_ingest import EventLog, ingest
from oo.lake import Lake
from tests.models.features.synthetic import T0, decision, reaction


def fill(events: EventLog, first: int, n: int) -> None:
    """Alice's and Bob's events interleaved over every topic that holds users' events."""
    for i in range(first, first + n):
        user = "alice" if i % 2 else "bob"
        d = decision(i, user, T0 + timedelta(minutes=i), [f"t{i}", f"u{i}"])
        events.append("decisions", d)
        events.append("reactions", reaction(i, d, "done", T0 + timedelta(minutes=i, seconds=5)))
        events.append(
            "rewards",
            RewardEvent(
                event_id=reaction(i, d, "done", T0).event_id, decision_id=d.decision_id, user_id=user,
                reaction="done", reward=1.0, occurred_at=T0 + timedelta(minutes=i, seconds=5),
            ),
        )  # fmt: skip
        events.append("activations", Activation(decision_id=d.decision_id, user_id=user, activated_at=T0))


def users(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["user_id"] for line in lines]


def test_readers_keep_their_place_across_an_erasure(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events")
    fill(events, 1, 6)
    size = events.path("decisions").stat().st_size
    first, mark = events.read("decisions", "ingest", max_bytes=size // 2)  # a reader half-way
    events.commit("decisions", "ingest", mark)
    learner_offset = 0  # a reader that has read nothing yet (offsets kept elsewhere)

    counts = redact_user(events, "alice")

    assert counts == {"decisions": 3, "reactions": 3, "rewards": 3, "activations": 3}
    assert events.path("decisions").stat().st_size == size  # not one offset moved
    assert b"alice" not in b"".join(events.path(t).read_bytes() for t in ("decisions", "rewards", "activations"))
    fill(events, 7, 2)  # and the log goes on
    rest, _ = events.read("decisions", "ingest")
    whole, _ = events.read("decisions", "learner", start=learner_offset)
    # The half-way reader gets Bob's remaining events, each once; nothing of Bob's is skipped.
    bob_first = [u for u in users(first) if u == "bob"]
    assert len(bob_first) + users(rest).count("bob") == 4
    assert set(users(rest)) == {"bob", "alice"} and users(rest).count("alice") == 1  # only the new one
    seen = {json.loads(x)["decision_id"] for x in first}
    assert [json.loads(x)["decision_id"] for x in rest] == [
        json.loads(x)["decision_id"] for x in whole if json.loads(x)["decision_id"] not in seen
    ]
    assert users(whole) == ["bob", "bob", "bob", "alice", "bob"]


def test_ingest_after_an_erasure_has_every_other_record_once(tmp_path: Path) -> None:
    events, lake = EventLog(tmp_path / "events"), Lake(tmp_path / "lake")
    fill(events, 1, 4)
    ingest(lake, events)  # Alice's first events reached the lake (erased there separately)
    fill(events, 5, 4)  # then more, not yet ingested
    redact_user(events, "alice")
    report = ingest(lake, events)
    assert report.topics["decisions"].read == 2 and report.topics["decisions"].quarantined == 0
    decisions = lake.read("decisions").to_pylist()
    assert sorted(d["user_id"] for d in decisions) == ["alice"] * 2 + ["bob"] * 4
    assert ingest(lake, events).written == 0  # nothing re-read


def test_export_reads_only_the_users_lines_and_redaction_is_idempotent(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events")
    fill(events, 1, 4)
    with open(events.path("reactions"), "ab") as f:
        f.write(b'{"broken": "alice" \n')  # malformed, but it names her
    mine = read_user(events, "alice")
    assert sorted(mine) == ["activations", "decisions", "reactions", "rewards"]
    assert {r["user_id"] for r in mine["decisions"]} == {"alice"} and len(mine["decisions"]) == 2
    assert mine["reactions"][-1] == '{"broken": "alice" '
    assert redact_user(events, "alice")["reactions"] == 3
    generation = events.generation("reactions")
    assert generation == 2
    assert read_user(events, "alice") == {}
    assert redact_user(events, "alice") == {"decisions": 0, "reactions": 0, "rewards": 0, "activations": 0}
    assert events.generation("reactions") == generation  # nothing to do, nothing bumped
    assert len(read_user(events, "bob")["decisions"]) == 2
    with pytest.raises(ValueError):
        redact_user(events, "")


def test_a_read_during_a_redaction_waits_for_it(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events")
    fill(events, 1, 2)
    path = events.path("decisions")
    got: list[list[bytes]] = []
    with open(path, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a redaction in progress: generation odd, lock held
        events.set_generation("decisions", 1)
        reader = threading.Thread(target=lambda: got.append(events.read("decisions", "r")[0]))
        reader.start()
        reader.join(timeout=0.3)
        assert reader.is_alive() and got == []  # it waits instead of reading a half-redacted line
        lines = handle.read().split(b"\n")
        # unbuffered, as the redaction writes: a buffered write would reach the file only when
        # the handle closes, after the unlock, and the waiting reader could read the old line
        os.pwrite(handle.fileno(), b" " * len(lines[0]), 0)  # alice's decision (n=1) is line one
        events.set_generation("decisions", 2)
        fcntl.flock(handle, fcntl.LOCK_UN)
    reader.join(timeout=5)
    assert users(got[0]) == ["bob"]
    assert users(events.read("decisions", "r")[0]) == ["bob"]  # generation even: no lock needed
