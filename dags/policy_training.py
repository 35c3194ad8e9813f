"""Train candidate tip policies on the latest training examples, log them to MLflow, gate `@champion`.

Scheduled on the `TRAINING_SET` Asset (updated by `features` after it wrote point-in-time
training examples). The task reads the examples of the training window ending at the run's
interval end from the lake, warm-starts a small grid of policies, evaluates each off-policy on
the held-out latest decisions, logs one MLflow run per candidate, moves `@challenger` to the best
and `@champion` only when the gate passes. Re-running an interval finds its runs and does nothing.
"""

from __future__ import annotations

from airflow.sdk import dag, task
from pendulum import datetime

from dags.assets import TRAINING_SET


@dag(
    schedule=[TRAINING_SET],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2},
    tags=["training", "policy", "mlflow"],
    doc_md=__doc__,
)
def policy_training():
    @task
    def train_and_register(**context) -> dict:
        from models.policy_training import train_and_register as run

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return run(end)

    train_and_register()


policy_training()
