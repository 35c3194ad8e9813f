"""The service in-process (``TipService.to_asgi()`` under Starlette's TestClient): bad input gets a
4xx with a message, unknown users and exclusions, MLflow down (the last local snapshot serves),
the feature store down (contract defaults, counted, still logged), and apprentice mode."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from data_contracts.decisions import MAX_CANDIDATES
from oo.events_ingest import EventLog
from serving.snapshots import SnapshotStore
from tests.serving.conftest import (
    applied_env,
    apply_feature_store,
    candidates,
    free_port,
    learnable_policy,
    seed_tasks,
    serving_env,
)

pytestmark = pytest.mark.slow


def client_for(env: dict[str, str]) -> Iterator[TestClient]:
    from serving.service import TipService

    with applied_env(env), TestClient(TipService.to_asgi()) as client:
        yield client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("serving-inprocess")
    env = serving_env(
        var,
        OO_MLFLOW__TRACKING_URI=f"http://127.0.0.1:{free_port()}",  # MLflow down
        OO_SERVING__SNAPSHOT_DIR=str(var / "snapshots"),
    )
    with applied_env(env) as settings:
        SnapshotStore(settings.snapshot_dir).publish(learnable_policy(), source="champion", champion_version="7")
        apply_feature_store(settings)
        seed_tasks(settings, "dora", 4)
        feast_db = settings.feast_dir / "online_store.db"
    for client in client_for(env):
        yield {"client": client, "env": env, "var": var, "feast_db": feast_db}


def post(world: dict[str, Any], path: str, body: dict[str, Any]) -> Any:
    return world["client"].post(path, json=body)


def test_mlflow_down_serves_the_last_local_snapshot(world: dict[str, Any]) -> None:
    ready = world["client"].get("/ops/ready").json()
    assert ready["model_source"] == "snapshot" and ready["champion_version"] == "7" and ready["policy"] == "softmax"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user_id": "dora", "candidates": candidates(MAX_CANDIDATES + 1)}, "at most 200"),
        ({"candidates": candidates(2)}, "Field required"),
        (
            {"user_id": "dora", "candidates": [{"candidate_id": "x", "content": "y", "kind": "?", "source": "s"}]},
            "kind",
        ),
        ({"user_id": "dora", "candidates": candidates(2) + candidates(1)}, "must be unique"),
        ({"user_id": "dora", "event_id": "not-a-uuid"}, "event_id"),
        ({"user_id": "dora", "decided_at": "2031-01-01T00:00:00Z"}, "OO_SERVING__SIMULATED_CLOCK"),
    ],
    ids=["over-200", "no-user", "bad-kind", "duplicate-ids", "bad-event-id", "time-without-simulated-clock"],
)
def test_malformed_rank_requests_get_400_with_a_message(
    world: dict[str, Any], body: dict[str, Any], message: str
) -> None:
    r = post(world, "/rank", body)
    assert r.status_code == 400 and message in r.text


def test_an_unknown_user_without_candidates_gets_an_empty_decision_with_a_reason(world: dict[str, Any]) -> None:
    r = post(world, "/rank", {"user_id": "nobody"})
    assert r.status_code == 200
    got = r.json()
    assert got["reward_action_id"] is None and got["ranking"] == [] and "no candidates" in got["reason"]


def test_an_unknown_user_with_candidates_gets_the_rule_baselines_decision(world: dict[str, Any]) -> None:
    got = post(world, "/rank", {"user_id": "nobody", "candidates": candidates(4)}).json()
    assert got["policy"] == "rule_based" and got["reward_action_id"] == "c3"  # the highest priority
    assert "unknown user" in got["reason"]


def test_excluded_candidates_get_probability_zero_and_are_never_chosen(world: dict[str, Any]) -> None:
    excluded = ["c0", "c1"]
    for _ in range(20):
        got = post(world, "/rank", {"user_id": "dora", "candidates": candidates(4), "excluded_ids": excluded}).json()
        assert got["reward_action_id"] not in excluded
        assert {c["id"]: c["probability"] for c in got["ranking"] if c["id"] in excluded} == {"c0": 0.0, "c1": 0.0}
        assert abs(sum(c["probability"] for c in got["ranking"]) - 1.0) < 1e-9
    every = [c["candidate_id"] for c in candidates(2)]
    empty = post(
        world,
        "/rank",
        {"user_id": "dora", "candidates": candidates(2), "excluded_ids": every, "include_todoist": False},
    )
    assert empty.json()["reward_action_id"] is None and empty.json()["reason"] == "every candidate is excluded"


def test_bad_rewards_get_4xx_with_a_message(world: dict[str, Any]) -> None:
    got = post(world, "/rank", {"user_id": "dora"}).json()
    base = {"event_id": got["event_id"], "user_id": "dora", "reaction": "done", "reaction_id": str(uuid.uuid4())}
    assert post(world, "/reward", {**base, "reaction": "love"}).status_code == 400
    assert post(world, "/reward", {**base, "event_id": str(uuid.uuid4())}).status_code == 404
    foreign = post(world, "/reward", {**base, "user_id": "eve"})
    assert foreign.status_code == 404 and "no decision" in foreign.text
    assert post(world, "/activate", {"event_id": str(uuid.uuid4()), "user_id": "dora"}).status_code == 404
    assert post(world, "/reward", base).json()["status"] == "accepted"  # nothing was lost on the way


def test_the_feature_store_down_serves_contract_defaults_counted_and_logged(world: dict[str, Any]) -> None:
    db: Path = world["feast_db"]
    before = world["client"].get("/ops/ready").json()["feature_store_fallbacks"]
    original = db.read_bytes() if db.exists() else None
    try:
        with open(db, "r+b" if original is not None else "wb") as handle:
            handle.write(b"not a sqlite database at all" * 10)
        got = post(world, "/rank", {"user_id": "dora"}).json()
    finally:
        if original is None:
            db.unlink()
        else:
            db.write_bytes(original)
    assert got["reward_action_id"] is not None
    assert world["client"].get("/ops/ready").json()["feature_store_fallbacks"] == before + 1
    logged = [
        line
        for line in EventLog(world["var"] / "events").read("decisions", "t", start=0)[0]
        if got["event_id"].encode() in line
    ]
    assert len(logged) == 1 and b'"context_known":0.0' in logged[0]


def test_apprentice_mode_serves_the_baseline_and_reports_the_learner(world: dict[str, Any]) -> None:
    """The engine behind the service, built as the service builds it (one ASGI app per process:
    BentoML registers its metrics once)."""
    from data_contracts.serving import RankRequest, RewardRequest
    from serving.service import build_engine

    var: Path = world["var"]
    env = {**world["env"], "OO_SERVING__MODE": "apprentice", "OO_SERVING__STATE_DIR": str(var / "apprentice")}
    with applied_env(env):
        engine, background = build_engine()
        try:
            for _ in range(6):
                got = asyncio.run(engine.rank(RankRequest(user_id="dora")))
                assert got.policy == "rule_based" and got.propensity == 1.0
                done = RewardRequest(event_id=got.event_id, user_id="dora", reaction="done", reaction_id=uuid.uuid4())
                assert engine.reward(done).status == "accepted"
            ready = engine.readiness()
        finally:
            background.stop()
    assert ready["mode"] == "apprentice" and ready["apprentice"]["decisions"] == 6
    assert ready["apprentice"]["baseline_reward"] == 1.0 and 0.0 <= ready["apprentice"]["learner_reward"] <= 1.0
    decisions = EventLog(var / "events").read("decisions", "t", start=0)[0]
    shadows = [line for line in decisions if b'"policy":"softmax"' in line and b'"policy":"rule_based"' in line]
    assert len(shadows) >= 6  # what the learner would have chosen is logged with each decision


def test_a_task_the_store_does_not_know_keeps_its_own_lake_features(world: dict[str, Any]) -> None:
    """dora's tasks are in the lake but not yet in the (empty) online store: each candidate still
    carries its own priority (1..4 as seeded), flagged ``task_known = 0``, rather than the default 1."""
    from data_contracts import Decision

    got = post(world, "/rank", {"user_id": "dora"}).json()
    line = next(
        line
        for line in EventLog(world["var"] / "events").read("decisions", "t", start=0)[0]
        if got["event_id"].encode() in line
    )
    features = {c.task_id: c.features for c in Decision.model_validate_json(line).candidates}
    assert {t: (f["task_known"], f["priority"]) for t, f in features.items()} == {
        f"dora-t{i}": (0.0, float(i % 4 + 1)) for i in range(4)
    }
    assert {f["content_length"] for f in features.values()} == {float(len("dora's task 0"))}


def test_a_policy_failing_numerically_falls_back_to_the_rule_baseline_counted(world: dict[str, Any]) -> None:
    """A served policy whose scorer went non-finite (a corrupted weight) never turns a rank into a
    500: the rule baseline decides that request, the decision is logged as the baseline's, and
    the fallback is counted (readiness; ``oo_policy_numeric_fallbacks_total`` by policy and error)."""
    from data_contracts.serving import RankRequest
    from serving.service import build_engine

    var: Path = world["var"]
    env = {**world["env"], "OO_SERVING__STATE_DIR": str(var / "numeric")}
    with applied_env(env):
        engine, background = build_engine()
        try:
            assert asyncio.run(engine.rank(RankRequest(user_id="dora"))).policy == "softmax"
            engine.loop.learner.policy.model._intercept = float("nan")  # type: ignore[union-attr,attr-defined]
            got = asyncio.run(engine.rank(RankRequest(user_id="dora", candidates=candidates(4))))
            ready = engine.readiness()
        finally:
            background.stop()
    assert got.policy == "rule_based" and got.propensity == 1.0 and got.reward_action_id is not None
    assert got.reason is not None and "NonFiniteScore" in got.reason
    assert got.reward_action_id in {"c3", "task:dora-t3"}  # the baseline's pick: a priority-4 candidate
    logged = [
        line
        for line in EventLog(var / "events").read("decisions", "t", start=0)[0]
        if str(got.event_id).encode() in line
    ]
    assert len(logged) == 1 and b'"policy":"rule_based"' in logged[0]
    assert ready["policy_numeric_fallbacks"] == 1


def test_a_rank_cancelled_during_its_durable_write_is_still_logged_and_indexed(world: dict[str, Any]) -> None:
    """The caller goes away (a client disconnect cancels the handler) while the decision is being
    fsynced: the write finishes and the decision is indexed, so a retry with the same event_id
    gets that decision rather than a second one with the same id."""
    import threading

    from data_contracts.serving import RankRequest
    from serving.group_commit import GroupCommit
    from serving.service import build_engine

    class HeldLog(EventLog):
        """The real event log, whose decision writes wait for a signal."""

        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.writing, self.release = threading.Event(), threading.Event()

        def append_lines(self, topic: str, data: bytes) -> None:
            if topic == "decisions":
                self.writing.set()
                self.release.wait(30)
            super().append_lines(topic, data)

    var: Path = world["var"]
    env = {**world["env"], "OO_SERVING__STATE_DIR": str(var / "cancelled")}
    event_id = uuid.uuid4()
    request = RankRequest(user_id="dora", event_id=event_id)
    with applied_env(env):
        engine, background = build_engine()
        held = HeldLog(var / "events")
        engine.journal = GroupCommit(held)

        async def cancel_mid_write() -> None:
            rank = asyncio.create_task(engine.rank(request))
            while not held.writing.is_set():
                await asyncio.sleep(0.01)
            rank.cancel()
            held.release.set()
            with pytest.raises(asyncio.CancelledError):
                await rank
            for _ in range(500):  # the shielded write and index go on without the caller
                if engine.index.get(event_id) is not None:
                    return
                await asyncio.sleep(0.01)

        try:
            asyncio.run(cancel_mid_write())
            again = asyncio.run(engine.rank(request))
        finally:
            background.stop()
    indexed = engine.index.get(event_id)
    assert indexed is not None and again.reward_action_id == indexed.chosen_id
    logged = [line for line in held.read("decisions", "t", start=0)[0] if str(event_id).encode() in line]
    assert len(logged) == 1  # the retry answered from the index; no second decision with this id


def test_forget_redacts_the_user_from_the_services_own_event_log(world: dict[str, Any]) -> None:
    """Erasure reaches serving's event log (the spool of a replica on the bus, or the shared log):
    the user's decisions, scores and rewards are gone; another user's lines stay."""
    got = post(world, "/rank", {"user_id": "erin", "candidates": candidates(3)}).json()
    chosen = got["reward_action_id"]
    assert chosen is not None
    r = post(
        world,
        "/reward",
        {"event_id": got["event_id"], "user_id": "erin", "reaction": "done", "reaction_id": str(uuid.uuid4())},
    )
    assert r.status_code == 200, r.text
    assert post(world, "/rank", {"user_id": "dora"}).status_code == 200
    with applied_env(world["env"]) as settings:
        folder = settings.paths.resolve("events")

    def holding(user: str) -> list[str]:
        return sorted(p.name for p in folder.rglob("*") if p.is_file() and f'"{user}"'.encode() in p.read_bytes())

    assert holding("erin"), "the user's events were logged"
    r = post(world, "/forget", {"user_id": "erin"})
    assert r.status_code == 200 and r.json()["removed"] >= 1
    assert holding("erin") == []
    assert holding("dora"), "another user's events stay"


def test_the_start_up_warm_up_decision_is_never_logged_nor_indexed(world: dict[str, Any]) -> None:
    """The service takes one decision through every step before it accepts requests (so the first
    user is not the one who waits for the cold feature store and lake); nothing of it is kept."""
    from serving.engine import WARM_UP_USER

    logged = b"".join(p.read_bytes() for p in (world["var"] / "events").glob("*.jsonl"))
    assert WARM_UP_USER.encode() not in logged
    assert post(world, "/user_state", {"user_id": WARM_UP_USER}).json()["state"] == {"decisions": []}


def test_the_control_group_gets_the_baseline_with_the_champion_as_its_shadow(world: dict[str, Any]) -> None:
    """``OO_SERVING__CONTROL_FRACTION``: that share of the decisions, drawn from the decision id,
    is the rule baseline's (with the champion's pick logged as its shadow); the rest the champion's."""
    from data_contracts.serving import RankRequest
    from serving.ranking import in_control
    from serving.service import build_engine

    var: Path = world["var"]
    env = {**world["env"], "OO_SERVING__CONTROL_FRACTION": "0.5", "OO_SERVING__STATE_DIR": str(var / "control")}
    with applied_env(env):
        engine, background = build_engine()
        try:
            got = [asyncio.run(engine.rank(RankRequest(user_id="dora"))) for _ in range(24)]
        finally:
            background.stop()
    served = {g.event_id: g.policy for g in got}
    assert {p for e, p in served.items() if in_control(e, 0.5)} == {"rule_based"}
    assert {p for e, p in served.items() if not in_control(e, 0.5)} == {"softmax"}
    assert 4 <= sum(p == "rule_based" for p in served.values()) <= 20
    from data_contracts import Decision

    logged = [
        Decision.model_validate_json(line) for line in EventLog(var / "events").read("decisions", "t", start=0)[0]
    ]
    control = [d for d in logged if d.decision_id in served and served[d.decision_id] == "rule_based"]
    assert control and all([s.policy for s in d.shadow] == ["softmax"] for d in control)
