"""Send due users their tip: one pass of the app API's notifier every five minutes.

The notifier (`python -m app_api.notifier`) finds users due for a tip (consent given, a
channel set, outside their quiet hours in their own timezone, nothing sent within
`OO_APP__NOTIFY_EVERY_HOURS`), asks serving with `defer_activation`, delivers by SMTP or
webhook, records every attempt in the `deliveries` dataset and table, and retries failed
deliveries whose backoff has passed. A pass is idempotent: a user already served within the
period is not due again, so an overlapping or repeated run sends nothing twice.

The task runs the app API's own entry point in a subprocess (the DAGs may not import the app
API: deployables never import each other), with the worker's environment, so the settings
(`OO_*`) are the app's. A pass that raises exits non-zero and is retried.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from pendulum import datetime


@dag(
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    dagrun_timeout=timedelta(minutes=30),
    tags=["app", "notifications"],
    doc_md=__doc__,
)
def notifier():
    @task.bash(execution_timeout=timedelta(minutes=20))
    def notify_once() -> str:
        import shlex
        import sys

        return f"{shlex.quote(sys.executable)} -m app_api.notifier"

    notify_once()


notifier()
