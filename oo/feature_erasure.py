"""One entity's rows in the Feast feature store: read them (for an export) and delete them (for
an erasure), in the online store (SQLite or Redis) and in the published feature tables.

Feast has no per-entity delete in its online-store interface, so this deletes by the key Feast
itself writes: the entity key serialized with the repo's ``entity_key_serialization_version``, in
each feature view's SQLite table (``<project>_<view>``), or the Redis hash named by
``feast.infra.online_stores.helpers._redis_key`` (one hash holds every view of an entity). The
published feature tables (Parquet under ``tables_dir``) are rewritten without the entity's rows,
atomically (:func:`oo.lake.rewrite_without`); the next ``features`` run rebuilds them from the
lake, from which the user has been erased as well.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from oo.lake import rewrite_without

log = logging.getLogger(__name__)


def _views(store: Any, join_key: str) -> list[Any]:
    return [fv for fv in store.list_feature_views() if join_key in fv.join_keys]


def read_online(store: Any, join_key: str, values: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The online rows of the entities ``join_key in values``, per feature view (rows where every
    feature is missing are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not values:
        return out
    for fv in _views(store, join_key):
        refs = [f"{fv.name}:{f.name}" for f in fv.features]
        got = store.get_online_features(features=refs, entity_rows=[{join_key: v} for v in values]).to_dict()
        names = [f.name for f in fv.features]
        rows = []
        for i, v in enumerate(values):
            row = {n: got[n][i] for n in names if n in got}
            if any(x is not None for x in row.values()):
                rows.append({join_key: v, **row})
        if rows:
            out[fv.name] = rows
    return out


def _entity_keys(join_key: str, values: Sequence[str]) -> list[Any]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=v)]) for v in values]


def delete_online(store: Any, join_key: str, values: Sequence[str]) -> int:
    """Delete the online rows of the entities ``join_key in values``; the count of keys (Redis)
    or rows (SQLite) deleted."""
    if not values:
        return 0
    from feast.infra.key_encoding_utils import serialize_entity_key

    config = store.config
    version = config.entity_key_serialization_version
    online = store._get_provider().online_store  # Feast exposes no public handle to it
    keys = _entity_keys(join_key, values)
    if config.online_store.type == "redis":
        from feast.infra.online_stores.helpers import _redis_key

        client = online._get_client(config.online_store)
        return int(client.delete(*[_redis_key(config.project, k, version) for k in keys]))
    from feast.infra.online_stores.sqlite import _table_id

    conn = online._get_conn(config)
    blobs = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
    deleted = 0
    with conn:
        for fv in _views(store, join_key):
            table = _table_id(config.project, fv)
            marks = ", ".join("?" * len(blobs))
            try:
                cur = conn.execute(f'DELETE FROM "{table}" WHERE entity_key IN ({marks})', blobs)
            except sqlite3.OperationalError as exc:  # the view was never materialized here
                log.debug("feature erasure: %s: %s", table, exc)
                continue
            deleted += cur.rowcount
    return deleted


def delete_from_tables(folder: Any, join_key: str, values: Sequence[str]) -> int:
    """Rewrite the published feature tables in ``folder`` without the entities' rows."""
    from pathlib import Path

    removed = 0
    for path in sorted(Path(folder).glob("*.parquet")):
        removed += rewrite_without(path, join_key, values)
    return removed


def read_tables(folder: Any, join_key: str, values: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The published feature tables' rows of the entities, per table."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(folder).glob("*.parquet")):
        if join_key not in pq.read_schema(path).names or not values:
            continue
        table = pq.read_table(path)
        hit = pc.fill_null(pc.is_in(pc.cast(table[join_key], pa.string()), value_set=pa.array(list(values))), False)
        rows = table.filter(hit).to_pylist()
        if rows:
            out[path.stem] = rows
    return out
