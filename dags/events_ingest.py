"""Move decisions, rewards and reactions into the lake.

Serving and the app publish events on the bus (NATS JetStream when ``OO_BUS__NATS_URL`` is set)
or append them to the event log under ``var/events``. Each run drains the bus's durable consumer
into the event log (ack after fsync), then moves the log's new lines, from a stored byte-offset
watermark, into the lake's date-partitioned ``decisions``, ``rewards`` and ``reactions``
(malformed lines go to ``quarantine`` with their reasons). The lake deduplicates by natural key
and partitions by each event's own timestamp: re-running adds nothing, and a late event lands in
its own date's partition. A run that wrote new rows updates the ``EVENTS`` asset, which schedules
``features``; a run with nothing new is skipped and updates nothing.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from pendulum import datetime

from dags.assets import EVENTS


@dag(
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["ingest", "events"],
    doc_md=__doc__,
)
def events_ingest():
    @task(outlets=[EVENTS])
    def ingest() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from oo.events_ingest import run_ingest

        report = run_ingest()
        if report.written == 0:
            raise AirflowSkipException(f"no new events: {report.summary()}")
        return report.summary()

    ingest()


events_ingest_dag = events_ingest()
