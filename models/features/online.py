"""Features for serving: one user's context and each candidate's features from the online store,
and fresh reaction counters pushed the moment a reaction arrives.

Everything the policy reads is the Feast feature service ``tip_policy_v1``: its stored features
read with the online store's own ``online_read``, one read per feature view (the user's row, then
the tasks'), and its on-demand views applied with their own ``transform_dict``; the same values
``FeatureStore.get_online_features`` gives, without its generic per-call work (tested against it).
Pushed counters are written with the store's ``online_write_batch``. A user or task the store has never
seen gets the documented contract defaults with ``context_known`` / ``task_known`` at ``0.0``:
the policy can tell a default from a real zero. LLM tips are not in the store: they get
:func:`llm_tip_features`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from data_contracts import CandidateFeatures, CandidateKind, ReactionEvent, TodoistTask, UserContext
from data_contracts.feature_tables import KINDS, REACTIONS, feature_columns
from data_contracts.features import HOUR_BUCKETS, WINDOWS

if TYPE_CHECKING:
    from feast import FeatureStore

SERVICE = "tip_policy_v1"
"""The feature service the tip policy reads."""

PUSH_SOURCE = "user_reactions_push"
"""The push source of the fresh reaction counters (``feature_repo/data_sources.py``)."""

COMPUTED = frozenset({"schema_version", "context_known", "task_known", "is_llm_tip"})
"""Contract fields the retrieval sets itself rather than reads from the feature service."""

USER_FEATURES = tuple(n for n in UserContext.model_fields if n not in COMPUTED)
TASK_FEATURES = tuple(n for n in CandidateFeatures.model_fields if n not in COMPUTED)
REQUEST_ONLY = frozenset({"hour_of_day", "weekday"})
"""Features computed from the request alone: present even for a user the store never saw."""

_CANDIDATES = TypeAdapter(list[CandidateFeatures])

NO_TASK = ""
"""The task id of the one entity row sent when a request has no task candidates."""


class FeatureStoreUnavailable(ConnectionError):
    """The online store could not be read (Redis down, SQLite file unreadable); the caller decides
    whether to serve with defaults (``UserContext()``, ``CandidateFeatures()``) or to fail."""


def _value(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _entity_key(join_key: str, value: str) -> Any:
    """The online store's key of one entity (every join key here is a string)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


def _double(v: Any) -> float | None:
    """A stored value proto as a float: ``None`` when missing or not a double (every feature the
    policy reads is a double)."""
    return v.double_val if v is not None and v.WhichOneof("val") == "double_val" else None


def context_from_row(row: Mapping[str, Any]) -> UserContext:
    """The user's context from one retrieved row, defaults filled in, ``context_known`` set."""
    user = {n: _value(row.get(n)) for n in USER_FEATURES}
    known = any(v is not None for n, v in user.items() if n not in REQUEST_ONLY)
    return UserContext(context_known=1.0 if known else 0.0, **{n: v for n, v in user.items() if v is not None})


def candidate_from_row(row: Mapping[str, Any]) -> CandidateFeatures:
    """A task's features from one retrieved row, defaults filled in, ``task_known`` set."""
    task = {n: _value(row.get(n)) for n in TASK_FEATURES}
    known = task["priority"] is not None
    return CandidateFeatures(task_known=1.0 if known else 0.0, **{n: v for n, v in task.items() if v is not None})


def candidates_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[CandidateFeatures]:
    """:func:`candidate_from_row` of each row, validated in one call (a rank reads 30 tasks).

    Examples
    --------
    >>> [c.task_known for c in candidates_from_rows([{"priority": 4.0}, {}])]
    [1.0, 0.0]
    """
    out: list[dict[str, float]] = []
    for row in rows:
        task = {n: _value(row.get(n)) for n in TASK_FEATURES}
        fields = {n: v for n, v in task.items() if v is not None}
        fields["task_known"] = 1.0 if task["priority"] is not None else 0.0
        out.append(fields)
    return _CANDIDATES.validate_python(out)


def records_from_row(row: Mapping[str, Any]) -> tuple[UserContext, CandidateFeatures]:
    """The contract records of one retrieved row (online or historical), defaults filled in.

    Examples
    --------
    >>> ctx, cand = records_from_row({"hour_of_day": 9.5, "priority": None})
    >>> ctx.context_known, ctx.hour_of_day, ctx.hours_since_last_reaction, cand.task_known, cand.priority
    (0.0, 9.5, 720.0, 0.0, 1.0)
    """
    return context_from_row(row), candidate_from_row(row)


