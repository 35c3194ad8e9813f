"""Sync the users whose Todoist told us something changed: every minute, the pending requests.

A verified Todoist webhook stores a durable request (`todoist_sync_requests`, committed before
the webhook is acknowledged; a redelivery is stored once). Each run calls
`oo.integrations.todoist.webhooks.run_requested_syncs`: every user with a pending request is
synced once (the same incremental sync as `todoist_sync`), then the requests that existed before
the sync are marked processed. A crash in between leaves them pending for the next run (syncs
are incremental and idempotent); a request that arrives during a sync stays pending. A run with
no pending request is skipped; one that synced updates the `TODOIST_SNAPSHOTS` asset.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from pendulum import datetime

from dags.assets import TODOIST_SNAPSHOTS


@dag(
    schedule=timedelta(minutes=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=15)},
    dagrun_timeout=timedelta(minutes=30),
    tags=["ingest", "todoist"],
    doc_md=__doc__,
)
def todoist_requested_syncs():
    @task(outlets=[TODOIST_SNAPSHOTS], execution_timeout=timedelta(minutes=20))
    def sync_requested() -> int:
        from airflow.sdk.exceptions import AirflowSkipException

        from oo.db import get_engine
        from oo.integrations.todoist.webhooks import run_requested_syncs

        users = run_requested_syncs(get_engine())
        if not users:
            raise AirflowSkipException("no pending sync request")
        return len(users)  # a count: user ids stay out of the Airflow metadata

    sync_requested()


todoist_requested_syncs()
