"""Privacy: the export holds the user's data from every store (app database, lake, event log,
feature store, MLflow artifacts, serving) and nobody else's; after the erasure, a search of every
store for the user's id finds nothing, and the audit entry holds no personal data."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app_api.privacy import event_log, feature_store, lake_datasets
from app_api.relay import relay_once
from app_api.services import Services
from app_api.tables import AuditEntry
from data_contracts import Activation, CandidateKind, NotificationDelivery, ReactionEvent, RewardEvent, TrainingExample
from models.registry import TRAINING_SET
from oo.events_ingest import ingest
from oo.fakes.serving import FakeServingServer
from oo.feature_erasure import read_online
from oo.tables import Base
from tests.app_api.conftest import Account
from tests.models.features.synthetic import T0, decision
from tests.models.features.synthetic import reaction as synthetic_reaction
from tests.serving.conftest import seed_tasks

pytestmark = pytest.mark.slow


def reaction(user_id: str) -> ReactionEvent:
    return ReactionEvent(
        event_id=uuid.uuid4(),
        decision_id=uuid.uuid4(),
        user_id=user_id,
        candidate_id="task:1",
        reaction="done",
        occurred_at=datetime(2026, 3, 27, 9, tzinfo=UTC),
    )


def give_data(client: TestClient, services: Services, account: Account) -> None:
    """Data in every store: profile, consent, token, a tip and its reaction (relayed to serving),
    lake rows, and online feature rows."""
    client.put("/v1/me/profile", json={"timezone": "Europe/Paris"}, headers=account.auth)
    client.post("/v1/me/consents", json={"purpose": "analytics", "granted": True}, headers=account.auth)
    client.post("/v1/integrations/todoist", json={"token": f"tok-{account.id}"}, headers=account.auth)
    tip = client.get("/v1/tips/next", headers=account.auth).json()
    client.post("/v1/feedback", json={"decision_id": tip["decision_id"], "reaction": "done"}, headers=account.auth)
    asyncio.run(relay_once(services))
    event = reaction(account.id)
    services.lake.write("reactions", [event])
    services.lake.write(
        "deliveries",
        [
            NotificationDelivery(
                delivery_id=uuid.uuid4(), user_id=account.id, channel="email", status="sent", attempt=1,
                created_at=datetime(2026, 3, 27, 9, tzinfo=UTC),
            )
        ],
    )  # fmt: skip
    from models.features.online import OnlineFeatures

    OnlineFeatures(feature_store(services)).push_reaction(event, CandidateKind.todoist_task)
    seed_tasks(services.settings, account.id, 2)  # task ids hold the user's id: task-keyed rows are found too
    events = event_log(services)  # serving's and the app's events, not yet ingested into the lake
    d = decision(uuid.uuid4().int >> 64, account.id, T0, ["t1", "t2"])
    events.append("decisions", d)
    events.append("reactions", synthetic_reaction(1, d, "done", T0))
    events.append(
        "rewards",
        RewardEvent(event_id=uuid.uuid4(), decision_id=d.decision_id, user_id=account.id, reaction="done",
                    reward=1.0, occurred_at=T0),
    )  # fmt: skip
    events.append("activations", Activation(decision_id=d.decision_id, user_id=account.id, activated_at=T0))


def training_example(user_id: str) -> TrainingExample:
    d = decision(uuid.uuid4().int >> 64, user_id, T0, ["t1"])
    return TrainingExample(
        decision_id=d.decision_id, user_id=user_id, decided_at=T0, candidates=d.candidates, chosen_id=d.chosen_id,
        propensity=0.5, policy="baseline", policy_version="1", rewarded=True, reward=1.0,
    )  # fmt: skip


def log_training_set(services: Services, *accounts: Account) -> str:
    """A training run whose lineage artifact holds the accounts' decisions (as policy_training logs it)."""
    import mlflow

    from models.registry import Registry

    registry = Registry(services.settings)
    with mlflow.start_run(experiment_id=registry.experiment_id) as run:
        pass
    registry.log_training_set(run.info.run_id, [training_example(a.id) for a in accounts for _ in range(2)])
    return str(run.info.run_id)


@pytest.fixture
def applied(services: Services) -> Services:
    from oo.feature_store import apply
    from oo.settings import settings_env

    # the definitions' sources follow the process's settings: point them at this test's tables
    with settings_env(OO_PATHS__VAR_DIR=str(services.settings.paths.var_dir)):
        apply(feature_store(services))
    return services


def everything_in_the_app_db(services: Services) -> str:
    out: list[Any] = []
    with Session(services.engine) as s:
        for table in Base.metadata.sorted_tables:
            out += [list(r) for r in s.execute(select(table)).all()]
    return json.dumps(out, default=str)


