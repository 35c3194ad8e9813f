"""feature_store.yaml is one file: SQLite by default, Redis when OO_REDIS__URL is set, through
${VARS} that Feast expands itself; feast apply imports only the definitions."""

from __future__ import annotations

import os

import pytest

from oo.feature_store import REPO_PATH, FeatureStoreConfigError, redis_connection_string, yaml_vars
from tests.models.features.conftest import settings_env


def load(settings):  # type: ignore[no-untyped-def]
    from feast.repo_config import load_repo_config

    os.environ.update(yaml_vars(settings))
    return load_repo_config(REPO_PATH, REPO_PATH / "feature_store.yaml")


def test_the_yaml_gives_sqlite_by_default_and_redis_when_a_url_is_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with settings_env(OO_PATHS__VAR_DIR=str(tmp_path), OO_FEAST__PROJECT="cfg1") as s:
        config = load(s)
        assert config.project == "cfg1" and config.online_store.type == "sqlite"
        assert config.online_store.path == str(tmp_path / "feast" / "online_store.db")
        assert config.offline_store.type == "duckdb"
    with settings_env(OO_REDIS__URL="redis://:pw@10.0.0.5:6380/3") as s:
        config = load(s)
        assert config.online_store.type == "redis"
        assert config.online_store.connection_string == "10.0.0.5:6380,db=3,password=pw"


def test_a_redis_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(FeatureStoreConfigError, match="redis://"):
        redis_connection_string("http://127.0.0.1:6379")


def test_feast_reads_only_the_definition_files() -> None:
    from feast.repo_operations import get_repo_files

    assert sorted(p.name for p in get_repo_files(REPO_PATH)) == [
        "data_sources.py",
        "entities.py",
        "feature_services.py",
        "features.py",
    ]


def test_an_unreachable_online_store_raises_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.features.online import FeatureStoreUnavailable, OnlineFeatures
    from oo import feature_store

    with settings_env(OO_PATHS__VAR_DIR=str(tmp_path), OO_FEAST__PROJECT="down", OO_REDIS__URL="redis://127.0.0.1:1/0"):
        feature_store.apply()  # the registry is a local file: defining features needs no Redis
        store = feature_store.get_store()
        client = store._get_provider().online_store._client  # Feast's own client would retry for ~10 s
        assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.5
        with pytest.raises(FeatureStoreUnavailable, match="online store unreadable"):
            OnlineFeatures(store).get("u1", ["t1"])


def test_on_demand_task_features_read_due_times_in_the_users_timezone() -> None:
    from datetime import UTC, datetime

    from oo.feature_store import load_definitions

    task_time = next(o for o in load_definitions() if o.name == "task_time")
    udf = task_time.feature_transformation.udf
    now = datetime(2026, 5, 1, 22, 0, tzinfo=UTC)  # 07:00 on 2 May in Tokyo
    wall_9am_may2 = datetime(2026, 5, 2, 9, tzinfo=UTC).timestamp()  # floating 09:00, read as UTC
    out = udf(
        {
            "now_ts": [now.timestamp()] * 4,
            "tz": ["Asia/Tokyo", "Asia/Tokyo", "UTC", "UTC"],
            "added_ts": [now.timestamp() - 86400 * 2, now.timestamp(), now.timestamp(), None],
            "due_ts": [wall_9am_may2, datetime(2026, 5, 1, 21, tzinfo=UTC).timestamp(), None, None],
            "due_floating": [1.0, 0.0, 0.0, None],
            "deadline_day": [None, None, float((datetime(2026, 5, 3).date() - datetime(1970, 1, 1).date()).days), None],
        }
    )
    assert out["hours_until_due"][0] == pytest.approx(2.0)  # 09:00 Tokyo wall time, 2 h after 07:00 there
    assert out["is_overdue"][:2] == [0.0, 1.0]  # the second was due at 21:00 UTC, an hour ago
    assert out["age_days"][0] == pytest.approx(2.0)
    assert out["days_to_deadline"][2] == 2.0 and out["days_to_deadline"][0] == 365.0
    assert out["hours_until_due"][2] == 720.0  # no due date
    assert [v[3] for v in out.values()] == [None, None, None, None]  # unknown task: left for the defaults


def test_apply_writes_the_registry_only_when_a_definition_changed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The features DAG applies on every run; a registry that already holds every definition is
    left alone, and a changed schema (a new feature) is applied."""
    from feast import FeatureStore, Field
    from feast.types import Float64

    from oo import feature_store

    writes: list[int] = []
    real_apply = FeatureStore.apply

    def counted(self, objects, *args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(len(objects))
        return real_apply(self, objects, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "apply", counted)
    with settings_env(OO_PATHS__VAR_DIR=str(tmp_path), OO_FEAST__PROJECT="applied1"):
        names = feature_store.apply()  # a fresh registry: written
        assert len(writes) == 1 and "task_attributes" in names
        assert feature_store.apply() == names and len(writes) == 1  # unchanged: not written again
        assert feature_store.registered(feature_store.get_store(), feature_store.load_definitions())

        real_load = feature_store.load_definitions

        def with_a_new_feature() -> list:  # type: ignore[type-arg]
            objects = real_load()
            view = next(o for o in objects if o.name == "task_attributes")
            view.schema.append(Field(name="new_feature", dtype=Float64))
            view.features.append(Field(name="new_feature", dtype=Float64))
            return objects

        monkeypatch.setattr(feature_store, "load_definitions", with_a_new_feature)
        assert not feature_store.registered(feature_store.get_store(), with_a_new_feature())
        feature_store.apply()
        assert len(writes) == 2
        held = feature_store.get_store().get_feature_view("task_attributes")
        assert "new_feature" in {f.name for f in held.features}
        feature_store.apply()  # the changed definitions are now the registry's
        assert len(writes) == 2
        feature_store.apply(force=True)
        assert len(writes) == 3
