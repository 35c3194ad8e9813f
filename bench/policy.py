"""`make bench-policy`: simulator rewards, the Contextual Bandit Bake-off protocol against peers,
and round throughput against Vowpal Wabbit. Writes bench/results/policy.json.

- simulator: 50,000 rounds per policy on one seeded simulator (every policy faces the same
  rounds and learns online from the start); the oracle picks each round's best expected
  candidate. Our learners run at their constructor defaults (block ridge scorer; epsilon 0.05,
  temperature 0.1 with floor 0.05, 10 bootstrap members with floor 0.05). `best_over_oracle`
  compares expected rewards (the realised ones are listed too).
- bake-off: the protocol of Bietti, Agarwal and Langford (*A Contextual Bandit Bake-off*):
  each class an action, reward 1 for the right class, the learner sees only its own action's
  reward, progressive validation over one pass (the average reward of the actions taken while
  learning), features z-scored with each dataset's mean and standard deviation, five shuffles.
  Datasets: digits, wine, iris, breast cancer (bundled with scikit-learn) and `synth`, a
  50,000-row `make_classification` stream (20 features, 10 informative, 8 classes). Every
  learner gets the same z-scored context and one indicator per action; ours and VW also their
  context x action interactions (`-q sa`). Peers, each at its library defaults: VW
  `--cb_explore_adf` with epsilon (VW's default 0.05), `--softmax` (default lambda) and
  `--bag 5` (bag needs a size; 5 as in VW's documentation), MABWiser `LinUCB()` (alpha 1,
  lambda 1), and River per-arm `LogisticRegression()` with epsilon-greedy at VW's epsilon 0.05
  (River's bandit policies take no context, so this peer is written here). Ours:
  `ours_default_<explorer>` at constructor defaults (only the featurizer naming the dataset's
  fields is given), and `ours_best_<explorer>`, one fixed setting for every dataset:
  BEST_SETTING below (explorer knobs only; the scorer stays the default block ridge). Both are
  handed the propensity of each choice, which the defaults do not use (no importance weights).
- throughput: rounds per second, a round being one `choose` over 30 candidates with 32
  features each (UserContext context, ~1,000 pair features with interactions) plus one
  `learn_one` of the chosen candidate, in one process on one core; in the same run VW's Python
  API on the same work (`--cb_explore_adf --epsilon 0.1 -q ca`, the same feature values, one
  `predict` and one `learn` per round).
- learner_memory: what the online learner's pending decisions cost the process, at the
  default `max_pending` (100,000 decisions waiting for their reward, each chosen among
  `TipCandidate`s with the contract's 16 candidate features, its context the `UserContext`
  fields): the objects the garbage collector tracks, the time of one full collection (`gc.collect()`,
  median of 5: every thread of the process stands still meanwhile, serving's event loop
  included), and the time and size of the checkpoint's pickle. No peer: our own figure, in ms.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_contracts.features import UserContext
from models.featurize import Featurizer
from models.policies import BootstrapThompson, EpsilonGreedy, Policy, RuleBased, ScoringPolicy, Softmax, UniformRandom
from models.policies.base import Arm
from models.simulation import Simulator

OUT = Path(os.environ.get("BENCH_OUT", Path(__file__).resolve().parent / "results" / "policy.json"))
SIM_ROUNDS = int(os.environ.get("BENCH_SIM_ROUNDS", "50000"))
SHUFFLES = int(os.environ.get("BENCH_SHUFFLES", "5"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # noqa: T201


# -- simulator -------------------------------------------------------------------------------
def simulator() -> dict[str, Any]:
    policies: dict[str, Callable[[], Policy | None]] = {
        "oracle": lambda: None,
        "rule_based": lambda: RuleBased(),
        "uniform_random": lambda: UniformRandom(seed=1),
        "epsilon_greedy": lambda: EpsilonGreedy(seed=1),
        "softmax": lambda: Softmax(seed=1),
        "bootstrap_thompson": lambda: BootstrapThompson(seed=1),
    }
    only = [n for n in os.environ.get("BENCH_SIM_POLICIES", "").split(",") if n]
    keep = {"oracle", "rule_based", *only}
    policies = {n: make for n, make in policies.items() if not only or n in keep}
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
BEST_SETTING: dict[str, dict[str, Any]] = {
    "epsilon_greedy": {"epsilon": 0.02},
    "softmax": {"temperature": 0.05, "floor": 0.02},
    "bootstrap_thompson": {"n_members": 5, "floor": 0.02},
}
"""Our one fixed setting for every dataset (explorer knobs; the scorer stays the default)."""

EXPLORERS: dict[str, type[ScoringPolicy]] = {
    "epsilon_greedy": EpsilonGreedy,
    "softmax": Softmax,
    "bootstrap_thompson": BootstrapThompson,
}
VW_ARGS = {"vw_epsilon": "", "vw_softmax": "--softmax", "vw_bag": "--bag 5"}
RIVER_EPSILON = 0.05
SYNTH_ROWS = int(os.environ.get("BENCH_SYNTH_ROWS", "50000"))
SYNTH_SHUFFLES = int(os.environ.get("BENCH_SYNTH_SHUFFLES", str(SHUFFLES)))
ONLY = [n for n in os.environ.get("BENCH_DATASETS", "").split(",") if n]


def zscore(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    std[std == 0] = 1.0
    out: np.ndarray = (x - x.mean(axis=0)) / std
    return out


DATASETS = ("iris", "wine", "breast_cancer", "digits", "synth")


def datasets(names: Sequence[str] = DATASETS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn import datasets as sk

    raw = {
        "digits": sk.load_digits(return_X_y=True),
        "wine": sk.load_wine(return_X_y=True),
        "iris": sk.load_iris(return_X_y=True),
        "breast_cancer": sk.load_breast_cancer(return_X_y=True),
        "synth": sk.make_classification(
            n_samples=SYNTH_ROWS, n_features=20, n_informative=10, n_classes=8, random_state=0
        ),
    }
    return {
        name: (zscore(np.asarray(x, dtype=np.float64)), np.asarray(y, dtype=int))
        for name, (x, y) in raw.items()
        if name in names
    }


def run_ours(kind: str, setting: dict[str, Any], x: np.ndarray, y: np.ndarray, seed: int) -> float:
    n_actions = int(y.max()) + 1
    featurizer = Featurizer(
        context_fields=tuple(f"x{j}" for j in range(x.shape[1])),
        candidate_fields=tuple(f"a{k}" for k in range(n_actions)),
    )
    policy = EXPLORERS[kind](featurizer=featurizer, seed=seed, **setting)
    arms = [Arm(str(k), {f"a{k}": 1.0}) for k in range(n_actions)]
    names = [f"x{j}" for j in range(x.shape[1])]
    total = 0.0
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        ctx = dict(zip(names, row, strict=True))
        choice = policy.choose(ctx, arms)
        a = int(choice.chosen_id)
        reward = 1.0 if a == label else 0.0
        policy.learn_one(ctx, arms[a], reward, choice.propensity)
        total += reward
    return total / len(y)


def run_vw(kind: str, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    import vowpalwabbit

    n_actions = int(y.max()) + 1
    vw = vowpalwabbit.Workspace(f"--cb_explore_adf {VW_ARGS[kind]} -q sa --quiet --random_seed {seed}")
    rng = random.Random(seed)
    total = 0.0
    actions = [f"|a a{k}" for k in range(n_actions)]
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        shared = "shared |s " + " ".join(f"x{j}:{v:.6g}" for j, v in enumerate(row))
        pmf = vw.predict([shared, *actions])
        a = rng.choices(range(n_actions), weights=pmf)[0]
        reward = 1.0 if a == label else 0.0
        labelled = list(actions)
        labelled[a] = f"{a}:{1.0 - reward}:{pmf[a]} |a a{a}"  # VW minimises cost = 1 - reward
        vw.learn([shared, *labelled])
        total += reward
    vw.finish()
    return total / len(y)


def run_linucb(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    from mabwiser.mab import MAB, LearningPolicy

    n_actions = int(y.max()) + 1
    mab = MAB(arms=list(range(n_actions)), learning_policy=LearningPolicy.LinUCB(), seed=seed)
    rng = random.Random(seed)
    total = 0.0
    for i in range(len(y)):
        row = x[i : i + 1]
        a = rng.randrange(n_actions) if i == 0 else int(mab.predict(row))
        reward = 1.0 if a == y[i] else 0.0
        if i == 0:
            mab.fit([a], [reward], row)
        else:
            mab.partial_fit([a], [reward], row)
        total += reward
    return total / len(y)


def run_river_per_arm(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    from river import linear_model

    n_actions = int(y.max()) + 1
    models = [linear_model.LogisticRegression() for _ in range(n_actions)]
    rng = random.Random(seed)
    names = [f"x{j}" for j in range(x.shape[1])]
    total = 0.0
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        ctx = dict(zip(names, row, strict=True))
        if rng.random() < RIVER_EPSILON:
            a = rng.randrange(n_actions)
        else:
            probs = [m.predict_proba_one(ctx).get(True, 0.0) for m in models]
            best = max(probs)
            a = rng.choice([k for k, p in enumerate(probs) if p == best])
        reward = 1.0 if a == label else 0.0
        models[a].learn_one(ctx, reward == 1.0)
        total += reward
    return total / len(y)


def learners() -> dict[str, Callable[[np.ndarray, np.ndarray, int], float]]:
    out: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {}
    for kind in EXPLORERS:
        out[f"ours_default_{kind}"] = lambda x, y, s, kind=kind: run_ours(kind, {}, x, y, s)
        out[f"ours_best_{kind}"] = lambda x, y, s, kind=kind: run_ours(kind, BEST_SETTING[kind], x, y, s)
    for kind in VW_ARGS:
        out[kind] = lambda x, y, s, kind=kind: run_vw(kind, x, y, s)
    out["linucb"] = run_linucb
    out["river_per_arm"] = run_river_per_arm
    return out


def bakeoff(names: Sequence[str] = DATASETS) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, (x, y) in datasets(names).items():
        scores: dict[str, list[float]] = {}
        seconds: dict[str, float] = {}
        for s in range(SYNTH_SHUFFLES if name == "synth" else SHUFFLES):
            order = np.random.default_rng(s).permutation(len(y))
            xs, ys = x[order], y[order]
            for learner, run in learners().items():
                t = time.perf_counter()
                scores.setdefault(learner, []).append(run(xs, ys, s))
                seconds[learner] = seconds.get(learner, 0.0) + time.perf_counter() - t
        out[name] = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
        peer = max(v for k, v in out[name].items() if not k.startswith("ours_"))
        default = max(v for k, v in out[name].items() if k.startswith("ours_default_"))
        best = max(v for k, v in out[name].items() if k.startswith("ours_best_"))
        log(f"bakeoff {name}: {out[name]}")
        log(f"  best peer {peer:.4f}, ours default {default:.4f} ({default / peer:.3f}), best {best:.4f}")
        log(f"  seconds { ({k: round(v, 1) for k, v in seconds.items()}) }")
    return out


# -- throughput ------------------------------------------------------------------------------
def _throughput_work() -> tuple[Featurizer, list[Arm], list[dict[str, float]]]:
    rng = random.Random(0)
    context_fields = tuple(n for n in UserContext.model_fields if n != "schema_version")
    candidate_fields = tuple(f"f{j}" for j in range(32))
    featurizer = Featurizer(context_fields=context_fields, candidate_fields=candidate_fields)
    pool = [Arm(f"c{i}", {n: rng.random() for n in candidate_fields}) for i in range(600)]
    contexts = [{n: rng.uniform(0, 6) for n in context_fields} for _ in range(100)]
    return featurizer, pool, contexts


def throughput() -> dict[str, Any]:
    featurizer, pool, contexts = _throughput_work()
    rng = random.Random(1)
    out: dict[str, Any] = {
        "candidates": 30,
        "features_per_candidate": 32,
        "features_per_pair": len(featurizer.feature_names),
    }
    rounds = 5000
    per_explorer = {}
    for name, policy in {
        "epsilon_greedy": EpsilonGreedy(featurizer=featurizer, seed=0),
        "softmax": Softmax(featurizer=featurizer, seed=0),
        "bootstrap_thompson": BootstrapThompson(featurizer=featurizer, seed=0),
    }.items():
        t = time.perf_counter()
        for i in range(rounds):
            start = (i * 37) % 570
            cands = pool[start : start + 30]
            ctx = contexts[i % 100]
            choice = policy.choose(ctx, cands)
            policy.learn_one(ctx, next(c for c in cands if c.candidate_id == choice.chosen_id), rng.random())
        per_explorer[name] = round(rounds / (time.perf_counter() - t))
        log(f"throughput {name}: {per_explorer[name]} rounds/s")
    out["per_explorer_rounds_per_s"] = per_explorer
    out["rounds_per_s"] = per_explorer["epsilon_greedy"]
    out["vw_rounds_per_s"] = throughput_vw(pool, contexts, rounds)
    out["ratio"] = round(out["rounds_per_s"] / out["vw_rounds_per_s"], 2)
    out["note"] = "rounds_per_s: epsilon-greedy at defaults; VW: --cb_explore_adf --epsilon 0.1 -q ca, same rounds"
    log(f"throughput VW: {out['vw_rounds_per_s']} rounds/s; ours / VW = {out['ratio']}")
    return out


def throughput_vw(pool: list[Arm], contexts: list[dict[str, float]], rounds: int) -> int:
    import vowpalwabbit

    rng = random.Random(1)
    vw = vowpalwabbit.Workspace("--cb_explore_adf --epsilon 0.1 -q ca --quiet --random_seed 0")
    t = time.perf_counter()
    for i in range(rounds):
        start = (i * 37) % 570
        cands = pool[start : start + 30]
        ctx = contexts[i % 100]
        shared = "shared |c " + " ".join(f"{k}:{v:.6g}" for k, v in ctx.items())
        actions = ["|a " + " ".join(f"{k}:{v:.6g}" for k, v in c.features.items()) for c in cands]
        pmf = vw.predict([shared, *actions])
        a = rng.choices(range(len(cands)), weights=pmf)[0]
        labelled = list(actions)
        labelled[a] = f"0:{1.0 - rng.random()}:{pmf[a]} {actions[a]}"
        vw.learn([shared, *labelled])
    rate = round(rounds / (time.perf_counter() - t))
    vw.finish()
    return rate


def learner_memory(n: int = 100_000) -> dict[str, Any]:
    """The learner with ``n`` pending decisions: tracked objects, a full collection, a checkpoint."""
    import pickle
    import statistics
    from datetime import UTC, datetime, timedelta
    from uuid import UUID

    from data_contracts import TipCandidate
    from data_contracts.features import CandidateFeatures
    from models.learner import OnlineLearner

    rng = random.Random(0)
    context_fields = [f for f in UserContext.model_fields if f != "schema_version"]
    candidate_fields = [f for f in CandidateFeatures.model_fields if f != "schema_version"]
    learner = OnlineLearner(Softmax(seed=0), window=timedelta(hours=24), default_reward=0.0, max_pending=n)
    gc.collect()
    before = len(gc.get_objects())
    at = datetime(2026, 5, 1, tzinfo=UTC)
    t = time.perf_counter()
    for i in range(n):
        chosen = TipCandidate(
            candidate_id=f"task:{i}",
            content=f"task {i}",
            kind="todoist_task",
            source="todoist",
            features={f: rng.random() for f in candidate_fields},
        )
        context = {f: rng.random() for f in context_fields}
        learner.observe(UUID(int=rng.getrandbits(128)), context, chosen, at + timedelta(seconds=i))
    observe_us = (time.perf_counter() - t) / n * 1e6
    del chosen, context
    gc.collect()
    tracked = len(gc.get_objects()) - before
    collections = []
    for _ in range(5):
        t = time.perf_counter()
        gc.collect()
        collections.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    data = pickle.dumps(learner.checkpoint_copy(), protocol=pickle.HIGHEST_PROTOCOL)
    checkpoint_ms = (time.perf_counter() - t) * 1000
    out = {
        "pending_decisions": learner.pending,
        "candidate_features": len(candidate_fields),
        "context_features": len(context_fields),
        "tracked_objects_added": tracked,
        "full_collection_ms": round(statistics.median(collections), 1),
        "observe_us_per_decision": round(observe_us, 1),
        "checkpoint_pickle_ms": round(checkpoint_ms),
        "checkpoint_bytes": len(data),
    }
    log(f"learner memory: {out}")
    return out


PARTS = [p for p in os.environ.get("BENCH_PARTS", "throughput,learner_memory,bakeoff,simulator").split(",") if p]
"""The parts to run; a part not run keeps its previous results in the file."""


def main() -> None:
    """Run the parts, updating the results file after each (a long run keeps what it finished)."""
    t = time.perf_counter()
    done: dict[str, Any] = {}

    def save() -> None:
        previous = json.loads(OUT.read_text()) if OUT.exists() else {}
        previous = previous if isinstance(previous, dict) else {}
        if "bakeoff" in done:
            done["bakeoff"] = {**previous.get("bakeoff", {}), **done["bakeoff"]}
        if "bakeoff_runs" in done:
            done["bakeoff_runs"] = {**previous.get("bakeoff_runs", {}), **done["bakeoff_runs"]}
        result = {**previous, **done}
        result["machine"] = {"python": platform.python_version(), "cpu_count": os.cpu_count()}
        result["best_setting"] = BEST_SETTING
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n")

    if "throughput" in PARTS:
        done["throughput"] = throughput()
        save()
    if "learner_memory" in PARTS:
        done["learner_memory"] = learner_memory()
        save()
    if "bakeoff" in PARTS:
        done["bakeoff"], done["bakeoff_runs"] = {}, {}
        for name in [n for n in DATASETS if not ONLY or n in ONLY]:
            done["bakeoff"].update(bakeoff([name]))
            rows = SYNTH_ROWS if name == "synth" else None
            shuffles = SYNTH_SHUFFLES if name == "synth" else SHUFFLES
            done["bakeoff_runs"][name] = {"shuffles": shuffles, **({"rows": rows} if rows else {})}
            save()
    if "simulator" in PARTS:
        done["simulator"] = simulator()
        save()
    log(f"updated {OUT} ({', '.join(PARTS)}) in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