def llm_tip_features() -> CandidateFeatures:
    """An LLM tip's features: not a task, so every task feature is its default."""
    return CandidateFeatures(is_llm_tip=1.0)


def task_row_features(task: TodoistTask) -> dict[str, float]:
    """The features a task's own lake row gives, defined as the ``task_attributes`` table defines
    them: what a task the store does not know yet (``task_known = 0``) is served with rather than
    the contract defaults (the request-time ones, age and due times, stay defaults).

    Examples
    --------
    >>> from data_contracts.todoist import Due
    >>> t = TodoistTask(user_id="u", id="t1", project_id="p", content="Call mum", priority=4, labels=["home"],
    ...                 due=Due(date="2026-05-02"), added_at=datetime(2026, 5, 1, tzinfo=UTC),
    ...                 synced_at=datetime(2026, 5, 1, tzinfo=UTC))
    >>> f = task_row_features(t)
    >>> f["priority"], f["has_due_date"], f["has_due_time"], f["label_count"], f["content_length"]
    (4.0, 1.0, 0.0, 1.0, 8.0)
    """
    duration = 0.0
    if task.duration is not None:
        duration = float(task.duration.amount * (1440 if task.duration.unit == "day" else 1))
    return {
        "priority": float(task.priority),
        "has_due_date": 1.0 if task.due is not None else 0.0,
        "has_due_time": 1.0 if task.due is not None and task.due.has_time else 0.0,
        "is_recurring": 1.0 if task.due is not None and task.due.is_recurring else 0.0,
        "has_deadline": 1.0 if task.deadline is not None else 0.0,
        "duration_minutes": duration,
        "label_count": float(len(task.labels)),
        "content_length": float(len(task.content)),
    }


def features_dict(record: UserContext | CandidateFeatures) -> dict[str, float]:
    """A record as the flat ``{name: value}`` the decision log and training rows keep."""
    return {k: float(v) for k, v in record.model_dump(exclude={"schema_version"}).items()}


def features_dicts(records: Sequence[CandidateFeatures]) -> list[dict[str, float]]:
    """:func:`features_dict` of each record (a rank makes 30): the validated fields copied, which
    are floats already, rather than dumped again (3% of a rank's CPU).

    Examples
    --------
    >>> features_dicts([CandidateFeatures(priority=4)]) == [features_dict(CandidateFeatures(priority=4))]
    True
    >>> {type(v) for v in features_dicts([CandidateFeatures(priority=4, age_days=True)])[0].values()}
    {<class 'float'>}
    """
    out = []
    for record in records:  # the validated fields as they are (all floats): a copy, not a dump
        fields = record.__dict__.copy()
        del fields["schema_version"]
        out.append(fields)
    return out


@dataclass(frozen=True)
class _ReadPlan:
    """Stored feature refs to read, and the on-demand views to apply: ``(view, inputs, outputs)``;
    ``reads``: the stored refs as one online-store read per feature view, ``(view, join key, names)``."""

    stored: list[str]
    views: list[tuple[Any, list[str], list[str]]]
    reads: list[tuple[Any, str, list[str]]]


