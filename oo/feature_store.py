"""The Feast feature store, built from the settings.

``feature_repo/feature_store.yaml`` is one file for every deployment: Feast 0.67 reads it through
``os.path.expandvars`` (``feast.repo_config.load_repo_config``), so every ``${VAR}`` in it is
replaced from the process environment before the YAML is parsed, and a variable that is not set
is left as is (and then fails validation, loudly). :func:`yaml_vars` derives those variables from
the one settings object; :func:`get_store` exports them and opens the store, the same path the
``feast`` CLI takes (``make feast-plan`` exports them with ``python -m oo.feature_store env``).

The online store is a whole YAML flow mapping in one variable: SQLite under ``var/feast`` by
default, Redis when ``OO_REDIS__URL`` is set. The two configs have different keys, so switching
them field by field in the YAML would not validate.

Feast takes about 5 s to import, so it is imported on first use.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from oo.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore

REPO_PATH = Path(__file__).resolve().parents[1] / "feature_repo"
"""The Feast repo: definitions, ``feature_store.yaml`` and ``.feastignore``."""

TABLES = ("task_attributes", "task_engagement", "user_reactions", "user_rhythm")
"""The feature tables the features DAG computes, one Parquet file each, read by Feast sources."""


class FeatureStoreConfigError(ValueError):
    """A setting that cannot become a Feast config (e.g. a Redis URL of another scheme)."""


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N[,password=...][,ssl=true]`` form of a ``redis://`` URL.

    Examples
    --------
    >>> redis_connection_string("redis://127.0.0.1:6379/15")
    '127.0.0.1:6379,db=15'
    >>> redis_connection_string("rediss://:s3cret@cache:6380")
    'cache:6380,db=0,password=s3cret,ssl=true'
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise FeatureStoreConfigError(f"OO_REDIS__URL must be redis:// or rediss://, got {url!r}")
    db = (parsed.path or "/0").lstrip("/") or parse_qs(parsed.query).get("db", ["0"])[0]
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}", f"db={int(db)}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def online_store_config(settings: Settings) -> dict[str, Any]:
    """The ``online_store`` block: Redis when a Redis URL is configured, SQLite otherwise."""
    if settings.redis.url:
        config: dict[str, Any] = {"type": "redis", "connection_string": redis_connection_string(settings.redis.url)}
        if settings.feast.redis_key_ttl_s:
            config["key_ttl_seconds"] = settings.feast.redis_key_ttl_s
        return config
    return {"type": "sqlite", "path": str(settings.feast_dir / "online_store.db")}


def yaml_vars(settings: Settings | None = None) -> dict[str, str]:
    """The ``${VARS}`` that ``feature_store.yaml`` takes, from the settings.

    Examples
    --------
    >>> from oo.settings import Settings
    >>> v = yaml_vars(Settings(redis={"url": "redis://127.0.0.1:6379/15"}, feast={"project": "t1"}))
    >>> v["FEAST_PROJECT"], v["FEAST_ONLINE_STORE"]
    ('t1', '{"type": "redis", "connection_string": "127.0.0.1:6379,db=15"}')
    """
    s = settings or get_settings()
    return {
        "FEAST_PROJECT": s.feast.project,
        "FEAST_REGISTRY_PATH": str(s.feast_dir / "registry.db"),
        "FEAST_REGISTRY_CACHE_TTL": str(s.feast.registry_cache_ttl_s),
        # JSON is YAML: the whole mapping lands in the file as one flow mapping.
        "FEAST_ONLINE_STORE": json.dumps(online_store_config(s)),
    }


def tables_dir(settings: Settings | None = None) -> Path:
    """Where the published feature tables live (the Feast sources point here)."""
    return (settings or get_settings()).feast_dir / "tables"


def table_path(name: str, settings: Settings | None = None) -> Path:
    """The absolute path of one published feature table (Feast resolves relative paths against
    the CWD, not the repo, so sources always get absolute ones)."""
    if name not in TABLES:
        raise KeyError(f"unknown feature table {name!r}; known: {TABLES}")
    return tables_dir(settings) / f"{name}.parquet"


def get_store(settings: Settings | None = None) -> FeatureStore:
    """A FeatureStore over ``feature_repo/`` configured by the settings (exports the YAML vars)."""
    s = settings or get_settings()
    s.feast_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(yaml_vars(s))
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(REPO_PATH), fs_yaml_file=REPO_PATH / "feature_store.yaml")
    if s.redis.url:
        _bound_redis(store, s)
    return store


def _bound_redis(store: FeatureStore, s: Settings) -> None:
    """Give Feast's Redis online store a client with short timeouts and few retries.

    redis-py 7 retries a refused connection 3 times with up to 10 s of backoff, so a serving call
    to a Redis that is down hangs for about 10 s; Feast builds its client from the connection
    string, which cannot carry a retry policy. The client is the one Feast would build (same
    host, port, db, password, ssl) plus the policy; Feast uses it because it only builds one when
    none exists (``RedisOnlineStore._get_client``).
    """
    from redis import Redis
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    online: Any = store._get_provider().online_store
    parsed = urlparse(s.redis.url or "")
    online._client = Redis(
        host=parsed.hostname or "localhost",
        port=parsed.port or 6379,
        db=int((parsed.path or "/0").lstrip("/") or 0),
        password=parsed.password,
        ssl=parsed.scheme == "rediss",
        socket_connect_timeout=s.feast.redis_timeout_s,
        socket_timeout=s.feast.redis_timeout_s,
        retry=Retry(ConstantBackoff(0.01), s.feast.redis_retries),  # type: ignore[arg-type]  # stub says int,
    )


@contextmanager
def _repo_on_path() -> Iterator[None]:
    sys.path.insert(0, str(REPO_PATH))
    try:
        yield
    finally:
        sys.path.remove(str(REPO_PATH))


def load_definitions() -> list[Any]:
    """Every Feast object defined in ``feature_repo/``, read the way ``feast apply`` reads it.

    The files Feast would import (``feast.repo_operations.get_repo_files``, which honours
    ``.feastignore``) are imported fresh, so source paths follow the current settings.
    """
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.repo_operations import get_repo_files

    names = [p.stem for p in get_repo_files(REPO_PATH)]
    found: list[Any] = []
    with _repo_on_path():
        for name in names:
            sys.modules.pop(name, None)
        for name in names:
            module = importlib.import_module(name)
            for attr in vars(module).values():
                kinds = (DataSource, Entity, FeatureService, FeatureView, OnDemandFeatureView)
                if isinstance(attr, kinds) and not any(attr is f for f in found):
                    found.append(attr)
    return found


def _spec(obj: Any) -> bytes:
    """The definition of a Feast object as its registry would hold it, without what ``apply``
    stamps on or infers for it (``meta``: created / updated times, materialization intervals;
    ``entity_columns``: from the entities, which are compared themselves) and without a UDF's
    pickled ``body`` when its source (``body_text``) is there (the pickle differs after a round
    trip through the registry; the source does not)."""
    from google.protobuf.descriptor import FieldDescriptor

    def strip(message: Any) -> None:
        fields = message.DESCRIPTOR.fields_by_name
        if "body" in fields and "body_text" in fields and message.body_text:
            message.ClearField("body")
        for f, value in message.ListFields():
            if f.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if f.name in ("meta", "entity_columns"):
                message.ClearField(f.name)
            elif f.message_type.GetOptions().map_entry:
                if f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value.values():
                        strip(item)
            elif f.is_repeated:
                for item in value:
                    strip(item)
            else:
                strip(value)

    proto = obj.to_proto()
    strip(proto)
    return bytes(proto.SerializeToString(deterministic=True))


def registered(store: FeatureStore, objects: list[Any]) -> bool:
    """Whether the store's registry already holds every one of ``objects`` exactly as defined
    (same kind, name and definition): applying them again would change nothing."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.errors import FeastObjectNotFoundException

    getters: list[tuple[type, Any]] = [
        (OnDemandFeatureView, store.get_on_demand_feature_view),
        (FeatureView, store.get_feature_view),
        (FeatureService, store.get_feature_service),
        (Entity, store.get_entity),
        (DataSource, store.get_data_source),
    ]
    for obj in objects:
        getter = next((g for kind, g in getters if isinstance(obj, kind)), None)
        if getter is None:
            return False
        try:
            held = getter(obj.name)
        except (FeastObjectNotFoundException, ValueError):
            return False
        if type(held) is not type(obj) or _spec(held) != _spec(obj):
            return False
    return True


def apply(store: FeatureStore | None = None, force: bool = False) -> list[str]:
    """Register every definition of ``feature_repo/`` (idempotent); return their names.

    When the registry already holds every definition as defined (:func:`registered`), nothing is
    written (``feast apply`` would only rewrite the same definitions), unless the SQLite online
    store's file is missing (apply creates its tables); ``force`` applies anyway.
    """
    store = store or get_store()
    objects = load_definitions()
    online: dict[str, Any] = online_store_config(get_settings())
    missing_online = online["type"] == "sqlite" and not Path(online["path"]).exists()  # apply creates its tables
    if force or missing_online or not registered(store, objects):
        store.apply(objects)
    return sorted(str(o.name) for o in objects)


def main(argv: list[str]) -> int:
    """``python -m oo.feature_store env`` prints ``export VAR=...`` lines for the feast CLI."""
    if argv[:1] == ["env"]:
        get_settings().feast_dir.mkdir(parents=True, exist_ok=True)
        for key, value in yaml_vars().items():
            print(f"export {key}='{value}'")  # noqa: T201
        return 0
    print("usage: python -m oo.feature_store env")  # noqa: T201
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
