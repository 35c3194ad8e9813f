"""Candidate generation: the Todoist pool (the lake's open tasks with their online features) and the
LLM pool (versioned prompt, tip contract, duplicates removed, a deadline with late tips cached),
fetched together; no failure of either pool fails the decision."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from data_contracts import CandidateKind, TodoistTask
from models.features.online import OnlineFeatures, features_dict, llm_tip_features
from oo.fakes.openai import FakeOpenAI, serve_in_thread
from oo.lake import Lake
from oo.settings import LLMSettings, Settings, get_settings
from serving.candidates import CandidateGenerator, CandidatePools

pytestmark = pytest.mark.filterwarnings(
    # LiteLLM's logging worker is bound to the loop of its first call; each test runs its own loop
    "ignore:coroutine 'Logging.async_success_handler' was never awaited:RuntimeWarning"
)

NOW = datetime(2026, 5, 4, 8, 30, tzinfo=UTC)
OPEN = {"t4": 4, "t2": 2, "t1": 1}  # task id -> priority
TITLES = {"t4": "Renew passport", "t2": "Call mum", "t1": "File the tax return"}
TIP_FEATURES = features_dict(llm_tip_features())


def todoist_task(task_id: str, priority: int = 1, **kw: Any) -> TodoistTask:
    fields: dict[str, Any] = {
        "user_id": "alice",
        "id": task_id,
        "project_id": "p1",
        "content": f"Task {task_id}",
        "priority": priority,
        "added_at": NOW - timedelta(days=3),
        "synced_at": NOW - timedelta(days=1),
    }
    return TodoistTask(**{**fields, **kw})


class World:
    """Alice's tasks in a lake, materialized into a real (SQLite) Feast online store."""

    def __init__(self, settings: Settings, lake: Lake, features: OnlineFeatures) -> None:
        self.settings, self.lake, self.features = settings, lake, features

    def generator(self, lake_check_s: float = 1.0, **llm: Any) -> CandidateGenerator:
        """A generator over this world; a deadline no slow test machine misses unless one is given."""
        serving = self.settings.serving.model_copy(update={"candidates_ttl_s": lake_check_s})
        llm_settings = LLMSettings(**{"deadline_ms": 60_000, **llm})
        settings = self.settings.model_copy(update={"llm": llm_settings, "serving": serving})
        return CandidateGenerator(settings, self.lake, features=self.features)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from models.features import tables as feature_tables
    from oo import feature_store

    tmp = tmp_path_factory.mktemp("candidates")
    env = {"OO_PATHS__VAR_DIR": str(tmp), "OO_FEAST__PROJECT": f"t_{uuid.uuid4().hex[:10]}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        lake = Lake(settings.lake_root)
        lake.write(
            "todoist_tasks",
            [
                *(todoist_task(t, p, content=TITLES[t]) for t, p in OPEN.items()),
                todoist_task("done", 4, checked=True),
                todoist_task("gone", 4, is_deleted=True),
            ],
        )
        staging = tmp / "staging"
        as_of = NOW - timedelta(hours=1)
        feature_tables.build(lake, staging, as_of, {}, previous=feature_store.tables_dir())
        feature_tables.validate(staging)
        feature_tables.publish(staging, feature_store.tables_dir())
        feature_store.apply()
        store = feature_store.get_store()
        store.materialize(start_date=as_of - timedelta(days=400), end_date=datetime.now(UTC))
        yield World(settings, lake, OnlineFeatures(store))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with serve_in_thread(fake) as base:
        yield fake, base


@pytest.fixture
def fake(fake_server: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    server = fake_server[0]
    server.mode, server.tips, server.delay_s = "ok", None, 2.0
    server.requests.clear()
    return server


@pytest.fixture
def http_config(fake_server: tuple[FakeOpenAI, str], tmp_path: Path) -> Path:
    """tip-generator over HTTP to the fake (no fallback); the offline embedder and judge."""
    path = tmp_path / "models.yaml"
    openai = {"model": "openai/gpt-fake", "api_base": fake_server[1], "api_key": "sk-fake"}
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {"model_name": "tip-generator", "litellm_params": openai},
                    {"model_name": "embedder", "litellm_params": {"model": "oo-offline/hash-embedder"}},
                    {"model_name": "judge", "litellm_params": {"model": "oo-offline/rule-judge"}},
                ]
            }
        )
    )
    return path


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())  # type: ignore[arg-type]


