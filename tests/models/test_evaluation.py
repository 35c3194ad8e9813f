"""Off-policy estimators on synthetic logs whose true value is known exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.evaluation import (
    InvalidLog,
    LoggedDecision,
    doubly_robust,
    evaluate_policy,
    ips,
    replay,
    snips,
)
from models.policies import EpsilonGreedy, default_model
from models.policies.base import Arm

K = 4
CONTEXTS = 50
ARMS = [Arm(f"a{k}", {"priority": 1.0 + k}) for k in range(K)]


def world(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bernoulli reward means mu[x, a], a logging softmax and a target policy, per context."""
    rng = np.random.default_rng(1000 + seed)
    mu = rng.uniform(0.05, 0.95, size=(CONTEXTS, K))
    logits = rng.normal(0, 1, size=(CONTEXTS, K))
    logging = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = np.full((CONTEXTS, K), 0.1 / K)
    target[np.arange(CONTEXTS), mu.argmax(axis=1)] += 0.9  # 10%-greedy on the true best
    return mu, logging, target


def logs_for(seed: int, n: int) -> tuple[list[LoggedDecision], list[dict[str, float]], list[dict[str, float]], float]:
    mu, logging, target = world(seed)
    rng = random.Random(seed)
    truth = float((target * mu).sum(axis=1).mean())  # contexts are uniform: the exact value
    logs, targets, q = [], [], []
    q_rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.randrange(CONTEXTS)
        a = rng.choices(range(K), weights=logging[x].tolist())[0]
        r = 1.0 if rng.random() < mu[x, a] else 0.0
        logs.append(LoggedDecision({"x": float(x)}, ARMS, f"a{a}", float(logging[x, a]), r))
        targets.append({f"a{k}": float(target[x, k]) for k in range(K)})
        # a deliberately imperfect reward model: DR must stay unbiased anyway
        q.append({f"a{k}": float(np.clip(mu[x, k] + q_rng.normal(0, 0.15), 0, 1)) for k in range(K)})
    return logs, targets, q, truth


@pytest.mark.slow
def test_intervals_cover_the_true_value_in_at_least_90_percent_of_seeds() -> None:
    seeds = range(40)
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in seeds:
        logs, targets, q, truth = logs_for(seed, 1500)
        covered["ips"] += ips(logs, targets, n_bootstrap=300, seed=seed).covers(truth)
        covered["snips"] += snips(logs, targets, n_bootstrap=300, seed=seed).covers(truth)
        covered["dr"] += doubly_robust(logs, targets, q, n_bootstrap=300, seed=seed).covers(truth)
    rates = {k: v / len(seeds) for k, v in covered.items()}
    assert all(rate >= 0.9 for rate in rates.values()), rates


def test_dr_is_tighter_than_ips_with_a_decent_reward_model() -> None:
    logs, targets, q, truth = logs_for(3, 3000)
    e_ips, e_dr = ips(logs, targets), doubly_robust(logs, targets, q)
    assert e_dr.high - e_dr.low < e_ips.high - e_ips.low
    assert abs(e_dr.value - truth) < 0.05


def test_replay_of_a_deterministic_policy_under_uniform_logging() -> None:
    rng = random.Random(0)
    mu = [0.2, 0.8, 0.5, 0.4]
    logs = []
    for _ in range(4000):
        a = rng.randrange(K)
        logs.append(LoggedDecision({}, ARMS, f"a{a}", 1 / K, float(rng.random() < mu[a])))
    e = replay(logs, ["a1"] * len(logs))
    assert e.covers(0.8) and 900 < e.n < 1100


def test_evaluate_policy_reports_every_estimator_and_learns_nothing() -> None:
    logs, _, _, _ = logs_for(1, 400)
    policy = EpsilonGreedy(epsilon=0.2, seed=0, model=default_model(0.3))
    for d in logs[:200]:
        policy.learn_one(d.context, d.chosen, d.reward)
    before = policy.probabilities(logs[0].context, ARMS)
    report = evaluate_policy(policy, logs[200:], n_bootstrap=100)
    assert policy.probabilities(logs[0].context, ARMS) == before
    metrics = report.metrics()
    assert {"ips", "ips_low", "ips_high", "snips", "dr", "dr_low", "dr_high", "ess", "logged_reward"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("propensity", [0.0, -0.1, 1.5, math.nan])
def test_a_bad_propensity_is_refused(propensity: float) -> None:
    with pytest.raises(InvalidLog, match="propensity"):
        LoggedDecision({}, ARMS, "a0", propensity, 1.0)


def test_a_log_whose_choice_is_not_a_candidate_is_refused() -> None:
    with pytest.raises(InvalidLog, match="not among"):
        LoggedDecision({}, ARMS, "zz", 0.5, 1.0)
