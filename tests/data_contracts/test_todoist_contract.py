"""The Todoist contracts refuse what Todoist would never send: lax coercions, unknown zones, empty
content, a zone on a date that cannot carry one."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from data_contracts import TodoistCompletion, TodoistProject, TodoistTask

TASK: dict[str, Any] = {
    "user_id": "u1",
    "id": "6X7rM8997g3RQmvh",
    "project_id": "6Jf8VQXxpwv56VQ7",
    "content": "Buy Milk",
    "priority": 1,
    "added_at": "2025-01-21T21:28:43.841504Z",
    "synced_at": "2025-01-22T00:00:00Z",
}


def test_the_docs_example_task_is_accepted() -> None:
    task = TodoistTask.model_validate(
        {**TASK, "due": {"date": "2025-01-22T09:00:00Z", "timezone": "Europe/Lisbon", "is_recurring": False}}
    )
    assert task.priority == 1 and task.due is not None and task.due.timezone == "Europe/Lisbon"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priority": True}, "priority"),  # lax mode would read true as priority 1
        ({"priority": "4"}, "priority"),
        ({"priority": 2.0}, "priority"),
        ({"child_order": "1"}, "child_order"),
        ({"day_order": False}, "day_order"),
        ({"checked": "false"}, "checked"),  # lax mode would read "false" as False
        ({"checked": 1}, "checked"),
        ({"is_deleted": "true"}, "is_deleted"),
        ({"content": ""}, "content"),
        ({"added_at": 1737494923}, "added_at"),  # lax mode would read a number as Unix time
        ({"duration": {"amount": "15", "unit": "minute"}}, "duration.amount"),
        ({"due": {"date": "2025-01-22", "is_recurring": "yes"}}, "due.is_recurring"),
        ({"due": {"date": "2025-01-22T09:00:00Z", "timezone": "Mars/Olympus_Mons"}}, "due.timezone"),
        ({"due": {"date": "2025-01-22T09:00:00Z", "timezone": "CEST"}}, "due.timezone"),
        ({"due": {"date": "2025-01-22T09:00:00", "timezone": "Europe/Lisbon"}}, "due"),  # floating + zone
        ({"due": {"date": "2025-01-22", "timezone": "Europe/Lisbon"}}, "due"),  # all-day + zone
    ],
)
def test_a_task_refuses(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TodoistTask.model_validate({**TASK, **change})
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_floating_and_all_day_dues_without_a_zone_are_accepted() -> None:
    for date in ("2025-01-22", "2025-01-22T09:00:00", "2025-01-22T09:00:00Z"):
        assert TodoistTask.model_validate({**TASK, "due": {"date": date, "timezone": None}}).due is not None


@pytest.mark.parametrize("change", [{"is_archived": "false"}, {"is_inbox_project": 1}, {"child_order": "2"}])
def test_a_project_refuses_lax_types(change: dict[str, Any]) -> None:
    base = {"user_id": "u1", "id": "p1", "name": "Inbox", "synced_at": "2025-01-22T00:00:00Z"}
    TodoistProject.model_validate(base)
    with pytest.raises(ValidationError):
        TodoistProject.model_validate({**base, **change})


def test_a_completion_refuses_lax_types() -> None:
    base = {"user_id": "u1", "task_id": "t1", "completed_at": "2025-01-22T00:00:00Z"}
    TodoistCompletion.model_validate(base)
    with pytest.raises(ValidationError):
        TodoistCompletion.model_validate({**base, "is_recurring": "true"})