def gather(gen: CandidateGenerator, user: str = "alice", consent: bool = True, now: datetime = NOW) -> CandidatePools:
    return asyncio.run(gen.gather(user, llm_consent=consent, now=now, context={"done_rate_7d": 0.1}))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def tips(pools: CandidatePools) -> list[str]:
    return [c.content for c in pools.candidates if c.kind is CandidateKind.llm_tip]


def task_ids(pools: CandidatePools) -> list[str | None]:
    return [c.task_id for c in pools.candidates if c.kind is CandidateKind.todoist_task]


# -- both pools --------------------------------------------------------------------------------
def test_open_tasks_come_first_most_urgent_first_with_their_online_features_then_llm_tips(world: World) -> None:
    pools = gather(world.generator())
    assert task_ids(pools) == ["t4", "t2", "t1"]  # completed and deleted tasks are not candidates
    kinds = [c.kind for c in pools.candidates]
    assert kinds == [CandidateKind.todoist_task] * 3 + [CandidateKind.llm_tip] * 3
    by_task = {c.task_id: c for c in pools.candidates if c.task_id}
    assert {t: (c.features["task_known"], c.features["priority"]) for t, c in by_task.items()} == {
        t: (1.0, float(p)) for t, p in OPEN.items()
    }
    assert by_task["t4"].candidate_id == "task:t4" and by_task["t4"].content == "Renew passport"
    assert (pools.llm_status, pools.llm_model, pools.prompt_version) == (
        "ok",
        "oo-offline/template-tip-generator",
        "tips-v1",
    )
    for tip in pools.candidates[3:]:
        assert tip.features == TIP_FEATURES
        assert (tip.llm_model, tip.prompt_version, tip.source) == (pools.llm_model, "tips-v1", "tip-generator")
    assert len({c.candidate_id for c in pools.candidates}) == 6
    assert pools.context is not None and pools.context.hour_of_day == 8.5
    assert (pools.dropped_malformed, pools.dropped_duplicates) == (0, 0)


def test_without_consent_there_is_no_llm_pool(world: World, fake: FakeOpenAI, http_config: Path) -> None:
    pools = gather(world.generator(config_path=http_config), consent=False)
    assert (pools.llm_status, pools.llm_model, tips(pools)) == ("no_consent", None, [])
    assert task_ids(pools) == ["t4", "t2", "t1"]
    assert fake.requests["chat"] == 0


def test_a_disabled_llm_pool_builds_no_gateway(world: World) -> None:
    gen = world.generator(enabled=False)
    pools = gather(gen)
    assert gen.gateway is None
    assert (pools.llm_status, tips(pools), len(pools.candidates)) == ("disabled", [], 3)


def test_an_unknown_user_gets_whatever_candidates_exist(world: World) -> None:
    with_tips = gather(world.generator(), user="nobody")
    assert task_ids(with_tips) == [] and len(tips(with_tips)) == 3 and with_tips.llm_status == "ok"
    assert with_tips.context is not None and with_tips.context.context_known == 0.0
    nothing = gather(world.generator(), user="nobody", consent=False)
    assert (nothing.candidates, nothing.llm_status) == ([], "no_consent")


def test_generated_tips_are_reused_while_fresh_then_new_ones_do_not_repeat_them(world: World) -> None:
    gen = world.generator(cache_ttl_s=600)

    async def scenario() -> list[CandidatePools]:
        first = await gen.gather("alice", llm_consent=True, now=NOW)
        again = await gen.gather("alice", llm_consent=True, now=NOW + timedelta(minutes=5))
        later = await gen.gather("alice", llm_consent=True, now=NOW + timedelta(minutes=11))
        return [first, again, later]

    first, again, later = run(scenario)
    assert (first.llm_status, again.llm_status, later.llm_status) == ("ok", "cached", "ok")
    assert [c.candidate_id for c in again.candidates] == [c.candidate_id for c in first.candidates]
    assert again.llm_model == first.llm_model
    assert len(tips(later)) == 3 and not set(tips(later)) & set(tips(first))


# -- faults of the LLM pool, over HTTP through LiteLLM ------------------------------------------
def test_malformed_json_is_dropped_and_counted_and_tasks_are_served(
    world: World, fake: FakeOpenAI, http_config: Path
) -> None:
    before = metric("oo_llm_tips_dropped_total", reason="malformed")
    fake.mode = "malformed"  # three items, none a valid tip
    pools = gather(world.generator(config_path=http_config))
    assert (pools.llm_status, pools.dropped_malformed, tips(pools)) == ("malformed", 3, [])
    assert task_ids(pools) == ["t4", "t2", "t1"]
    assert metric("oo_llm_tips_dropped_total", reason="malformed") - before == 3


