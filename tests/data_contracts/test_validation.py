"""Validation: every row of a batch comes out valid or quarantined with its reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from data_contracts import QuarantinedRow, ReactionEvent, RewardEvent, TodoistTask
from data_contracts.expectations import expectation_specs, failing_rows
from data_contracts.validation import split

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
TASK = {
    "id": "6X7rM8997g3RQmvh",
    "project_id": "6Jf8VQXxpwv56VQ7",
    "content": "Buy milk",
    "description": "",
    "labels": ["errand"],
    "priority": 1,
    "due": {"date": "2026-03-02", "is_recurring": False, "string": "tomorrow", "lang": "en"},
    "child_order": 1,
    "checked": False,
    "is_deleted": False,
    "added_at": "2026-02-01T10:00:43.841504Z",
    "updated_at": "2026-02-02T10:00:43Z",
}
EXTRA = {"user_id": "u1", "synced_at": NOW}


def bad(**changes: object) -> dict[str, object]:
    row = {**TASK, **changes}
    return {k: v for k, v in row.items() if v is not DROP}


DROP = object()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected an object"),
        (bad(content=DROP), "content: Field required"),
        (bad(colour="red"), "colour: Extra inputs are not permitted"),
        (bad(priority="urgent"), "priority: Input should be a valid integer"),
        (bad(priority=7), "priority: Input should be less than or equal to 4"),
        (bad(added_at="2026-02-30T10:00:00Z"), "added_at:"),
        (bad(due={"date": "2026-13-01"}), "due.date:"),
        (bad(added_at="2026-02-01T10:00:00"), "added_at: Input should have timezone info"),
    ],
)
def test_a_row_that_breaks_the_task_contract_is_quarantined_with_its_reason(row: object, reason: str) -> None:
    out = split(TodoistTask, [TASK, row], dataset="todoist_tasks", extra=EXTRA, suite=False, now=NOW)
    assert [t.id for t in out.valid] == [TASK["id"]]
    (q,) = out.quarantined
    assert any(reason in r for r in q.reasons), q.reasons
    assert q.dataset == "todoist_tasks" and q.contract == "TodoistTask"
    raw = row if isinstance(row, str) else json.dumps(row, sort_keys=True)
    assert q.raw == raw, "the raw payload is kept exactly"


def test_nothing_is_lost_in_a_mixed_batch() -> None:
    rows = [TASK, "{", bad(id=""), bad(content=DROP), {**TASK, "id": "second"}]
    out = split(TodoistTask, rows, dataset="todoist_tasks", extra=EXTRA, now=NOW)
    assert out.counts == {"valid": 2, "quarantined": 3}
    assert all(isinstance(q, QuarantinedRow) and q.reasons for q in out.quarantined)


def test_the_same_bad_row_has_the_same_quarantine_key() -> None:
    a = split(TodoistTask, ["{"], dataset="todoist_tasks", suite=False).quarantined[0]
    b = split(TodoistTask, ["{"], dataset="todoist_tasks", suite=False).quarantined[0]
    assert a.natural_key == b.natural_key


def test_suites_are_derived_from_the_model_fields() -> None:
    specs = expectation_specs(RewardEvent)
    columns = {kw["column"] for cls, kw in specs if cls == "ExpectColumnToExist"}
    assert columns == set(RewardEvent.model_fields)
    assert (
        "ExpectColumnValuesToBeBetween",
        {"column": "reward", "min_value": 0.0, "max_value": 1.0},
    ) in specs
    assert (
        "ExpectColumnValuesToBeInSet",
        {"column": "reaction", "value_set": ["done", "snooze", "dismiss"]},
    ) in (specs)


def test_the_suite_finds_bad_rows_in_a_frame_that_skipped_pydantic() -> None:
    good = {
        "schema_version": 1,
        "event_id": "e1",
        "decision_id": "d1",
        "user_id": "u1",
        "reaction": "done",
        "reward": 1.0,
        "occurred_at": pd.Timestamp(NOW),
        "late": False,
    }
    frame = pd.DataFrame([good, {**good, "reward": 3.0, "reaction": "meh"}, {**good, "user_id": ""}])
    failures = failing_rows(RewardEvent, frame)
    assert set(failures) == {1, 2}
    assert any("reward" in r for r in failures[1]) and any("reaction" in r for r in failures[1])
    assert any("user_id" in r for r in failures[2])


def test_the_suite_quarantines_rows_of_a_batch() -> None:
    ok = {
        "event_id": "00000000-0000-0000-0000-000000000001",
        "decision_id": "00000000-0000-0000-0000-000000000002",
        "user_id": "u1",
        "candidate_id": "task:1",
        "reaction": "snooze",
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    out = split(ReactionEvent, [ok], dataset="reactions")
    assert out.counts == {"valid": 1, "quarantined": 0}
