"""The smoke test CI runs on both store set-ups: register, connect Todoist, sync, get a tip, react,
and the reaction delivered (serving's decision index, the lake after ``events_ingest``, the
learner), through the real processes (:func:`oo.fakes.e2e.run.run_smoke`). Once on the embedded
defaults (SQLite, event log, in-process bus, SQLite online store) and once past one machine:
PostgreSQL (a fresh database), Redis (the Feast online store, a project of its own) and NATS
JetStream (a stream and subjects of their own), which fails instead of skipping under
``OO_REQUIRE_SERVICES=1`` when one of them is missing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oo.fakes.e2e.run import run_smoke

pytestmark = pytest.mark.slow


def _delete_streams(url: str, names: list[str]) -> None:
    async def delete() -> None:
        import nats

        nc = await nats.connect(url, connect_timeout=2)
        try:
            js = nc.jetstream()
            for name in names:
                try:
                    await js.delete_stream(name)
                except Exception as exc:  # not created (nothing was published there): nothing to remove
                    print(f"stream {name} not deleted: {exc}")
        finally:
            await nc.drain()

    asyncio.run(delete())


@pytest.fixture(params=["embedded", pytest.param("services", marks=pytest.mark.integration)])
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    if request.param == "embedded":
        yield "embedded", {}
        return
    run = uuid.uuid4().hex[:10]
    pg_url = request.getfixturevalue("pg_url")
    nats_url = request.getfixturevalue("nats_url")
    env = {
        "OO_DB__URL": pg_url,
        "OO_SERVING__INDEX_URL": pg_url,  # the decision index replicas share
        "OO_REDIS__URL": request.getfixturevalue("redis_url"),
        "OO_BUS__NATS_URL": nats_url,
        "OO_BUS__STREAM": f"OO_SMOKE_{run.upper()}",
        "OO_BUS__SUBJECT_PREFIX": f"smoke_{run}",
        "OO_FEAST__PROJECT": f"smoke_{run}",
    }
    yield "services", env
    _delete_streams(nats_url, [env["OO_BUS__STREAM"], env["OO_BUS__STREAM"] + "_DLQ"])


def test_register_connect_tip_feedback_delivered(stores: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    kind, env = stores
    seen = run_smoke(tmp_path / "var", env, users=2)
    assert set(seen["synced"].values()) == {"ok"}
    assert seen["serving_ready"]["feature_store"] == "ok"
    assert seen["feedback_accepted"] == 2
    assert seen["feedback_delivered"] == seen["to_serving"] == seen["to_lake_rewards"] == 2
    assert seen["to_lake_reactions"] == 2
    assert seen["lost_feedback"] == seen["duplicated_feedback"] == 0
    assert seen["outbox"] == {"delivered": 4}
    assert seen["learner_learned"] == 2
    # past one machine the app's reactions travel over NATS, and events_ingest drains them from there
    assert seen["ingested_from_bus"]["reactions"] == (2 if kind == "services" else 0)