def test_garbage_is_malformed_and_a_partly_valid_answer_serves_its_valid_tips(
    world: World, fake: FakeOpenAI, http_config: Path
) -> None:
    fake.mode = "garbage"
    garbage = gather(world.generator(config_path=http_config))
    assert (garbage.llm_status, garbage.dropped_malformed, tips(garbage)) == ("malformed", 1, [])
    fake.mode = "ok"
    fake.tips = [
        {"content": "Water the plants", "minutes": 2, "rationale": ""},
        {"content": "x", "minutes": 2, "rationale": ""},  # too short
        {"content": "Call the dentist", "minutes": 500, "rationale": ""},  # too long a step
        {"content": "Sort the mail", "minutes": 3},  # no rationale
    ]
    partly = gather(world.generator(config_path=http_config))
    assert (partly.llm_status, partly.dropped_malformed, tips(partly)) == ("ok", 3, ["Water the plants"])
    assert partly.llm_model == "openai/gpt-fake"


def test_a_failing_llm_serves_the_todoist_pool_and_a_fallback_alias_serves_tips(
    world: World, fake: FakeOpenAI, http_config: Path, tmp_path: Path
) -> None:
    fake.mode = "error"
    failed = gather(world.generator(config_path=http_config, num_retries=0))
    assert (failed.llm_status, tips(failed), task_ids(failed)) == ("error", [], ["t4", "t2", "t1"])
    config = yaml.safe_load(http_config.read_text())
    config["model_list"].append(
        {"model_name": "offline", "litellm_params": {"model": "oo-offline/template-tip-generator"}}
    )
    config["router_settings"] = {"fallbacks": [{"tip-generator": ["offline"]}]}
    with_fallback = tmp_path / "fallback.yaml"
    with_fallback.write_text(yaml.safe_dump(config))
    rescued = gather(world.generator(config_path=with_fallback, num_retries=0))
    assert (rescued.llm_status, rescued.llm_model, len(tips(rescued))) == (
        "ok",
        "oo-offline/template-tip-generator",
        3,
    )


def test_a_missed_deadline_serves_tasks_now_and_the_late_tips_next_time(
    world: World, fake: FakeOpenAI, http_config: Path
) -> None:
    fake.mode, fake.delay_s = "slow", 0.5
    gen = world.generator(config_path=http_config, deadline_ms=50, timeout_s=10)

    async def scenario() -> tuple[CandidatePools, CandidatePools, CandidatePools]:
        late = await gen.gather("alice", llm_consent=True, now=NOW)
        await gen.drain(timeout_s=10)
        fake.mode = "error"  # the next answer comes from the cache, not the server
        cached = await gen.gather("alice", llm_consent=True, now=NOW + timedelta(seconds=30))
        other = await gen.gather("nobody", llm_consent=True, now=NOW + timedelta(seconds=30))
        await gen.drain(timeout_s=10)
        return late, cached, other

    late, cached, other = run(scenario)
    assert (late.llm_status, tips(late), task_ids(late)) == ("timeout", [], ["t4", "t2", "t1"])
    assert cached.llm_status == "cached" and len(tips(cached)) == 3
    assert cached.llm_model == "openai/gpt-fake" and cached.prompt_version == "tips-v1"
    assert task_ids(cached) == ["t4", "t2", "t1"]
    # cached per user: another user's request goes to the (now failing) server
    assert other.llm_status in ("error", "timeout") and tips(other) == []


def test_tips_that_repeat_a_recent_tip_are_removed(world: World, fake: FakeOpenAI, http_config: Path) -> None:
    gen = world.generator(config_path=http_config, cache_ttl_s=60)
    answers = [
        ["Take a 5-minute walk", "Water the plants"],
        ["take a 5 minute walk!", "Call the dentist", "Call the dentist."],  # one old, one twice
    ]

    async def scenario() -> list[CandidatePools]:
        out = []
        for i, contents in enumerate(answers):
            fake.tips = [{"content": c, "minutes": 5, "rationale": ""} for c in contents]
            out.append(await gen.gather("alice", llm_consent=True, now=NOW + timedelta(minutes=2 * i)))
        return out

    before = metric("oo_llm_tips_dropped_total", reason="duplicate")
    first, second = run(scenario)
    assert tips(first) == ["Take a 5-minute walk", "Water the plants"]
    assert (second.llm_status, tips(second), second.dropped_duplicates) == ("ok", ["Call the dentist"], 2)
    assert metric("oo_llm_tips_dropped_total", reason="duplicate") - before == 2


