"""Sync every connected user's Todoist into the lake, one mapped task per user.

- `connected_users` lists users whose Todoist integration is active (demo users, whose fake
  tokens belong to the fake server, are left out).
- `sync_user` (dynamically mapped over them) runs `oo.integrations.todoist.sync.sync_user`: incremental sync
  with the stored `sync_token` (a full sync the first time or when the token is refused),
  raw JSON kept, rows validated by the contract (pydantic + Great Expectations; bad rows to
  `quarantine`), changes written to `todoist_tasks`, `todoist_projects`, `todoist_completions`.
  A user's failure (rate limits past the bound, 5xx, an answer of the wrong shape, any error while
  staging or writing) is that user's result, recorded on the integration, never an error of the
  others; a refused token marks the integration `needs_reauth`. Deletions need positive evidence.
- `summary` runs whatever happened upstream, logs `todoist sync: N ok, M failed (K users)` with
  the row and quarantine counts, and updates the `TODOIST_SNAPSHOTS` asset.

Idempotent over its interval: a re-run fetches no new changes and rows identical to the latest
observation are not written again. Schedule: `OO_TODOIST__SCHEDULE` (default hourly).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from dags.assets import TODOIST_SNAPSHOTS
from oo.settings import get_settings


@dag(
    schedule=get_settings().todoist.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["ingest", "todoist"],
    doc_md=__doc__,
)
def todoist_sync():
    @task
    def connected_users() -> list[str]:
        from oo.db import get_engine
        from oo.integrations.todoist.sync import connected_users

        return connected_users(get_engine())

    @task(max_active_tis_per_dagrun=8)
    def sync_user(user_id: str) -> dict:
        from oo.integrations.todoist.sync import sync_user

        return sync_user(user_id).as_dict()

    @task(trigger_rule="all_done", outlets=[TODOIST_SNAPSHOTS])
    def summary(results) -> str:
        from oo.integrations.todoist.sync import log_summary

        return log_summary(results)

    summary(sync_user.expand(user_id=connected_users()))


todoist_sync()
