"""Airflow in tests: AIRFLOW_HOME is the test session's temporary var/airflow (set by
``oo.runtime.configure`` in the root conftest, before Airflow is imported), DAGS_FOLDER is the
project's ``dags/``, and the metadata database is migrated once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite in the session's var dir), for ``dag.test()``."""
    from airflow.utils.db import initdb

    initdb()