class OnlineFeatures:
    """Reads ``tip_policy_v1`` for a user and candidate tasks; pushes fresh reaction counters.

    Parameters
    ----------
    store
        A Feast store (``oo.feature_store.get_store()``), already applied.
    task_ttl_s
        How long a task's stored features are reused without reading the store again (``0``:
        never). They change only when the features DAG materializes (nothing pushes them), so a
        few seconds cost that much staleness after a materialization and save most of a rank's
        feature read (30 tasks, against one user row). The user's features, which reactions push,
        and the request-time (on-demand) features are computed on every read.
    max_tasks
        Tasks whose stored features are kept at most (the least recently read are dropped).
    """

    def __init__(self, store: FeatureStore, *, task_ttl_s: float = 0.0, max_tasks: int = 100_000) -> None:
        self.store = store
        self.task_ttl_s = task_ttl_s
        self.max_tasks = max_tasks
        self._service: Any = None
        self._refs: dict[str, list[str]] | None = None
        self._plans: dict[str, _ReadPlan] | None = None
        self._tasks: OrderedDict[str, tuple[float, dict[str, float | None]]] = OrderedDict()
        self._tasks_lock = threading.Lock()
        self._pushed: list[tuple[Any, str, list[str]]] | None = None

    @property
    def service(self) -> Any:
        """The feature service, fetched from the registry once."""
        if self._service is None:
            self._service = self.store.get_feature_service(SERVICE)
        return self._service

    @property
    def refs(self) -> dict[str, list[str]]:
        """The service's feature references split by entity: ``user`` and ``task``.

        Reading the user's features once and the tasks' features per task, rather than the whole
        service once per candidate row, keeps Feast from decoding the user's 30-odd values 30
        times: it is most of the latency of one call.
        """
        if self._refs is None:
            split: dict[str, list[str]] = {"user": [], "task": []}
            for projection in self.service.feature_view_projections:
                names = [f.name for f in projection.features]
                entity = "user" if set(names) <= set(USER_FEATURES) else "task"
                if entity == "task" and not set(names) <= set(TASK_FEATURES):
                    raise ValueError(f"{projection.name_to_use()} mixes user and task features")
                split[entity] += [f"{projection.name_to_use()}:{n}" for n in names]
            self._refs = split
        return self._refs

    def get(
        self,
        user_id: str,
        task_ids: Sequence[str],
        *,
        tz: str = "UTC",
        now: datetime | None = None,
    ) -> tuple[UserContext, list[CandidateFeatures]]:
        """The user's context and one :class:`CandidateFeatures` per task id, in order.

        Two reads of ``tip_policy_v1``'s features: the user's (one entity row), then the tasks'
        (one row per task not read within ``task_ttl_s``), each with the request time and timezone
        for the on-demand features.
        Raises :class:`FeatureStoreUnavailable` when the online store cannot be read.
        """
        import sqlite3

        from redis.exceptions import RedisError

        try:
            return self._get(user_id, task_ids, tz=tz, now=now)
        except (RedisError, sqlite3.Error, OSError) as exc:
            raise FeatureStoreUnavailable(f"online store unreadable: {type(exc).__name__}: {exc}") from exc

    def _get(
        self, user_id: str, task_ids: Sequence[str], *, tz: str, now: datetime | None
    ) -> tuple[UserContext, list[CandidateFeatures]]:
        now_ts = (now or datetime.now(UTC)).timestamp()
        plans = self.plans
        got = self._read(plans["user"], [{"user_id": user_id}], now_ts, tz)
        context = context_from_row({k: v[0] for k, v in got.items()})
        if not task_ids:
            return context, []
        plan = plans["task"]
        tasks = self._apply_views(plan, self._task_columns(plan, task_ids), len(task_ids), now_ts, tz)
        return context, candidates_from_rows([{k: v[i] for k, v in tasks.items()} for i in range(len(task_ids))])

    def _task_columns(self, plan: _ReadPlan, task_ids: Sequence[str]) -> dict[str, list[float | None]]:
        """The tasks' stored features as columns: those read within ``task_ttl_s`` from memory,
        the others from the store (one read)."""
        now = time.monotonic()
        rows: dict[str, dict[str, float | None]] = {}
        if self.task_ttl_s > 0:
            with self._tasks_lock:
                for t in task_ids:
                    hit = self._tasks.get(t)
                    if hit is not None and hit[0] > now:
                        rows[t] = hit[1]
        missing = list(dict.fromkeys(t for t in task_ids if t not in rows))
        if missing:
            got = self._stored(plan, [{"task_id": t} for t in missing])
            fresh = {t: {k: v[i] for k, v in got.items()} for i, t in enumerate(missing)}
            rows.update(fresh)
            if self.task_ttl_s > 0:
                with self._tasks_lock:
                    for t, row in fresh.items():
                        self._tasks[t] = (now + self.task_ttl_s, row)
                        self._tasks.move_to_end(t)
                    while len(self._tasks) > self.max_tasks:
                        self._tasks.popitem(last=False)
        names = next(iter(rows.values())).keys()
        return {k: [rows[t].get(k) for t in task_ids] for k in names}

    @property
    def plans(self) -> dict[str, _ReadPlan]:
        """How to read each entity's part of the service: stored features, plus the on-demand views
        applied here to the decoded values.

        Feast would apply the on-demand views itself, but only after converting the whole response
        to Python dicts (a third of a call's time); calling each view's own ``transform_dict`` on
        the values already decoded computes the same features with the same function.
        """
        if self._plans is None:
            plans: dict[str, _ReadPlan] = {}
            odfv_names = {v.name for v in self.store.list_on_demand_feature_views()}
            for entity, refs in self.refs.items():
                stored: list[str] = []
                views: list[tuple[Any, list[str], list[str]]] = []
                by_view: dict[str, list[str]] = {}
                for ref in refs:
                    view, name = ref.split(":", 1)
                    by_view.setdefault(view, []).append(name)
                for view, names in by_view.items():
                    if view not in odfv_names:
                        stored += [f"{view}:{n}" for n in names]
                        continue
                    odfv = self.store.get_on_demand_feature_view(view)
                    inputs = []
                    for projection in odfv.source_feature_view_projections.values():
                        inputs += [f.name for f in projection.features]
                        view_name = projection.name_to_use()  # type: ignore[no-untyped-call]
                        stored += [f"{view_name}:{f.name}" for f in projection.features]
                    views.append((odfv, inputs, names))
                stored = list(dict.fromkeys(stored))
                names_by_view: dict[str, list[str]] = {}
                for ref in stored:
                    view, name = ref.split(":", 1)
                    names_by_view.setdefault(view, []).append(name)
                reads = []
                for view, names in names_by_view.items():
                    fv = self.store.get_feature_view(view)
                    (join_key,) = [c.name for c in fv.entity_columns]
                    reads.append((fv, join_key, names))
                plans[entity] = _ReadPlan(stored=stored, views=views, reads=reads)
            self._plans = plans
        return self._plans

    def _read(
        self, plan: _ReadPlan, rows: list[dict[str, Any]], now_ts: float, tz: str
    ) -> dict[str, list[float | None]]:
        return self._apply_views(plan, self._stored(plan, rows), len(rows), now_ts, tz)

    def _stored(self, plan: _ReadPlan, rows: list[dict[str, Any]]) -> dict[str, list[float | None]]:
        """The stored features of ``rows``, numeric columns: one read per feature view through the
        online store's own ``online_read`` (SQLite, Redis: whichever the repo config names).

        ``FeatureStore.get_online_features`` makes the same reads, then spends four times as long
        again on generic work this plan has done once (resolving the refs against the registry,
        grouping entities, building the response protos with their statuses and timestamps):
        a fifth of a rank's GIL time at 200 ranks/s. Feast applies no TTL on online reads, so the
        values are the same (``tests/models/features/test_online_offline.py`` compares both paths).
        """
        online = self._online_store()
        config = self.store.config
        out: dict[str, list[float | None]] = {}
        for fv, join_key, names in plan.reads:
            keys = [_entity_key(join_key, str(r[join_key])) for r in rows]
            read = online.online_read(config=config, table=fv, entity_keys=keys, requested_features=names)
            values = [found or {} for _, found in read]
            for name in names:
                out[name] = [_double(v.get(name)) for v in values]
        return out

    def _online_store(self) -> Any:
        # The provider's online store: Feast has no public accessor for it (``get_online_features``
        # reaches it the same way).
        return self.store._get_provider().online_store

    def _apply_views(
        self, plan: _ReadPlan, columns: dict[str, list[float | None]], n: int, now_ts: float, tz: str
    ) -> dict[str, list[float | None]]:
        """``columns`` with the on-demand features computed for the request time and timezone."""
        columns = dict(columns)
        for odfv, inputs, names in plan.views:
            given: dict[str, list[Any]] = {k: columns.get(k, [None] * n) for k in inputs}
            out = odfv.transform_dict({**given, "now_ts": [now_ts] * n, "tz": [tz] * n})
            for name in names:
                columns[name] = [_value(v) for v in out[name]]
        return columns

    # -- fresh counters -------------------------------------------------------------------------
    def counters(self, user_id: str) -> dict[str, float | None]:
        """The user's stored reaction counters (``None`` for a user never seen)."""
        stored: dict[str, Any] = {}
        for fv, join_key, _ in self._pushed_views():
            key = _entity_key(join_key, user_id)
            (_, found), *_ = self._online_store().online_read(config=self.store.config, table=fv, entity_keys=[key])
            stored.update(found or {})
        return {c: _value(_double(stored.get(c))) for c in feature_columns("user_reactions")}

    def push_reaction(self, event: ReactionEvent, kind: CandidateKind | None, tz: str = "UTC") -> dict[str, float]:
        """Count ``event`` into the user's online counters at once and push them.

        The batch path recomputes the same counters from the lake (windows expire there); until
        then the pushed values hold. The caller deduplicates events (the bus consumer does).

        Written with the online store's own ``online_write_batch`` into each feature view the push
        source ``user_reactions_push`` feeds, what ``FeatureStore.push`` does after finding those
        views: it finds them by decoding every view in the registry on each call (typeguard-checked),
        30 ms of a reward's GIL time here; they are found once instead.
        """
        from feast.protos.feast.types.Value_pb2 import Value

        values = updated_counters(self.counters(event.user_id), event, kind, tz)
        now = datetime.now(UTC)
        online = self._online_store()
        for fv, join_key, names in self._pushed_views():
            key = _entity_key(join_key, event.user_id)
            row = {n: Value(double_val=values[n]) for n in names}
            online.online_write_batch(self.store.config, fv, [(key, row, now, now)], progress=None)
        return values

    def _pushed_views(self) -> list[tuple[Any, str, list[str]]]:
        """The feature views the push source feeds, found once: ``(view, join key, feature names)``."""
        if self._pushed is None:
            from feast.types import Float64

            pushed = []
            for fv in self.store.list_feature_views():
                if fv.stream_source is None or fv.stream_source.name != PUSH_SOURCE:
                    continue
                (join_key,) = [c.name for c in fv.entity_columns]
                names = [f.name for f in fv.features]
                unknown = sorted(set(names) - set(feature_columns("user_reactions")))
                not_double = sorted(f.name for f in fv.features if f.dtype != Float64)
                if unknown or not_double:
                    raise ValueError(f"{fv.name}: not the user_reactions contract ({unknown or not_double})")
                pushed.append((fv, join_key, names))
            if not pushed:
                raise ValueError(f"no feature view reads the push source {PUSH_SOURCE!r}: `feast apply` first")
            self._pushed = pushed
        return self._pushed


