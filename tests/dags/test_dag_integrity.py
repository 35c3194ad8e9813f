"""Every DAG imports cleanly, is tagged, retries, and says what it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from oo.runtime import DAGS_FOLDER


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_its_dag(dagbag) -> None:  # type: ignore[no-untyped-def]
    files = {p.stem for p in Path(DAGS_FOLDER).glob("*.py") if p.stem not in {"__init__", "assets"}}
    assert files <= set(dagbag.dag_ids), f"DAG files without a DAG of the same name: {files - set(dagbag.dag_ids)}"


def test_every_dag_is_tagged_documented_and_retries(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries {task.retries} < 2"