def test_a_repeat_from_outside_the_recent_window_is_allowed(world: World, fake: FakeOpenAI, http_config: Path) -> None:
    gen = world.generator(config_path=http_config, cache_ttl_s=60, recent_window_s=3600)
    fake.tips = [{"content": "Take a 5-minute walk", "minutes": 5, "rationale": ""}]

    async def scenario() -> list[CandidatePools]:
        return [await gen.gather("alice", llm_consent=True, now=NOW + timedelta(hours=h)) for h in (0, 0.5, 2)]

    first, soon, later = run(scenario)
    assert (tips(first), tips(soon), tips(later)) == (["Take a 5-minute walk"], [], ["Take a 5-minute walk"])
    assert soon.dropped_duplicates == 1


# -- faults of the Todoist pool ----------------------------------------------------------------
def test_an_unreadable_lake_or_feature_store_never_fails_the_decision(world: World, tmp_path: Path) -> None:
    broken = Lake(tmp_path / "lake")
    part = broken.path("todoist_tasks") / "dt=2026-05-03"
    part.mkdir(parents=True)
    (part / "broken.parquet").write_bytes(b"not parquet")
    before = metric("oo_candidate_pool_failures_total", source="lake")
    settings = world.generator().settings
    pools = gather(CandidateGenerator(settings, broken, features=world.features))
    assert (task_ids(pools), len(tips(pools)), pools.llm_status) == ([], 3, "ok")
    assert metric("oo_candidate_pool_failures_total", source="lake") - before == 1

    # a store never applied (a fresh project): tasks are served with the contract defaults
    unapplied = settings.model_copy(update={"feast": settings.feast.model_copy(update={"project": "none"})})
    before = metric("oo_candidate_pool_failures_total", source="features")
    pools = gather(CandidateGenerator(unapplied, world.lake))
    assert task_ids(pools) == ["t4", "t2", "t1"] and pools.context is None
    assert {c.features["task_known"] for c in pools.candidates if c.task_id} == {0.0}
    assert metric("oo_candidate_pool_failures_total", source="features") - before == 1


def test_the_llm_call_overlaps_the_feature_store_read(world: World, fake: FakeOpenAI, http_config: Path) -> None:
    # both pools start from one read of the user's open tasks in the lake (the prompt names them);
    # then the tasks' features are read while the LLM request is in flight at the fake
    fake.mode, fake.delay_s = "slow", 0.3
    gen = world.generator(config_path=http_config, deadline_ms=5000)
    seen: list[int] = []
    original = gen._task_features

    def observing(*args: Any) -> Any:
        deadline = time.monotonic() + 5
        while fake.requests["chat"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(fake.requests["chat"])
        return original(*args)

    gen._task_features = observing  # type: ignore[method-assign]
    pools = gather(gen)
    assert seen == [1] and pools.llm_status == "ok" and task_ids(pools) == ["t4", "t2", "t1"]


def test_tasks_are_read_again_once_the_lake_changed(world: World) -> None:
    """The lake's task files are looked at again every ``candidates_ttl_s``: a sync in between
    reaches the candidates then; the tasks are read again only when the files changed."""
    check_s = 0.5
    gen = world.generator(lake_check_s=check_s, enabled=False)
    reads: list[str] = []
    original = gen._open_tasks

    def counting(user_id: str) -> list[TodoistTask] | None:
        reads.append(user_id)
        return original(user_id)

    gen._open_tasks = counting  # type: ignore[method-assign]
    bob = {"user_id": "bob", "synced_at": NOW - timedelta(hours=2)}
    world.lake.write("todoist_tasks", [todoist_task("b1", 2, content="Book the train", **bob)])
    assert task_ids(gather(gen, user="bob")) == ["b1"]
    time.sleep(check_s)
    assert task_ids(gather(gen, user="bob")) == ["b1"] and reads == ["bob"]  # the lake did not change
    world.lake.write(
        "todoist_tasks",
        [
            todoist_task("b2", 4, content="Pay the rent", **bob),
            todoist_task("b1", 2, content="Book the train", checked=True, **{**bob, "synced_at": NOW}),
        ],
    )
    synced = time.monotonic()
    stale = task_ids(gather(gen, user="bob"))
    assert stale == ["b1"] or time.monotonic() - synced >= check_s  # not looked at again yet
    time.sleep(check_s)
    assert task_ids(gather(gen, user="bob")) == ["b2"] and reads == ["bob", "bob"]
