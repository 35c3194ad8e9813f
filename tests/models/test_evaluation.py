"""Off-policy estimators on synthetic logs whose true value is known exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.evaluation import (
    ClusterBootstrap,
    InvalidLog,
    InvalidTarget,
    LoggedDecision,
    NoOverlap,
    doubly_robust,
    evaluate_policy,
    fit_reward_model,
    group_codes,
    ips,
    replay,
    snips,
)
from models.policies import EpsilonGreedy, UniformRandom, default_model
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


def test_evaluate_policy_reports_values_that_match_the_truth_and_learns_nothing() -> None:
    logs, _, _, _ = logs_for(1, 3000)
    policy = EpsilonGreedy(epsilon=0.2, seed=0, model=default_model(0.3))
    for d in logs[:1000]:
        policy.learn_one(d.context, d.chosen, d.reward)
    held_out = logs[1000:]
    before = policy.probabilities(held_out[0].context, ARMS)
    report = evaluate_policy(policy, held_out, n_bootstrap=200)
    assert policy.probabilities(held_out[0].context, ARMS) == before
    # the truth of this frozen policy, from the world's reward means
    mu, _, _ = world(1)
    target = [policy.probabilities(d.context, ARMS) for d in held_out]
    truth = float(
        np.mean(
            [
                sum(t[f"a{k}"] * mu[int(d.context["x"]), k] for k in range(K))
                for d, t in zip(held_out, target, strict=True)
            ]
        )
    )
    assert report.dr.covers(truth) and abs(report.dr.value - truth) < 0.05
    w = np.asarray([t[d.chosen_id] / d.propensity for d, t in zip(held_out, target, strict=True)])
    assert report.dr.ess == pytest.approx(w.sum() ** 2 / (w**2).sum()) and report.dr.max_weight == pytest.approx(
        w.max()
    )
    assert report.ips.value == pytest.approx(float(np.mean(w * [d.reward for d in held_out])))
    metrics = report.metrics()
    assert (metrics["dr"], metrics["dr_low"], metrics["ess"]) == (report.dr.value, report.dr.low, report.dr.ess)
    assert metrics["logged_reward"] == pytest.approx(np.mean([d.reward for d in held_out]))


@pytest.mark.parametrize("propensity", [0.0, -0.1, 1.5, math.nan, 1e-320, 1e-13])
def test_a_bad_propensity_is_refused(propensity: float) -> None:
    with pytest.raises(InvalidLog, match="propensity"):
        LoggedDecision({}, ARMS, "a0", propensity, 1.0)


def test_a_log_whose_choice_is_not_a_candidate_is_refused() -> None:
    with pytest.raises(InvalidLog, match="not among"):
        LoggedDecision({}, ARMS, "zz", 0.5, 1.0)


# -- the point estimates are Open Bandit Pipeline's -----------------------------------------------


def test_point_estimates_equal_open_bandit_pipelines_formulas() -> None:
    """OBP (obp.ope.estimators) computes, per round, ``reward * iw`` (IPW), ``reward * iw / iw.mean()``
    (SNIPW) and ``np.average(q_hat, weights=action_dist) + iw * (reward - q_hat_factual)`` (DR), with
    ``iw = action_dist[a] / pscore`` clipped by ``np.minimum(iw, lambda_)``, and averages them."""
    logs, targets, q, _ = logs_for(5, 2000)
    ids = [f"a{k}" for k in range(K)]
    reward = np.asarray([d.reward for d in logs])
    pscore = np.asarray([d.propensity for d in logs])
    action = np.asarray([ids.index(d.chosen_id) for d in logs])
    action_dist = np.asarray([[t[a] for a in ids] for t in targets])
    q_hat = np.asarray([[qi[a] for a in ids] for qi in q])
    for clip in (None, 3.0):
        iw = action_dist[np.arange(len(logs)), action] / pscore
        if clip is not None:
            iw = np.minimum(iw, clip)
        obp_ips = (reward * iw).mean()
        obp_snips = (reward * iw / iw.mean()).mean()
        q_factual = q_hat[np.arange(len(logs)), action]
        obp_dr = (np.average(q_hat, weights=action_dist, axis=1) + iw * (reward - q_factual)).mean()
        assert abs(ips(logs, targets, n_bootstrap=1, clip=clip).value - obp_ips) <= 1e-15
        assert abs(snips(logs, targets, n_bootstrap=1, clip=clip).value - obp_snips) <= 1e-15
        assert abs(doubly_robust(logs, targets, q, n_bootstrap=1, clip=clip).value - obp_dr) <= 1e-15


# -- estimators refuse nonsense ----------------------------------------------------------------------


def uniform_logs(n: int, users: int | None = None, seed: int = 0) -> list[LoggedDecision]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = rng.randrange(K)
        user = None if users is None else f"u{i % users}"
        out.append(LoggedDecision({}, ARMS, f"a{a}", 1 / K, float(rng.random() < 0.5), user_id=user))
    return out


def only(arm: str, n: int) -> list[dict[str, float]]:
    return [{a.candidate_id: float(a.candidate_id == arm) for a in ARMS}] * n


def test_no_overlap_raises_instead_of_a_confident_zero() -> None:
    logs = [LoggedDecision({}, ARMS, "a0", 0.5, 1.0) for _ in range(50)]
    target = only("a1", 50)  # never what was logged
    q = [{a.candidate_id: 0.5 for a in ARMS}] * 50
    for estimate in (lambda: ips(logs, target), lambda: snips(logs, target), lambda: doubly_robust(logs, target, q)):
        with pytest.raises(NoOverlap, match="no overlap"):
            estimate()
    with pytest.raises(NoOverlap):
        replay(logs, ["a1"] * 50)


def test_no_overlap_inside_a_bootstrap_resample_raises_too() -> None:
    # one user of 40 is the only one whose logged choice the target could have made
    logs = [LoggedDecision({}, ARMS, "a0", 0.25, 1.0, user_id=f"u{i}") for i in range(39)]
    logs.append(LoggedDecision({}, ARMS, "a1", 0.25, 1.0, user_id="u39"))
    target = only("a1", 40)
    with pytest.raises(NoOverlap, match="bootstrap resamples"):
        snips(logs, target, n_bootstrap=200)
    with pytest.raises(NoOverlap, match="bootstrap resamples"):
        ips(logs, target, n_bootstrap=200)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"a0": 1.0, "a1": 1.0, "a2": 0.0, "a3": 0.0}, "sums to 2.0"),
        ({"a0": 0.5, "a1": 0.4999999}, "sums to"),
        ({0: 1.0}, "not candidates"),
        ({"zz": 1.0}, "not candidates"),
        ({"a0": 1.5, "a1": -0.5}, "negative"),
        ({"a0": math.nan, "a1": 1.0}, "non-finite"),
        ({"a0": "1"}, "not a number"),
    ],
)
def test_a_target_that_is_not_a_distribution_over_the_candidates_is_refused(target: dict, message: str) -> None:  # type: ignore[type-arg]
    logs = uniform_logs(10)
    with pytest.raises(InvalidTarget, match=message):
        ips(logs, [target] * 10)


def test_a_target_off_by_less_than_1e_9_passes() -> None:
    logs = uniform_logs(10)
    assert ips(logs, [{"a0": 0.5 + 4e-10, "a1": 0.5}] * 10, n_bootstrap=10).n == 10


@pytest.mark.parametrize("n_bootstrap", [0, -5, 2.5, True])
def test_a_bootstrap_without_resamples_is_refused_clearly(n_bootstrap: object) -> None:
    logs = uniform_logs(10)
    with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
        ips(logs, only("a0", 10), n_bootstrap=n_bootstrap)  # type: ignore[arg-type]


def test_every_estimate_carries_its_effective_sample_size_and_largest_weight() -> None:
    logs = uniform_logs(400)
    e = snips(logs, only("a2", 400), n_bootstrap=50)
    matched = sum(d.chosen_id == "a2" for d in logs)
    # weights are 4 on the matched decisions and 0 elsewhere: ESS = matched, max weight = 1 / (1/4)
    assert e.ess == pytest.approx(matched) and e.max_weight == 4.0 and e.n == 400 and e.n_users == 400
    r = replay(logs, ["a2"] * 400, n_bootstrap=50)
    assert (r.n, r.ess, r.max_weight) == (matched, matched, 1.0)


def test_an_optional_clip_bounds_extreme_weights_and_says_so() -> None:
    # one decision logged at propensity 1e-3 with reward 1: IPS goes far above any reward in [0, 1]
    logs = [LoggedDecision({}, ARMS, "a0", 0.999, 0.0, user_id=f"u{i}") for i in range(99)]
    logs.append(LoggedDecision({}, ARMS, "a1", 1e-3, 1.0, user_id="u99"))
    target = [{"a0": 0.5, "a1": 0.5, "a2": 0.0, "a3": 0.0}] * 100
    wild = ips(logs, target, n_bootstrap=100)
    assert wild.value > 4.9 and wild.max_weight == pytest.approx(500.0) and wild.clip is None
    tamed = ips(logs, target, n_bootstrap=100, clip=10.0)
    assert tamed.value == pytest.approx(10.0 / 100) and tamed.n_clipped == 1 and tamed.clip == 10.0
    assert tamed.max_weight == pytest.approx(500.0)  # the diagnostic reports the weight before clipping
    with pytest.raises(ValueError, match="weight clip"):
        ips(logs, target, clip=0.0)


# -- the bootstrap ------------------------------------------------------------------------------------


def test_the_bootstrap_resamples_whole_users() -> None:
    # each user always gets the same reward: 20 users, 50 decisions each -> 20 independent values, not 1000
    rng = random.Random(3)
    logs = []
    for u in range(20):
        r = float(rng.random() < 0.5)
        logs += [LoggedDecision({}, ARMS, f"a{rng.randrange(K)}", 1 / K, r, user_id=f"u{u}") for _ in range(50)]
    target = [{a.candidate_id: 1 / K for a in ARMS}] * len(logs)
    clustered = ips(logs, target, n_bootstrap=400)
    anonymous = [LoggedDecision(d.context, d.candidates, d.chosen_id, d.propensity, d.reward) for d in logs]
    naive = ips(anonymous, target, n_bootstrap=400)
    assert clustered.n_users == 20 and naive.n_users == 1000
    # the naive interval is about sqrt(50) times too narrow; the clustered one has a user's variance
    assert (clustered.high - clustered.low) > 4 * (naive.high - naive.low)
    assert (clustered.high - clustered.low) / 2 == pytest.approx(1.96 * 0.5 / math.sqrt(20), rel=0.35)


def test_the_bootstrap_streams_its_resamples_in_memory_linear_in_n() -> None:
    import tracemalloc

    n, b = 100_000, 600  # a B x n index matrix would be 480 MB
    rng = np.random.default_rng(0)
    terms = rng.random(n)
    boot = ClusterBootstrap(np.arange(n, dtype=np.int64), n_bootstrap=b, seed=0, level=0.95)
    tracemalloc.start()
    samples = boot.ratios([(terms, np.ones(n))])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert samples.shape == (b, 1) and peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert abs(samples.mean() - terms.mean()) < 0.01 and samples.std() == pytest.approx(
        terms.std() / math.sqrt(n), rel=0.15
    )


def test_group_codes_name_users_and_lone_decisions() -> None:
    logs = uniform_logs(6, users=2) + uniform_logs(2)
    assert group_codes(logs).tolist() == [0, 1, 0, 1, 0, 1, 2, 3]


# -- the DR reward model learns on the policy's own features -----------------------------------------


class Custom(UniformRandom):
    """A policy whose own featurizer reads a feature the contracts do not know."""

    def features_one(self, x, candidate):  # type: ignore[no-untyped-def]
        return {"zz_signal": candidate.features["zz_signal"], "bias": 1.0}


def test_the_dr_reward_model_learns_on_the_policys_own_features() -> None:
    rng = random.Random(0)
    arms = [Arm(f"b{k}", {"zz_signal": float(k)}) for k in range(K)]
    logs = []
    for i in range(600):
        a = rng.randrange(K)
        logs.append(LoggedDecision({}, arms, f"b{a}", 1 / K, float(rng.random() < 0.2 + 0.2 * a), user_id=f"u{i % 30}"))
    q = fit_reward_model(logs, features=Custom(seed=0).features_one)
    for k in range(K):  # it recovers the true mean reward 0.2 + 0.2 k of every arm, held out
        assert np.mean([qi[f"b{k}"] for qi in q]) == pytest.approx(0.2 + 0.2 * k, abs=0.06)
    report = evaluate_policy(Custom(seed=0), logs, n_bootstrap=50)  # evaluate_policy picks the policy's features
    assert report.dr.covers(0.5)


def test_the_reward_model_chooses_its_penalty_and_does_not_fit_hundreds_of_noise_features() -> None:
    """One feature of the shown candidate sets its reward; 300 others are noise. On 300 rewards a
    fixed penalty of 1 fits the noise, and predicts each candidate's expected reward worse than
    their mean would; the penalty chosen by leave-one-out on the fitting fold does not."""
    r = random.Random(5)
    noise = [f"n{j}" for j in range(300)]

    def arm(i: int) -> Arm:
        return Arm(f"c{i}", {"good": r.random(), **{n: r.gauss(0, 1) for n in noise}})

    logs, truth = [], []
    for k in range(300):
        cands = [arm(i) for i in range(3)]
        chosen = r.choice(cands)
        p = 0.2 + 0.6 * chosen.features["good"]
        logs.append(LoggedDecision({}, cands, chosen.candidate_id, 1 / 3, float(r.random() < p), user_id=f"u{k % 30}"))
        truth.append({c.candidate_id: 0.2 + 0.6 * c.features["good"] for c in cands})

    def error(q: list[dict[str, float]]) -> float:
        return float(np.mean([(q[i][c] - t[c]) ** 2 for i, t in enumerate(truth) for c in t]))

    spread = float(np.var([v for t in truth for v in t.values()]))  # the error of predicting the mean
    chosen_penalty, fixed = error(fit_reward_model(logs)), error(fit_reward_model(logs, alpha=1.0))
    assert fixed > 1.5 * spread
    assert chosen_penalty < spread
