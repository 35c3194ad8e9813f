"""The feature store end to end, on SQLite and on Redis: point-in-time training rows that never
leak the future, pushed reactions visible at once and later confirmed by the batch path, and
documented defaults for users and tasks the store never saw."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from data_contracts import CandidateFeatures, CandidateKind, UserContext
from oo.lake import Lake
from tests.models.features.conftest import feature_env
from tests.models.features.synthetic import T0, decision, reaction, reward, task

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.integration)]
AS_OF = T0 + timedelta(days=2)


def run_batch(lake: Lake, as_of: datetime, tmp) -> None:  # type: ignore[no-untyped-def]
    """What the features DAG does: build, validate, publish, apply, materialize."""
    from models.features import tables as feature_tables
    from oo import feature_store

    staging = tmp / f"staging-{time.monotonic_ns()}"
    feature_tables.build(lake, staging, as_of, {"ua": "Europe/Berlin"}, previous=feature_store.tables_dir())
    feature_tables.validate(staging)
    feature_tables.publish(staging, feature_store.tables_dir())
    feature_store.apply()
    feature_store.get_store().materialize_incremental(end_date=datetime.now(UTC))


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One user ``ua`` whose task ``ta`` changed priority before (2 -> 3) and after (3 -> 4) a
    decision D1 at T0, with reactions before and after it, materialized on one backend."""
    tmp = tmp_path_factory.mktemp(request.param)
    with feature_env(tmp, request.param) as settings:
        lake = Lake(settings.lake_root)
        lake.write(
            "todoist_tasks",
            [
                task("ua", "ta", T0 - timedelta(days=2), priority=2),
                task("ua", "ta", T0 - timedelta(hours=1), priority=3),  # changed before D1
                task("ua", "ta", T0 + timedelta(hours=1), priority=4),  # changed after D1
                task("ua", "tb", T0 - timedelta(days=2), labels=["x"]),
                task("ua", "tb", T0 + timedelta(minutes=5), labels=["x", "y", "z"]),
            ],
        )
        d0 = decision(1, "ua", T0 - timedelta(hours=30), ["ta", "tb"])
        d00 = decision(2, "ua", T0 - timedelta(hours=4), ["ta", "tb"], chosen=1)
        d1 = decision(3, "ua", T0, ["ta", "tb"], features={"reactions_7d": 2.0, "reactions_1d": 5.0})
        d2 = decision(4, "ua", T0 + timedelta(hours=2), ["ta", "tb"])
        lake.write("decisions", [d0, d00, d1, d2])
        lake.write(
            "reactions",
            [
                reaction(1, d0, "done", d0.decided_at + timedelta(hours=4)),  # T0-26h: in 7d, not in 1d
                reaction(2, d00, "dismiss", d00.decided_at + timedelta(hours=2)),  # T0-2h
                reaction(3, d00, "dismiss", d00.decided_at + timedelta(hours=2, seconds=5)),  # sent twice
                reaction(4, d1, "done", T0 + timedelta(minutes=30)),  # after D1
            ],
        )
        lake.write(
            "rewards",
            [
                reward(1, d1, "done", T0 + timedelta(minutes=30), 1.0),
                reward(2, d1, "done", T0 + timedelta(minutes=31), 1.0),  # duplicate: counts once
                reward(3, d2, "done", d2.decided_at + timedelta(days=1, hours=1), 1.0),  # outside the window
                reward(4, d0, "snooze", d0.decided_at + timedelta(hours=1), 0.2, late=True),  # flagged late
            ],
        )
        run_batch(lake, AS_OF, tmp)
        from models.features.online import OnlineFeatures
        from oo import feature_store

        store = feature_store.get_store()
        yield {"settings": settings, "lake": lake, "tmp": tmp, "online": OnlineFeatures(store)}
        store.teardown()  # drops this project's online rows (Redis keys too)


@pytest.fixture(scope="module")
def examples(world):  # type: ignore[no-untyped-def]
    from models.features.datasets import build_training_examples

    rows = build_training_examples(
        world["lake"], world["online"].store, AS_OF, world["settings"].reward, {"ua": "Europe/Berlin"}
    )
    return {str(e.decision_id)[-1]: e for e in rows}


