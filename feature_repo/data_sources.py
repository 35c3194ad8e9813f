"""Sources: the feature tables the features DAG computes with DuckDB over the lake.

Paths are absolute and come from the settings (Feast resolves relative source paths against the
CWD). Each table has an ``event_timestamp`` (when the row's values became true) and a
``created`` column (when the row was computed, Feast's tie-breaker).
"""

from feast import Field, FileSource, PushSource, RequestSource
from feast.types import Float64, String

from oo.feature_store import table_path


def _file(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_table",
        path=str(table_path(name)),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        description=f"feature table {name}, computed by dags/features.py",
    )


task_attributes_source = _file("task_attributes")
task_engagement_source = _file("task_engagement")
user_rhythm_source = _file("user_rhythm")

user_reactions_push = PushSource(
    name="user_reactions_push",
    batch_source=_file("user_reactions"),
    description="fresh reaction counters, pushed by models.features.online.push_reaction",
)

request_time = RequestSource(
    name="request_time",
    schema=[
        Field(name="now_ts", dtype=Float64, description="request time, Unix seconds"),
        Field(name="tz", dtype=String, description="the user's IANA timezone"),
    ],
)
