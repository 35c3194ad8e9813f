"""Compute the feature tables, validate them, materialize them, and build training examples.

Scheduled on data, not a clock: it runs when ``todoist_sync`` updated ``TODOIST_SNAPSHOTS`` or
``events_ingest`` updated ``EVENTS``. Steps (each one library call in ``models.features.pipeline``):

1. ``build``: DuckDB SQL over the lake writes the four feature tables to a staging folder;
2. ``validate``: each table's Great Expectations suite (from its contract); a failure stops the
   run here with the failing expectations, values and row counts in the task's error, so nothing
   is published or materialized and the online store keeps what it had;
3. ``publish_and_apply``: the tables replace the ones the Feast sources read; ``feast apply``;
4. ``materialize``: incremental materialization into the online store; updates ``FEATURES``;
5. ``training_examples``: decisions whose reward window closed, joined with their rewards and
   point-in-time features, into the lake's ``training_examples``; updates ``TRAINING_SET``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from pendulum import datetime

from dags.assets import EVENTS, FEATURES, TODOIST_SNAPSHOTS, TRAINING_SET


@dag(
    schedule=(TODOIST_SNAPSHOTS | EVENTS),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["features", "training"],
    doc_md=__doc__,
)
def features():
    @task
    def build(**context) -> dict:
        from models.features.pipeline import build

        return build(context["run_id"], context["dag_run"].run_after.isoformat())

    @task
    def validate(built: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from models.features.pipeline import FeatureValidationError, validate

        try:
            return validate(built["staging"])
        except FeatureValidationError as exc:  # bad data is not transient: fail now, say why
            raise AirflowFailException(str(exc)) from exc

    @task
    def publish_and_apply(built: dict) -> list:
        from models.features.pipeline import publish_and_apply

        return publish_and_apply(built["staging"])

    @task(outlets=[FEATURES])
    def materialize() -> str:
        from models.features.pipeline import materialize

        return materialize()

    @task(outlets=[TRAINING_SET])
    def training_examples(built: dict) -> int:
        from airflow.sdk.exceptions import AirflowSkipException

        from models.features.pipeline import training_examples

        written = training_examples(built["as_of"])
        if written == 0:
            raise AirflowSkipException("no decision has a closed reward window without a training row")
        return written

    built = build()
    checked = validate(built)
    applied = publish_and_apply(built)
    checked >> applied
    materialized = materialize()
    applied >> materialized
    materialized >> training_examples(built)


features_dag = features()
