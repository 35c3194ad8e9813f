"""Airflow Assets shared by the DAGs: producers update them, consumers are scheduled on them.

(This file defines no DAG; the DAG processor parses it and finds none.)
"""

from airflow.sdk import Asset

TODOIST_SNAPSHOTS = Asset("oo://lake/todoist_tasks", group="lake")
"""Updated by ``todoist_sync`` after each run that wrote Todoist snapshots to the lake."""

EVENTS = Asset("oo://lake/events", group="lake")
"""Updated by ``events_ingest`` after decisions, rewards and reactions landed in the lake."""

FEATURES = Asset("oo://feast/online", group="features")
"""Updated by ``features`` after a successful materialization."""

TRAINING_SET = Asset("oo://lake/training_examples", group="lake")
"""Updated by ``features`` after it wrote point-in-time training examples for new decisions;
``policy_training`` is scheduled on it."""
