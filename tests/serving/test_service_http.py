"""The real service (``bentoml serve``, embedded learner) over HTTP: rank and reward round trip,
what reaches the lake, the reward protocol, deferred decisions, and a moved champion alias.

One server for the module; the reward window is 8 s so that windows close within the test.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from data_contracts import RewardEvent
from oo.events_ingest import EventLog, ingest
from oo.lake import Lake
from tests.serving.conftest import (
    Service,
    applied_env,
    apply_feature_store,
    candidates,
    learnable_policy,
    register_champion,
    seed_tasks,
    serving_env,
    wait_for,
)

pytestmark = pytest.mark.slow

WINDOW_S = 8.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("serving-http")
    env = serving_env(
        var,
        OO_REWARD__WINDOW_HOURS=str(WINDOW_S / 3600),
        OO_SERVING__CHAMPION_POLL_S="1",
    )
    with applied_env(env) as settings:
        version = register_champion(settings, learnable_policy())
        apply_feature_store(settings)
        seed_tasks(settings, "alice", 5)
        seed_tasks(settings, "bob", 3)
        service = Service(env, var / "serve.log")
        try:
            yield {"service": service, "settings": settings, "var": var, "env": env, "champion": version}
        finally:
            service.stop()


def learner(service: Service) -> dict[str, Any]:
    stats: dict[str, Any] = service.ready()["learner_stats"]
    return stats


def rank(service: Service, **body: Any) -> dict[str, Any]:
    r = service.post("/rank", {"user_id": "alice", **body})
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


def reward(service: Service, event_id: str, reaction: str = "done", user: str = "alice", **extra: Any) -> Any:
    body = {"event_id": event_id, "user_id": user, "reaction": reaction, "reaction_id": str(uuid.uuid4()), **extra}
    return service.post("/reward", body)


def test_ready_says_the_champion_serves(world: dict[str, Any]) -> None:
    ready = world["service"].ready()
    assert ready["model_source"] == "champion" and ready["champion_version"] == world["champion"]
    assert ready["policy_version"] == f"tip-policy/{world['champion']}" and ready["learner"] == "embedded"


def test_rank_and_reward_round_trip_is_learned(world: dict[str, Any]) -> None:
    service = world["service"]
    before = learner(service)["learned"]
    got = rank(service, candidates=candidates(3, llm=1))
    probabilities = [c["probability"] for c in got["ranking"]]
    assert len(got["ranking"]) == 5 + 4  # alice's 5 open tasks + the 4 given
    assert abs(sum(probabilities) - 1.0) < 1e-9 and got["propensity"] > 0
    assert got["policy"] == "softmax" and got["policy_version"] == f"tip-policy/{world['champion']}"
    r = reward(service, got["event_id"])
    assert r.status_code == 200 and r.json() == {"event_id": got["event_id"], "reward": 1.0, "status": "accepted"}
    assert learner(service)["learned"] == before + 1


def test_decision_and_tip_scores_reach_the_lake(world: dict[str, Any]) -> None:
    service, settings = world["service"], world["settings"]
    got = rank(service, candidates=candidates(2, prefix="lake", llm=1))
    lake = Lake(settings.lake_root)
    ingest(lake, EventLog(world["var"] / "events"))
    con = lake.connect()
    decision = con.sql(
        f"SELECT propensity, policy, policy_version, chosen_id FROM read_parquet('{lake.glob('decisions')}') "
        f"WHERE decision_id = '{got['event_id']}'"
    ).fetchall()
    assert decision == [(got["propensity"], "softmax", f"tip-policy/{world['champion']}", got["reward_action_id"])]
    scores = con.sql(
        f"SELECT policy, policy_version, candidate_id, kind, probability, prompt_version, llm_model "
        f"FROM read_parquet('{lake.glob('tip_scores')}') WHERE decision_id = '{got['event_id']}'"
    ).fetchall()
    n_candidates = len(got["ranking"])
    assert len(scores) == 2 * n_candidates  # the champion's and the rule baseline's (shadow) rows
    assert {(p, v) for p, v, *_ in scores} == {
        ("softmax", f"tip-policy/{world['champion']}"),
        ("rule_based", "rule-baseline/1"),
    }
    llm_rows = [s for s in scores if s[3] == "llm_tip"]
    assert len(llm_rows) == 2 and all(s[5:] == ("tips-v1", "local/template-tip-generator") for s in llm_rows)
    served = {s[2]: s[4] for s in scores if s[0] == "softmax"}
    assert served == {c["id"]: c["probability"] for c in got["ranking"]}


def test_the_same_event_id_and_request_choose_the_same_candidate(world: dict[str, Any]) -> None:
    service = world["service"]
    event_id = str(uuid.uuid4())
    first = rank(service, event_id=event_id, candidates=candidates(4, prefix="same"))
    again = rank(service, event_id=event_id, candidates=candidates(4, prefix="same"))
    assert again == first
    clash = service.post("/rank", {"user_id": "alice", "event_id": event_id, "candidates": candidates(2)})
    assert clash.status_code == 409 and "already used" in clash.text


def test_a_reward_sent_twice_counts_once(world: dict[str, Any]) -> None:
    service = world["service"]
    got = rank(service)
    before = learner(service)
    assert reward(service, got["event_id"]).json()["status"] == "accepted"
    second = reward(service, got["event_id"], reaction="dismiss")
    assert second.status_code == 200 and second.json() == {
        "event_id": got["event_id"],
        "reward": 1.0,
        "status": "duplicate",
    }
    after = learner(service)
    assert after["learned"] == before["learned"] + 1


def test_unknown_and_foreign_decisions_are_refused(world: dict[str, Any]) -> None:
    service = world["service"]
    got = rank(service)
    unknown = reward(service, str(uuid.uuid4()))
    foreign = reward(service, got["event_id"], user="bob")
    assert unknown.status_code == 404 and "no decision" in unknown.text
    assert foreign.status_code == 404 and "no decision" in foreign.text


def test_a_reward_before_its_decision_is_learned_once_the_decision_arrives(world: dict[str, Any]) -> None:
    """Another replica's reward reaches the log before this replica's decision (the bus keeps no order)."""
    service = world["service"]
    event_id = uuid.uuid4()
    early = RewardEvent(
        event_id=uuid.uuid4(),
        decision_id=event_id,
        user_id="alice",
        reaction="done",
        reward=1.0,
        occurred_at=datetime.now(UTC),
    )
    before = learner(service)
    EventLog(world["var"] / "events").append("rewards", early)
    wait_for(lambda: learner(service)["waiting"] == before["waiting"] + 1, 30, "the early reward was not held")
    assert learner(service)["learned"] == before["learned"]
    rank(service, event_id=str(event_id))
    # the learner reads the decision on its own clock (its background poll), not before the answer
    after = wait_for(
        lambda: (s := learner(service))["learned"] > before["learned"] and s, 30, "the held reward was not learned"
    )
    assert after["learned"] == before["learned"] + 1 and after["waited"] == before["waited"] + 1


def test_a_decision_without_reward_is_learned_with_the_default_at_window_close(world: dict[str, Any]) -> None:
    service = world["service"]
    before = learner(service)
    rank(service)
    after = wait_for(
        lambda: (s := learner(service))["defaults"] > before["defaults"] and s,
        WINDOW_S + 30,
        "no default reward learned after the window closed",
    )
    assert after["learned"] >= before["learned"]


def test_a_deferred_decision_is_learned_only_once_activated(world: dict[str, Any]) -> None:
    service = world["service"]
    before = learner(service)
    never = rank(service, defer_activation=True)
    seen = rank(service, defer_activation=True)
    assert never["defer_activation"] and reward(service, never["event_id"]).json()["status"] == "accepted"
    assert reward(service, seen["event_id"]).json()["status"] == "accepted"
    assert learner(service)["learned"] == before["learned"]  # held until activation
    activated = service.post("/activate", {"event_id": seen["event_id"], "user_id": "alice"})
    assert activated.status_code == 200 and activated.json()["status"] == "activated"
    assert learner(service)["learned"] == before["learned"] + 1
    after = wait_for(
        lambda: (s := learner(service))["skipped_deferred"] > before["skipped_deferred"] and s,
        WINDOW_S + 30,
        "the never-activated decision's window did not close",
    )
    assert after["learned"] == before["learned"] + 1  # the never-activated one taught nothing


def test_a_moved_champion_alias_is_picked_up_without_a_restart(world: dict[str, Any]) -> None:
    service, settings = world["service"], world["settings"]
    with applied_env(world["env"]):
        new = register_champion(settings, learnable_policy(seed=1))
    ready = wait_for(
        lambda: (r := service.ready())["champion_version"] == new and r, 60, "the new champion was not picked up"
    )
    assert ready["learner_stats"]["champion_reloads"] == 1 and ready["policy_version"] == f"tip-policy/{new}"
    decided = rank(service)
    assert decided["policy_version"] == f"tip-policy/{new}"
    assert reward(service, decided["event_id"]).json()["status"] == "accepted"  # counted in the metrics below
    metrics = service.http.get("/metrics").text
    assert re.search(r"^oo_champion_reloads_total(\{[^}]*\})? 1\.0$", metrics, re.M), metrics[-3000:]
    served = re.search(r"^oo_decision_latency_seconds_count(?:\{[^}]*\})? ([0-9.]+)$", metrics, re.M)
    logged = re.search(r"^oo_decision_log_wait_seconds_count(?:\{[^}]*\})? ([0-9.]+)$", metrics, re.M)
    # every served decision's wait for the event log (and the index) is observed, once
    assert served and logged and float(served[1]) >= 1 and float(logged[1]) == float(served[1]), metrics[-3000:]
    assert re.search(r'^oo_rewards_total\{[^}]*reaction="done"[^}]*status="accepted"[^}]*\} [1-9]', metrics, re.M)
    assert "learner: @champion moved" in Path(service.log_path).read_text()
    assert json.loads(json.dumps(ready))  # readiness is plain JSON


def test_the_app_apis_client_speaks_to_the_real_service_and_forget_erases_the_user(world: dict[str, Any]) -> None:
    """oo.serving_client (what the app API calls) against `bentoml serve`: the wire shape is right,
    refusals are 4xx, and a user's export lists their decisions until `forget` erases them."""
    from data_contracts.serving import RankRequest, RewardRequest
    from oo.serving_client import ServingClient, ServingRefused

    client = ServingClient(world["service"].url, timeout_s=30)
    try:
        decision = client.rank(RankRequest(user_id="carol", candidates=candidates(2), include_todoist=False))
        assert decision.user_id == "carol" and decision.reward_action_id is not None
        event = RewardRequest(event_id=decision.event_id, user_id="carol", reaction="done", reaction_id=uuid.uuid4())
        assert client.reward(event).status == "accepted"
        assert client.reward(event).status == "duplicate"
        with pytest.raises(ServingRefused) as refused:
            client.reward(event.model_copy(update={"user_id": "mallory", "reaction_id": uuid.uuid4()}))
        assert 400 <= refused.value.status < 500

        state = client.user_state("carol").state
        assert [d["decision_id"] for d in state["decisions"]] == [str(decision.event_id)]
        assert state["decisions"][0]["reaction"] == "done"
        assert client.forget("carol").removed == 1
        assert client.user_state("carol").state == {"decisions": []}
        with pytest.raises(ServingRefused):  # the decision is gone: a late reward for it is refused
            client.reward(event.model_copy(update={"reaction_id": uuid.uuid4()}))
    finally:
        client.close()
