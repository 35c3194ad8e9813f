"""The learner loop over the event log, in-process: it starts at the end of the log, applies
decisions and rewards in any order, and a restart replays what came after its checkpoint."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from data_contracts import Decision, RewardEvent, TipCandidate
from oo.events_ingest import EventLog
from oo.settings import Settings
from serving.learning import LearnerLoop
from serving.snapshots import Checkpoint, SnapshotStore
from tests.serving.conftest import free_port, learnable_policy


def settings_for(tmp: Path) -> Settings:
    return Settings(paths={"var_dir": tmp}, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"})


def decision(i: int) -> Decision:
    cands = [
        TipCandidate(
            candidate_id=f"c{j}", content="x", kind="todoist_task", source="todoist", features={"priority": j + 1.0}
        )
        for j in range(3)
    ]
    return Decision(
        decision_id=uuid.UUID(int=i), user_id="u", decided_at=datetime.now(UTC), candidates=cands,
        ranked_ids=["c0", "c1", "c2"], chosen_id="c1", propensity=0.5, policy="softmax", policy_version="tip-policy/1",
    )  # fmt: skip


def reward(i: int) -> RewardEvent:
    return RewardEvent(
        event_id=uuid.uuid4(), decision_id=uuid.UUID(int=i), user_id="u", reaction="done", reward=1.0,
        occurred_at=datetime.now(UTC),
    )  # fmt: skip


def loop_for(tmp: Path) -> LearnerLoop:
    settings = settings_for(tmp)
    store = SnapshotStore(settings.snapshot_dir)
    if store.latest() is None:
        store.publish(learnable_policy(), source="champion", champion_version="1")
    return LearnerLoop(settings, EventLog(tmp / "events"), store)


def test_a_new_learner_starts_at_the_end_of_the_log_and_learns_in_any_order(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events")
    events.append("decisions", decision(99))  # history: the champion was trained on it
    events.append("rewards", reward(99))
    loop = loop_for(tmp_path)
    assert loop.source == "snapshot" and loop.poll() == 0
    events.append("rewards", reward(1))  # before its decision
    loop.poll()
    assert loop.learner.waiting == 1 and loop.learner.counts.learned == 0
    events.append("decisions", decision(1))
    loop.poll()
    assert loop.learner.counts.learned == 1 and loop.learner.waiting == 0


def test_a_restarted_learner_replays_what_came_after_its_checkpoint(tmp_path: Path) -> None:
    events = EventLog(tmp_path / "events")
    loop = loop_for(tmp_path)
    events.append("decisions", decision(1))
    events.append("decisions", decision(2))
    loop.poll()
    loop.checkpoint()
    events.append("rewards", reward(1))  # after the checkpoint: the crashed learner's last act
    loop.poll()
    learned = loop.policy.scores({}, decision(1).candidates)
    restarted = loop_for(tmp_path)  # from the checkpoint, as after a crash
    assert restarted.learner.pending == 2 and restarted.learner.counts.learned == 0
    restarted.poll()
    assert restarted.learner.counts.learned == 1 and restarted.policy.scores({}, decision(1).candidates) == learned


def test_a_checkpoint_being_written_does_not_hold_up_decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded learner's lock (every rank takes it) is held while the checkpoint's copy is
    taken, not while it is pickled and written: a rank decides while a slow disk writes it, and
    the checkpoint holds the state of the moment it started."""
    import serving.learning as learning

    events = EventLog(tmp_path / "events")
    loop = loop_for(tmp_path)
    events.append("decisions", decision(1))
    loop.poll()
    writing, decided = threading.Event(), threading.Event()
    save = learning.save_checkpoint

    def slow_save(path: Path, checkpoint: Checkpoint) -> None:
        writing.set()
        assert decided.wait(timeout=30), "a rank waited for the checkpoint"
        save(path, checkpoint)

    monkeypatch.setattr(learning, "save_checkpoint", slow_save)
    writer = threading.Thread(target=loop.checkpoint)
    writer.start()
    assert writing.wait(timeout=30)
    with loop.lock:  # what a rank does: take the lock, read the policy; then the learner goes on
        loop.policy.scores({}, decision(1).candidates)
        events.append("decisions", decision(2))
        loop.poll()
    decided.set()
    writer.join(timeout=30)
    assert not writer.is_alive() and loop.checkpoints == 1
    assert loop_for(tmp_path).learner.pending == 1  # the checkpoint's moment: decision 2 came after


def test_an_expected_decision_is_taken_as_logged_and_a_line_that_differs_is_parsed(tmp_path: Path) -> None:
    """A decision this process logs is handed to the learner with its line: the learner takes the
    record when it reads exactly that line (no second parse), and parses any other line as before."""
    events = EventLog(tmp_path / "events")
    loop = loop_for(tmp_path)
    mine, other = decision(1), decision(2)
    line = mine.model_dump_json().encode()
    loop.expect(line, mine)
    loop.expect(b'{"not": "this line"}', other)  # never logged: ignored, evicted in time
    events.append_lines("decisions", line + b"\n")
    events.append("decisions", other)
    assert loop.poll() == 2 and loop.learner.pending == 2
    assert list(loop._expected.values()) == [other]  # the logged one was taken, not parsed


def test_an_expected_decision_that_would_not_read_back_is_still_skipped_as_malformed(tmp_path: Path) -> None:
    """A NaN feature is ``null`` in JSON, which the contract refuses: the learner skips that line
    whether or not the record was handed to it (the line decides, as before)."""
    events = EventLog(tmp_path / "events")
    loop = loop_for(tmp_path)
    bad = decision(3).model_copy(update={"features": {"hour_of_day": float("nan")}})
    line = bad.model_dump_json().encode()
    loop.expect(line, bad)
    events.append_lines("decisions", line + b"\n")
    assert loop.poll() == 0 and loop.malformed == 1 and loop.learner.pending == 0
