"""The service's Prometheus metrics, served by BentoML on ``/metrics`` (``bentoml.metrics`` is
prometheus_client wired to BentoML's multi-process registry)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import bentoml

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
"""The bounds (seconds) of the decision latency histograms."""

DECISION_LATENCY = bentoml.metrics.Histogram(
    name="oo_decision_latency_seconds",
    documentation="Time to serve one rank, from request to logged decision",
    buckets=LATENCY_BUCKETS,
)
DECISION_LOG_WAIT = bentoml.metrics.Histogram(
    name="oo_decision_log_wait_seconds",
    documentation="Time a rank waits for its decision to be durable: the group commit's write and fsync "
    "of the event log and the decision index's insert, shared with the concurrent ranks",
    buckets=LATENCY_BUCKETS,
)
DECISIONS = bentoml.metrics.Counter(
    name="oo_decisions_total", documentation="Decisions served", labelnames=["policy", "outcome"]
)
REWARDS = bentoml.metrics.Counter(
    name="oo_rewards_total", documentation="Rewards received, by reaction and status", labelnames=["reaction", "status"]
)
FEATURE_FALLBACKS = bentoml.metrics.Counter(
    name="oo_feature_store_fallbacks_total",
    documentation="Decisions served on contract defaults because the online store failed",
)
POLICY_FALLBACKS = bentoml.metrics.Counter(
    name="oo_policy_numeric_fallbacks_total",
    documentation="Decisions the rule baseline made because a policy's numbers failed (non-finite scores, "
    "a distribution that is not one)",
    labelnames=["policy", "error"],
)
PUSH_FAILURES = bentoml.metrics.Counter(
    name="oo_feature_push_failures_total", documentation="Reaction counters that could not be pushed online"
)
CHAMPION_RELOADS = bentoml.metrics.Counter(
    name="oo_champion_reloads_total", documentation="Times @champion moved and the online state restarted from it"
)
SNAPSHOT_LOADS = bentoml.metrics.Counter(
    name="oo_snapshot_loads_total", documentation="Policy snapshots a replica loaded without a restart"
)
APPRENTICE_REWARD = bentoml.metrics.Gauge(
    name="oo_apprentice_reward",
    documentation="Average reward over the latest decisions in apprentice mode: the served baseline's and "
    "the learner's would-be (matching estimate)",
    labelnames=["policy"],
)
RELAYED = bentoml.metrics.Counter(
    name="oo_relay_published_total", documentation="Spooled events the relay published to the bus", labelnames=["topic"]
)
RELAY_FAILURES = bentoml.metrics.Counter(
    name="oo_relay_failures_total", documentation="Relay attempts that failed (the bus down); the events stay spooled"
)


@lru_cache(maxsize=1024)
def decisions(policy: str, outcome: str) -> Any:
    """:data:`DECISIONS`' child for these labels, looked up once (a rank counts one)."""
    return DECISIONS.labels(policy=policy, outcome=outcome)