def everything_in_the_lake(services: Services) -> str:
    return json.dumps([services.lake.read(n).to_pylist() for n in lake_datasets()], default=str)


def everything_in_the_event_log(services: Services) -> str:
    root = event_log(services).root
    return "".join(p.read_text() for p in sorted(root.iterdir()) if p.is_file())


def publish_feature_tables(services: Services) -> None:
    """The feature tables built from the lake, published and materialized, as the features DAG does."""
    from models.features import tables as feature_tables
    from oo.feature_store import tables_dir

    as_of = datetime(2026, 6, 1, tzinfo=UTC)
    staging = services.settings.feast_dir / "staging" / "privacy"
    feature_tables.build(services.lake, staging, as_of)
    feature_tables.publish(staging, tables_dir(services.settings))
    feature_store(services).materialize(start_date=as_of - timedelta(days=400), end_date=as_of)


def everything_in_the_feature_store(services: Services) -> str:
    """Every published feature-table row, and every row of the SQLite online store (its entity
    keys are serialized protobufs, which hold the ids as plain bytes)."""
    import sqlite3

    import pyarrow.parquet as pq

    from oo.feature_store import online_store_config, tables_dir

    out: list[Any] = [pq.read_table(p).to_pylist() for p in sorted(tables_dir(services.settings).glob("*.parquet"))]
    online = online_store_config(services.settings)
    assert online["type"] == "sqlite", "this search reads the SQLite online store"
    with sqlite3.connect(online["path"]) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            out += [[v.decode("latin-1") if isinstance(v, bytes) else v for v in row] for row in rows]
    return json.dumps(out, default=str)


def everything_in_mlflow(services: Services) -> str:
    """Every artifact (Parquet decoded: its pages are compressed) and every tracking-table row."""
    import sqlite3

    import pyarrow.parquet as pq

    out: list[Any] = []
    for path in sorted(p for p in services.settings.mlflow_artifact_root.rglob("*") if p.is_file()):
        out.append(
            pq.read_table(path).to_pylist() if path.suffix == ".parquet" else path.read_bytes().decode("latin-1")
        )
    db = services.settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out += [conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables]
    return json.dumps(out, default=str)


def test_export_then_erase(
    client: TestClient, applied: Services, fake_serving: FakeServingServer, alice: Account, bob: Account
) -> None:
    services = applied
    give_data(client, services, alice)
    give_data(client, services, bob)
    run_id = log_training_set(services, alice, bob)
    publish_feature_tables(services)
    assert alice.id in everything_in_the_feature_store(services)  # so the search below can fail

    r = client.get("/v1/me/export", headers=alice.auth)
    assert r.status_code == 200
    data = r.json()
    assert data["app"]["user"]["email"] == alice.email
    assert data["app"]["user"]["timezone"] == "Europe/Paris"
    assert [c["purpose"] for c in data["app"]["consents"]] == ["analytics"]
    assert data["app"]["integrations"][0]["token_stored"] is True and "token_ciphertext" not in r.text
    assert len(data["app"]["reactions"]) == 1 and len(data["app"]["served_decisions"]) == 1
    assert len(data["lake"]["reactions"]) == 1 and len(data["lake"]["deliveries"]) == 1
    assert data["feature_store"]["online"]["user_reactions"][0]["user_id"] == alice.id
    tables = data["feature_store"]["tables"]
    assert {row["user_id"] for row in tables["user_reactions"]} == {alice.id}
    assert {row["task_id"] for row in tables["task_attributes"]} == {f"{alice.id}-t0", f"{alice.id}-t1"}
    assert len(data["serving"]["decisions"]) == 1 and len(data["serving"]["rewards"]) == 1
    assert sorted(data["event_log"]) == ["activations", "decisions", "reactions", "rewards"]
    assert [e["user_id"] for e in data["event_log"]["decisions"]] == [alice.id]
    assert [row["user_id"] for row in data["mlflow"][run_id][TRAINING_SET]] == [alice.id, alice.id]
    assert bob.id not in r.text and bob.email not in r.text  # only the caller's data
    assert f"tok-{alice.id}" not in r.text and "password_hash" not in r.text

    assert client.delete("/v1/me", headers=alice.auth).status_code == 204

    ingest(services.lake, event_log(services))  # what was not yet ingested does not come back
    for haystack in (
        everything_in_the_app_db(services),
        everything_in_the_lake(services),
        everything_in_the_event_log(services),
        everything_in_mlflow(services),
        everything_in_the_feature_store(services),
    ):
        assert alice.id not in haystack and alice.email not in haystack
        assert bob.id in haystack  # Bob is untouched
    assert services.lake.read("decisions", where="user_id = ?", params=[bob.id]).num_rows == 1
    store = feature_store(services)
    assert read_online(store, "user_id", [alice.id]) == {}
    assert read_online(store, "user_id", [bob.id]) != {}
    assert fake_serving.world.held(alice.id) == {"decisions": [], "rewards": []}
    assert fake_serving.world.held(bob.id)["decisions"]
    with Session(services.engine) as s:
        [audit] = s.execute(select(AuditEntry)).scalars().all()
    assert audit.action == "user_erased" and audit.detail["lake"] == 4 and audit.detail["serving"] == 2  # 2 tasks
    assert audit.detail["feature_tables"] > 0 and audit.detail["feature_online"] > 0
    assert audit.detail["event_log"] == 4 and audit.detail["mlflow"] == 2
    assert alice.id not in json.dumps(audit.detail) and alice.email not in json.dumps(audit.detail)
    # The account is gone: its token no longer works, and the email can register again.
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 401
    assert client.post("/v1/auth/login", json={"email": alice.email, "password": "x" * 12}).status_code == 401


