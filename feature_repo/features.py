"""Feature views: task attributes and engagement, user reactions (pushed fresh, batch-corrected),
user rhythm, and the on-demand features computed at request time in the user's timezone.

Schemas come from the feature tables' contracts (data_contracts.feature_tables), so the Parquet
the features DAG writes, the Great Expectations suite that gates it and these views agree.
"""

from datetime import timedelta

from data_sources import (
    request_time,
    task_attributes_source,
    task_engagement_source,
    user_reactions_push,
    user_rhythm_source,
)
from entities import task, user
from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, String

from data_contracts.feature_tables import feature_columns


def _schema(table: str) -> list[Field]:
    return [Field(name=n, dtype=String if n == "project_id" else Float64) for n in feature_columns(table)]


task_attributes = FeatureView(
    name="task_attributes",
    entities=[task],
    # Todoist's incremental sync only re-reports changed tasks: a snapshot stays true for long.
    ttl=timedelta(days=365),
    source=task_attributes_source,
    schema=_schema("task_attributes"),
    description="a task as its latest Todoist snapshot showed it",
)

task_engagement = FeatureView(
    name="task_engagement",
    entities=[task],
    ttl=timedelta(days=365),
    source=task_engagement_source,
    schema=_schema("task_engagement"),
    description="times a task was shown and snoozed",
)

user_reactions = FeatureView(
    name="user_reactions",
    entities=[user],
    ttl=timedelta(days=365),
    source=user_reactions_push,
    schema=_schema("user_reactions"),
    description="reaction counters and rates over 1/7/28 days; pushed on every reaction, recomputed in batch",
)

user_rhythm = FeatureView(
    name="user_rhythm",
    entities=[user],
    ttl=timedelta(days=365),
    source=user_rhythm_source,
    schema=_schema("user_rhythm"),
    description="completions per day, usual active hour and weekend share over 28 days",
)

# Feast runs an on-demand view from its source text, without this module's globals: each one
# imports what it needs and states its own constants (720 h is the contract's cap).


@on_demand_feature_view(
    sources=[user_reactions, request_time],
    schema=[
        Field(name="hour_of_day", dtype=Float64),
        Field(name="weekday", dtype=Float64),
        Field(name="hours_since_last_reaction", dtype=Float64),
    ],
    mode="python",
    description="hour of day and weekday in the user's timezone; hours since the last reaction",
)
def user_time(inputs: dict) -> dict:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    hours, weekdays, since = [], [], []
    for now_ts, tz, last in zip(inputs["now_ts"], inputs["tz"], inputs["last_reaction_ts"], strict=True):
        try:
            zone = ZoneInfo(tz or "UTC")
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError: an unknown zone reads as UTC
            zone = ZoneInfo("UTC")
        local = datetime.fromtimestamp(now_ts, UTC).astimezone(zone)
        hours.append(local.hour + local.minute / 60.0)
        weekdays.append(float(local.weekday()))
        since.append(None if last is None else min(720.0, max(0.0, (now_ts - last) / 3600.0)))
    return {"hour_of_day": hours, "weekday": weekdays, "hours_since_last_reaction": since}


@on_demand_feature_view(
    sources=[task_attributes, request_time],
    schema=[
        Field(name="age_days", dtype=Float64),
        Field(name="days_to_deadline", dtype=Float64),
        Field(name="hours_until_due", dtype=Float64),
        Field(name="is_overdue", dtype=Float64),
    ],
    mode="python",
    description="task age, days to deadline, hours until due (+-720 h) and overdue flag at request time",
)
def task_time(inputs: dict) -> dict:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    out: dict = {"age_days": [], "days_to_deadline": [], "hours_until_due": [], "is_overdue": []}
    rows = zip(
        inputs["now_ts"],
        inputs["tz"],
        inputs["added_ts"],
        inputs["due_ts"],
        inputs["due_floating"],
        inputs["deadline_day"],
        strict=True,
    )
    for now_ts, tz, added, due, floating, deadline_day in rows:
        if added is None:  # unknown task: leave every value unset, the caller fills defaults
            for values in out.values():
                values.append(None)
            continue
        try:
            zone = ZoneInfo(tz or "UTC")
        except (KeyError, ValueError):
            zone = ZoneInfo("UTC")
        offset = datetime.fromtimestamp(now_ts, UTC).astimezone(zone).utcoffset()
        wall = now_ts + (offset.total_seconds() if offset else 0.0)  # the user's wall clock, read as UTC
        out["age_days"].append(max(0.0, (now_ts - added) / 86400.0))
        today = (wall // 86400.0) if deadline_day is not None else None
        out["days_to_deadline"].append(365.0 if deadline_day is None else float(deadline_day - today))
        if due is None:
            out["hours_until_due"].append(720.0)
            out["is_overdue"].append(0.0)
        else:
            hours = (due - (wall if floating else now_ts)) / 3600.0
            out["hours_until_due"].append(max(-720.0, min(720.0, hours)))
            out["is_overdue"].append(1.0 if hours < 0 else 0.0)
    return out
