"""`make bench-policy`: simulator rewards, the Contextual Bandit Bake-off protocol against Vowpal
Wabbit, and decision throughput. Writes bench/results/policy.json.

- simulator: 50,000 rounds per policy on one seeded simulator (every policy faces the same
  rounds and learns online from the start); the oracle picks each round's best expected
  candidate. Learners use the default scorer (normalised SGD, step 0.1 / (1 + t) ** 0.25) with
  epsilon 0.02, temperature 0.02 or 5 bootstrap members. `best_over_oracle` compares expected rewards
  (the realised ones are listed too).
- bake-off: multiclass -> bandit (each class an action, reward 1 for the right class, only the
  chosen action's reward is seen), progressive validation (the average reward of the actions
  taken while learning), datasets bundled with scikit-learn, averaged over shuffles. Both
  learners get the same scaled features (context scaled by each feature's max |value|; one
  indicator per action) and the same context x action interactions (`-q sa` for VW), and the
  same exploration settings: epsilon 0.05, softmax lambda 10 (temperature 0.1), bag / bootstrap
  of 5 members. Our scorer uses one fixed setting on every dataset (normalised SGD, constant step
  0.5); VW uses its defaults.
- throughput: `choose` over 30 candidates with 32 features each (UserContext context, 960
  interaction features) plus one `learn_one`, in one process on one core.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data_contracts.features import UserContext
from models.featurize import Featurizer
from models.policies import BootstrapThompson, EpsilonGreedy, Policy, RuleBased, Softmax, UniformRandom, default_model
from models.policies.base import Arm
from models.simulation import Simulator

OUT = Path(__file__).resolve().parent / "results" / "policy.json"
SIM_ROUNDS = int(os.environ.get("BENCH_SIM_ROUNDS", "50000"))
SHUFFLES = int(os.environ.get("BENCH_SHUFFLES", "5"))
EPSILON, TEMPERATURE, MEMBERS = 0.05, 0.1, 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # noqa: T201


# -- simulator -------------------------------------------------------------------------------
def simulator() -> dict[str, Any]:
    policies: dict[str, Callable[[], Policy | None]] = {
        "oracle": lambda: None,
        "rule_based": lambda: RuleBased(),
        "uniform_random": lambda: UniformRandom(seed=1),
        "epsilon_greedy": lambda: EpsilonGreedy(epsilon=0.02, seed=1),
        "softmax": lambda: Softmax(temperature=0.02, seed=1),
        "bootstrap_thompson": lambda: BootstrapThompson(n_members=MEMBERS, seed=1),
    }
    rewards, expected, seconds = {}, {}, {}
    for name, make in policies.items():
        t = time.perf_counter()
        result = Simulator(seed=0).run(make(), SIM_ROUNDS)
        seconds[name] = round(time.perf_counter() - t, 1)
        rewards[name] = round(result.mean_reward, 4)
        expected[name] = round(result.mean_expected, 4)
        log(
            f"simulator {name}: reward {result.mean_reward:.4f} expected {result.mean_expected:.4f} ({seconds[name]} s)"
        )
    learners = [n for n in rewards if n not in {"oracle", "rule_based", "uniform_random"}]
    best = max(learners, key=lambda n: expected[n])
    return {
        "rounds": SIM_ROUNDS,
        "rewards": rewards,
        "expected_rewards": expected,
        "best_policy": best,
        "best_over_oracle": round(expected[best] / expected["oracle"], 4),
        "best_beats_baseline": expected[best] > expected["rule_based"],
        "seconds": seconds,
    }


# -- bake-off --------------------------------------------------------------------------------
def datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn import datasets as sk

    out = {}
    for name, loader in {
        "iris": sk.load_iris,
        "wine": sk.load_wine,
        "breast_cancer": sk.load_breast_cancer,
        "digits": sk.load_digits,
    }.items():
        x, y = loader(return_X_y=True)
        scale = np.abs(x).max(axis=0)
        scale[scale == 0] = 1.0
        out[name] = (x / scale, y.astype(int))
    return out


def _ours(kind: str, n_features: int, n_actions: int, seed: int) -> Policy:
    featurizer = Featurizer(
        context_fields=tuple(f"x{j}" for j in range(n_features)),
        candidate_fields=tuple(f"a{k}" for k in range(n_actions)),
    )
    common: dict[str, Any] = {"model": default_model(0.5, decay=0.0), "featurizer": featurizer, "seed": seed}
    if kind == "epsilon_greedy":
        return EpsilonGreedy(epsilon=EPSILON, **common)
    if kind == "softmax":
        return Softmax(temperature=TEMPERATURE, **common)
    return BootstrapThompson(n_members=MEMBERS, floor=EPSILON / n_actions, **common)


def run_ours(kind: str, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    n_actions = int(y.max()) + 1
    policy = _ours(kind, x.shape[1], n_actions, seed)
    arms = [Arm(str(k), {f"a{k}": 1.0}) for k in range(n_actions)]
    total = 0.0
    for row, label in zip(x, y, strict=True):
        ctx = {f"x{j}": float(v) for j, v in enumerate(row) if v != 0.0}
        choice = policy.choose(ctx, arms)
        a = int(choice.chosen_id)
        reward = 1.0 if a == label else 0.0
        policy.learn_one(ctx, arms[a], reward)
        total += reward
    return total / len(y)


VW_ARGS = {
    "vw_epsilon_greedy": f"--epsilon {EPSILON}",
    "vw_softmax": f"--softmax --lambda {1 / TEMPERATURE:g}",
    "vw_bag": f"--bag {MEMBERS} --epsilon {EPSILON}",
}


def run_vw(kind: str, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    import vowpalwabbit

    n_actions = int(y.max()) + 1
    vw = vowpalwabbit.Workspace(f"--cb_explore_adf {VW_ARGS[kind]} -q sa --quiet --random_seed {seed}")
    rng = random.Random(seed)
    total = 0.0
    for row, label in zip(x, y, strict=True):
        shared = "shared |s " + " ".join(f"x{j}:{v:.6g}" for j, v in enumerate(row) if v != 0.0)
        actions = [f"|a a{k}" for k in range(n_actions)]
        pmf = vw.predict([shared, *actions])
        a = rng.choices(range(n_actions), weights=pmf)[0]
        reward = 1.0 if a == label else 0.0
        actions[a] = f"{a}:{1.0 - reward}:{pmf[a]} |a a{a}"  # VW minimises cost = 1 - reward
        vw.learn([shared, *actions])
        total += reward
    vw.finish()
    return total / len(y)


def bakeoff() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (x, y) in datasets().items():
        scores: dict[str, list[float]] = {}
        for s in range(SHUFFLES):
            order = np.random.default_rng(s).permutation(len(y))
            xs, ys = x[order], y[order]
            for kind in ("epsilon_greedy", "softmax", "bootstrap_thompson"):
                scores.setdefault(kind, []).append(run_ours(kind, xs, ys, s))
            for kind in VW_ARGS:
                scores.setdefault(kind, []).append(run_vw(kind, xs, ys, s))
        out[name] = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
        ours = max(v for k, v in out[name].items() if not k.startswith("vw_"))
        vw_best = max(v for k, v in out[name].items() if k.startswith("vw_"))
        log(f"bakeoff {name}: {out[name]} ours best {ours:.4f} vs VW best {vw_best:.4f}")
    return out


# -- throughput ------------------------------------------------------------------------------
def throughput() -> dict[str, Any]:
    rng = random.Random(0)
    context_fields = tuple(n for n in UserContext.model_fields if n != "schema_version")
    candidate_fields = tuple(f"f{j}" for j in range(32))
    featurizer = Featurizer(context_fields=context_fields, candidate_fields=candidate_fields)
    pool = [Arm(f"c{i}", {n: rng.random() for n in candidate_fields}) for i in range(600)]
    contexts = [{n: rng.uniform(0, 6) for n in context_fields} for _ in range(100)]
    out: dict[str, Any] = {
        "candidates": 30,
        "features_per_candidate": 32,
        "features_per_pair": len(featurizer.feature_names),
    }
    rounds = 3000
    for name, policy in {
        "epsilon_greedy": EpsilonGreedy(epsilon=EPSILON, featurizer=featurizer, seed=0),
        "softmax": Softmax(temperature=TEMPERATURE, featurizer=featurizer, seed=0),
        "bootstrap_thompson": BootstrapThompson(n_members=MEMBERS, featurizer=featurizer, seed=0),
    }.items():
        t = time.perf_counter()
        for i in range(rounds):
            start = (i * 37) % 570
            cands = pool[start : start + 30]
            ctx = contexts[i % 100]
            choice = policy.choose(ctx, cands)
            policy.learn_one(ctx, next(c for c in cands if c.candidate_id == choice.chosen_id), rng.random())
        dt = time.perf_counter() - t
        out[name] = {"rounds_per_s": round(rounds / dt), "decisions_per_s": round(2 * rounds / dt)}
        log(f"throughput {name}: {out[name]}")
    out["decisions_per_s"] = out["epsilon_greedy"]["decisions_per_s"]
    out["note"] = "decisions_per_s counts decisions plus updates (one of each per round), epsilon-greedy"
    return out


def main() -> None:
    t = time.perf_counter()
    result = {
        "simulator": simulator(),
        "bakeoff": bakeoff(),
        "throughput": throughput(),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
    }
    result["seconds"] = round(time.perf_counter() - t, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {OUT} in {result['seconds']} s")


if __name__ == "__main__":
    main()