def hour_bucket(at: datetime, tz: str) -> str:
    """The hour-of-day bucket of ``at`` in ``tz`` (0-5 night, 6-11 morning, 12-17, 18-23).

    Examples
    --------
    >>> hour_bucket(datetime(2026, 5, 1, 0, tzinfo=UTC), "Asia/Tokyo")  # 09:00 in Tokyo
    'morning'
    """
    from zoneinfo import ZoneInfo

    return HOUR_BUCKETS[at.astimezone(ZoneInfo(tz)).hour // 6]


def updated_counters(
    current: Mapping[str, float | None], event: ReactionEvent, kind: CandidateKind | None, tz: str
) -> dict[str, float]:
    """The reaction counters after ``event``: counts incremented, rates recomputed.

    Examples
    --------
    >>> from uuid import UUID
    >>> e = ReactionEvent(event_id=UUID(int=1), decision_id=UUID(int=2), user_id="u", candidate_id="c",
    ...                   reaction="done", occurred_at=datetime(2026, 5, 1, 9, tzinfo=UTC))
    >>> after = updated_counters({}, e, CandidateKind.todoist_task, "UTC")
    >>> after["reactions_7d"], after["done_rate_7d"], after["done_rate_28d_morning"]
    (1.0, 1.0, 1.0)
    """
    v = {c: float(current.get(c) or 0.0) for c in feature_columns("user_reactions")}
    r = event.reaction.value
    for w in WINDOWS:
        v[f"reactions_{w}d"] += 1
        v[f"{r}_{w}d"] += 1
    groups = [hour_bucket(event.occurred_at, tz)] + ([kind.value] if kind is not None else [])
    for g in groups:
        v[f"reactions_28d_{g}"] += 1
        if r in ("done", "dismiss"):
            v[f"{r}_28d_{g}"] += 1
    for w in WINDOWS:
        for rr in REACTIONS:
            v[f"{rr}_rate_{w}d"] = v[f"{rr}_{w}d"] / v[f"reactions_{w}d"]
    for g in (*KINDS, *HOUR_BUCKETS):
        n = v[f"reactions_28d_{g}"]
        for rr in ("done", "dismiss"):
            v[f"{rr}_rate_28d_{g}"] = v[f"{rr}_28d_{g}"] / n if n else 0.0
    v["last_reaction_ts"] = max(v["last_reaction_ts"], event.occurred_at.timestamp())
    return v


def wait_visible(features: OnlineFeatures, user_id: str, field: str, expected: float, timeout_s: float = 1.0) -> float:
    """Poll the online store until ``field`` equals ``expected``; return the seconds it took.

    Raises ``TimeoutError`` when it is not visible within ``timeout_s``.
    """
    start = time.perf_counter()
    while True:
        got = features.counters(user_id).get(field)
        if got is not None and abs(got - expected) < 1e-9:
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"{field}={got} for {user_id}, expected {expected}, after {timeout_s}s")
        time.sleep(0.001)