def test_no_leakage_changes_after_a_decision_stay_out_changes_before_are_in(examples) -> None:  # type: ignore[no-untyped-def]
    d1 = examples["3"]
    ta = next(c for c in d1.candidates if c.task_id == "ta").features
    tb = next(c for c in d1.candidates if c.task_id == "tb").features
    assert ta["priority"] == 3.0  # the change 1 h before D1 is in, the change 1 h after is not
    assert tb["label_count"] == 1.0  # relabelled 5 minutes after D1
    assert ta["task_known"] == 1.0 and ta["age_days"] == pytest.approx(3.0)
    assert ta["times_shown"] == 1.0  # shown by d0, not by D1 itself nor by d2 afterwards
    assert tb["times_shown"] == 1.0  # shown by d00
    ctx = d1.context
    assert ctx["context_known"] == 1.0
    assert ctx["reactions_7d"] == 2.0  # done at T0-26h and the dismiss at T0-2h (sent twice: once)
    assert ctx["reactions_1d"] == 1.0  # the done 30 min after D1 is not in
    assert ctx["dismiss_rate_1d"] == 1.0 and ctx["done_rate_7d"] == 0.5
    assert ctx["hours_since_last_reaction"] == pytest.approx(2.0)
    assert ctx["hour_of_day"] == 10.0  # T0 is 08:00 UTC, 10:00 in Berlin
    # the later decision d2 does see the changes made before it
    d2 = examples["4"]
    assert next(c for c in d2.candidates if c.task_id == "ta").features["priority"] == 4.0
    assert d2.context["reactions_1d"] == 2.0


def test_rewards_join_window_default_late_and_duplicates(examples, world) -> None:  # type: ignore[no-untyped-def]
    default = world["settings"].reward.default_reward
    assert examples["3"].rewarded and examples["3"].reward == 1.0 and examples["3"].reaction == "done"
    assert not examples["4"].rewarded and examples["4"].reward == default  # reward came after the window
    assert not examples["1"].rewarded and examples["1"].reaction is None  # its only reward was late
    assert world["lake"].read("training_examples").num_rows == 4
    from models.features.datasets import build_training_examples

    again = build_training_examples(world["lake"], world["online"].store, AS_OF, world["settings"].reward)
    assert again == []  # nothing to rebuild


def test_skew_flags_logged_features_that_differ_from_point_in_time_values(world, examples) -> None:  # type: ignore[no-untyped-def]
    from data_contracts import Decision, FeatureSkew
    from data_contracts.arrow import from_table
    from models.features.datasets import historical_features
    from models.features.skew import aggregate, compare

    decisions = [d for d in from_table(Decision, world["lake"].read("decisions")) if d.features]
    offline = historical_features(world["online"].store, decisions, {"ua": "Europe/Berlin"})
    rates = compare(decisions, offline).rates
    assert rates == {"reactions_1d": 1.0, "reactions_7d": 0.0}  # D1 logged reactions_1d=5, truth 1
    # building the training examples recorded the same skew for training to log
    assert aggregate(from_table(FeatureSkew, world["lake"].read("feature_skew"))) == rates


def test_unknown_users_and_tasks_get_defaults_flagged_as_defaults(world) -> None:  # type: ignore[no-untyped-def]
    online = world["online"]
    ctx, cands = online.get("nobody", ["ta", "no-such-task"], tz="Asia/Tokyo", now=T0)
    assert ctx.context_known == 0.0
    assert ctx.model_dump(exclude={"hour_of_day", "weekday"}) == UserContext().model_dump(
        exclude={"hour_of_day", "weekday"}
    )
    assert ctx.hour_of_day == 17.0  # request-time features are real even for an unknown user
    assert cands[0].task_known == 1.0 and cands[0].priority == 4.0
    assert cands[1] == CandidateFeatures()  # every default, task_known 0
    ctx_known, none = online.get("ua", [], now=T0)
    assert ctx_known.context_known == 1.0 and none == []


def test_the_feature_service_is_exactly_the_policy_contract(world) -> None:  # type: ignore[no-untyped-def]
    from models.features.online import COMPUTED, SERVICE

    service = world["online"].store.get_feature_service(SERVICE)
    served = [f.name for p in service.feature_view_projections for f in p.features]
    assert len(served) == len(set(served)), "a feature name is served twice"
    wanted = (set(UserContext.model_fields) | set(CandidateFeatures.model_fields)) - COMPUTED
    assert set(served) == wanted
    assert COMPUTED == {"schema_version", "context_known", "task_known", "is_llm_tip"}


