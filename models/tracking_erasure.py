"""One user's rows in MLflow: read them (for an export) and remove them (for an erasure).

What MLflow holds about a user is tabular artifacts with a ``user_id`` column, such as the
training-set lineage a challenger's run logs (:data:`models.registry.TRAINING_SET`); params,
metrics and tags hold counts and names, never user ids. Every run of every experiment (deleted
ones too: their artifacts stay until ``mlflow gc``) is searched for Parquet artifacts with a
``user_id`` column, and each that holds the user's rows is rewritten without them: in place and
atomically (:func:`oo.lake.rewrite_without`: temporary file, fsync, rename) when the artifact
store is a local folder, or downloaded, filtered and uploaded again (one object put replaces
the whole object) otherwise. An artifact left with no rows is removed. Idempotent: a second
erasure finds nothing.

A trained policy is not personal data here (a scoring model over features, no identifiers), so
model artifacts are left as they are; the learner's online state is purged by serving.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from oo.lake import rewrite_without

log = logging.getLogger(__name__)


def _has_store(settings: Any) -> bool:
    """Whether anything was ever tracked (an SQLite store that does not exist is not created)."""
    uri: str = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def _client(settings: Any) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def _runs(client: MlflowClient) -> Iterator[Any]:
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    token = None
    while experiments:
        page = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _parquet_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[str]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _parquet_artifacts(client, run_id, info.path)
        elif info.path.endswith(".parquet"):
            yield info.path


def _local_root(artifact_uri: str) -> Path | None:
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def _user_rows(path: Path, user_id: str) -> list[dict[str, Any]]:
    if "user_id" not in pq.read_schema(path).names:
        return []
    table = pq.read_table(path)
    hit = pc.fill_null(pc.equal(pc.cast(table["user_id"], pa.string()), user_id), False)
    rows: list[dict[str, Any]] = table.filter(hit).to_pylist()
    return rows


def _files(client: MlflowClient, run: Any, tmp: Path) -> Iterator[tuple[str, Path, bool]]:
    """(artifact path, a local file holding it, whether that file is the artifact itself)."""
    root = _local_root(run.info.artifact_uri)
    for artifact in _parquet_artifacts(client, run.info.run_id):
        if root is not None:
            yield artifact, root / artifact, True
        else:
            local = client.download_artifacts(run.info.run_id, artifact, str(tmp))
            yield artifact, Path(local), False


def read_user(settings: Any, user_id: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The user's rows in MLflow artifacts: ``{run_id: {artifact path: rows}}``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if not _has_store(settings):
        return out
    client = _client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        for run in _runs(client):
            for artifact, local, _ in _files(client, run, Path(tmp)):
                rows = _user_rows(local, user_id)
                if rows:
                    out.setdefault(run.info.run_id, {})[artifact] = rows
    return out


def erase_user(settings: Any, user_id: str) -> int:
    """Rewrite every MLflow artifact holding the user's rows without them; the rows removed."""
    if not _has_store(settings):
        return 0
    client = _client(settings)
    removed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in _runs(client):
            for artifact, local, in_place in _files(client, run, Path(tmp)):
                n = rewrite_without(local, "user_id", [user_id])
                removed += n
                if n and not in_place:
                    _upload(client, run, artifact, local)
    log.info("mlflow: %d artifact rows erased", removed)
    return removed


def _upload(client: MlflowClient, run: Any, artifact: str, local: Path) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    folder = str(Path(artifact).parent) if "/" in artifact else None
    if local.exists():
        client.log_artifact(run.info.run_id, str(local), folder)
    else:  # no row left
        get_artifact_repository(run.info.artifact_uri).delete_artifacts(artifact)  # type: ignore[no-untyped-call]