def test_serving_down_erases_nothing(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account
) -> None:
    services.lake.write("reactions", [reaction(alice.id)])
    fake_serving.stop()
    try:
        r = client.delete("/v1/me", headers=alice.auth)
        export = client.get("/v1/me/export", headers=alice.auth)
    finally:
        fake_serving.start()
    assert r.status_code == 503 and export.status_code == 503
    assert services.lake.read("reactions").num_rows == 1
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 200
    assert client.delete("/v1/me", headers=alice.auth).status_code == 204  # and again, now it works
    assert services.lake.read("reactions").num_rows == 0


def test_a_store_failing_midway_keeps_the_account_and_a_retry_finishes(
    client: TestClient, services: Services, fake_serving: FakeServingServer, alice: Account, monkeypatch: Any
) -> None:
    services.lake.write("reactions", [reaction(alice.id)])
    delete_where = services.lake.delete_where

    def disk_full(*args: Any, **kwargs: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(services.lake, "delete_where", disk_full)
    r = client.delete("/v1/me", headers=alice.auth)
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "the erasure stopped at the lake; the account is kept; run it again"
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 200
    assert services.lake.read("reactions").num_rows == 1
    with Session(services.engine) as s:
        assert s.execute(select(AuditEntry)).scalars().all() == []  # not erased: no audit entry yet

    monkeypatch.setattr(services.lake, "delete_where", delete_where)
    assert client.delete("/v1/me", headers=alice.auth).status_code == 204
    assert services.lake.read("reactions").num_rows == 0
    assert client.get("/v1/auth/me", headers=alice.auth).status_code == 401
    with Session(services.engine) as s:
        assert [a.action for a in s.execute(select(AuditEntry)).scalars()] == ["user_erased"]


@pytest.mark.integration
def test_export_and_erasure_reach_nats_jetstream(
    client: TestClient, services: Services, nats_url: str, alice: Account, bob: Account
) -> None:
    from oo.bus import DbDeduplicator, NatsBus
    from oo.bus_erasure import read_user
    from oo.settings import BusSettings

    tag = uuid.uuid4().hex[:8]
    bus_settings = BusSettings(nats_url=nats_url, stream=f"P{tag}", subject_prefix=f"p{tag}")
    services.settings = services.settings.model_copy(update={"bus": bus_settings})

    async def on_nats(work: Any) -> Any:
        bus = NatsBus(nats_url, DbDeduplicator(services.engine), stream=bus_settings.stream, prefix=f"p{tag}")
        try:
            return await work(bus)
        finally:
            await bus.close()

    async def publish(bus: NatsBus) -> None:
        for account in (alice, bob, alice):
            await bus.publish("reactions", reaction(account.id))

    async def drop(bus: NatsBus) -> None:
        js = await bus._jetstream()
        for name in (bus.stream, f"{bus.stream}_DLQ"):
            await js.delete_stream(name)

    asyncio.run(on_nats(publish))
    try:
        exported = client.get("/v1/me/export", headers=alice.auth).json()["bus"]
        assert [e["user_id"] for e in exported[f"p{tag}.reactions"]] == [alice.id, alice.id]
        assert client.delete("/v1/me", headers=alice.auth).status_code == 204
        assert asyncio.run(on_nats(lambda bus: read_user(bus, alice.id))) == {}
        kept = asyncio.run(on_nats(lambda bus: read_user(bus, bob.id)))
        assert [e["user_id"] for e in kept[f"p{tag}.reactions"]] == [bob.id]
        with Session(services.engine) as s:
            [audit] = s.execute(select(AuditEntry)).scalars().all()
        assert audit.detail["bus"] == 2
    finally:
        asyncio.run(on_nats(drop))