def test_a_pushed_reaction_is_visible_at_once_and_the_batch_path_agrees(world) -> None:  # type: ignore[no-untyped-def]
    from models.features.online import wait_visible

    online, lake = world["online"], world["lake"]
    now = datetime.now(UTC).replace(microsecond=0)
    d = decision(50, "ub", now - timedelta(minutes=2), ["tz1"])
    event = reaction(50, d, "snooze", now - timedelta(minutes=1))
    assert online.get("ub", [])[0].context_known == 0.0
    pushed = online.push_reaction(event, CandidateKind.todoist_task, tz="UTC")
    assert wait_visible(online, "ub", "reactions_1d", 1.0, timeout_s=1.0) < 1.0
    ctx, _ = online.get("ub", [])
    assert ctx.context_known == 1.0 and ctx.snooze_rate_1d == 1.0 and ctx.hours_since_last_reaction < 0.1
    # later, the event reaches the lake and the batch path recomputes the same counters
    lake.write("decisions", [d])
    lake.write("reactions", [event])
    run_batch(lake, datetime.now(UTC), world["tmp"])
    assert online.counters("ub") == pytest.approx(pushed)


def test_online_reads_equal_feasts_own_on_demand_transformation(world) -> None:  # type: ignore[no-untyped-def]
    from models.features.online import candidate_from_row, context_from_row

    online, now, tz = world["online"], AS_OF + timedelta(hours=1), "Europe/Berlin"
    ids = ["ta", "tb", "never-seen"]
    ctx, candidates = online.get("ua", ids, tz=tz, now=now)
    request = {"now_ts": now.timestamp(), "tz": tz}
    # Feast applying the on-demand views itself, over the whole feature service
    user = online.store.get_online_features(online.refs["user"], [{"user_id": "ua", **request}]).to_dict()
    tasks = online.store.get_online_features(online.refs["task"], [{"task_id": t, **request} for t in ids]).to_dict()
    assert ctx == context_from_row({k: v[0] for k, v in user.items()})
    assert candidates == [candidate_from_row({k: v[i] for k, v in tasks.items()}) for i in range(len(ids))]
    assert candidates[0].task_known == 1.0 and candidates[2].task_known == 0.0


def test_reused_task_features_equal_a_fresh_read_and_never_hide_a_push(world) -> None:  # type: ignore[no-untyped-def]
    """Within ``task_ttl_s`` a task's stored features come from memory (only the user row is
    read), the request-time ones are still computed for each request, a pushed reaction shows at
    once, and after the TTL the tasks are read again."""
    from models.features.online import OnlineFeatures, wait_visible

    fresh = world["online"]
    cached = OnlineFeatures(fresh.store, task_ttl_s=60.0)
    reads: list[list[str]] = []
    stored = cached._stored

    def counting(plan, rows):  # type: ignore[no-untyped-def]
        reads.append([next(iter(r.values())) for r in rows])
        return stored(plan, rows)

    cached._stored = counting  # type: ignore[method-assign]
    ids, tz = ["ta", "tb", "never-seen"], "Europe/Berlin"
    for hours in (1, 30, 400):  # the cached stored values, each request's own on-demand ones
        now = AS_OF + timedelta(hours=hours)
        assert cached.get("ua", ids, tz=tz, now=now) == fresh.get("ua", ids, tz=tz, now=now)
    assert reads == [["ua"], ids, ["ua"], ["ua"]]

    now = datetime.now(UTC).replace(microsecond=0)
    assert cached.get("uc", ids)[0].context_known == 0.0
    pushed = decision(60, "uc", now - timedelta(minutes=2), ["ta"])
    fresh.push_reaction(reaction(60, pushed, "done", now - timedelta(minutes=1)), CandidateKind.todoist_task)
    wait_visible(fresh, "uc", "reactions_1d", 1.0, timeout_s=1.0)
    assert cached.get("uc", ids)[0].done_rate_1d == 1.0  # the user's row is never reused

    short = OnlineFeatures(fresh.store, task_ttl_s=0.2)
    short._stored = counting  # type: ignore[method-assign]
    reads.clear()
    short.get("ua", ["ta"])
    short.get("ua", ["ta"])
    time.sleep(0.3)
    short.get("ua", ["ta"])
    assert reads == [["ua"], ["ta"], ["ua"], ["ua"], ["ta"]]
