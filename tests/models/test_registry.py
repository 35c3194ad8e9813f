"""MLflow registry: one run per candidate, `@challenger` on the best, and the `@champion` gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.evaluation import evaluate_policy
from models.policies import EpsilonGreedy, PolicyFormatError, UniformRandom, default_model
from models.simulation import Simulator
from models.training import CandidateSpec, TrainedCandidate, TrainingOutcome, split, train_candidates, warm_start
from oo.settings import MlflowSettings, Settings, TrainingSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def examples():  # type: ignore[no-untyped-def]
    return Simulator(n_users=10, seed=11).log(UniformRandom(seed=11), 1500)


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    from models.registry import Registry

    settings = Settings(
        mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=tmp_path / "artifacts"),
        training=TrainingSettings(n_bootstrap=200),
    )
    return Registry(settings)


class Inverted(EpsilonGreedy):
    """A policy that learns the opposite of the reward: it prefers what users dislike."""

    def learn_one(self, x, candidate, reward):  # type: ignore[no-untyped-def]
        super().learn_one(x, candidate, 1.0 - reward)


def good_and_bad(examples):  # type: ignore[no-untyped-def]
    good = train_candidates(examples, grid=[CandidateSpec("softmax", 0.05, 0.05)], n_bootstrap=200)
    train, _ = split(examples, 0.3)
    bad_policy = warm_start(Inverted(epsilon=0.05, floor=0.01, seed=0, model=default_model(0.05)), train)
    bad_report = evaluate_policy(bad_policy, good.holdout, q=good.q, n_bootstrap=200)
    bad = TrainingOutcome(
        candidates=[TrainedCandidate(CandidateSpec("epsilon_greedy", 0.05, 0.05), bad_policy, bad_report, len(train))],
        holdout=good.holdout,
        q=good.q,
    )
    return good, bad


def test_gate_refuses_a_worse_challenger_and_promotes_a_better_one(registry, examples) -> None:  # type: ignore[no-untyped-def]
    good, bad = good_and_bad(examples)
    assert good.best.report.dr.low > bad.best.report.dr.high  # the set-up: one is clearly better

    first = registry.register_outcome(bad, interval_key="i1", n_examples=len(examples))
    assert not first["promoted"] and registry.version_for("champion") is None
    assert "logged policy" in first["gate"]
    assert registry.version_for("challenger") == first["challenger"]

    second = registry.register_outcome(good, interval_key="i2", n_examples=len(examples))
    assert second["promoted"] and registry.version_for("champion") == second["challenger"]

    third = registry.register_outcome(bad, interval_key="i3", n_examples=len(examples))
    assert not third["promoted"]
    assert "champion" in third["gate"] and "does not beat" in third["gate"]
    assert registry.version_for("challenger") == third["challenger"]
    assert registry.version_for("champion") == second["challenger"]  # unchanged

    run = registry.client.get_run(third["runs"][0])
    assert run.data.tags["gate.decision"] == "refused"
    assert {"ips", "ips_low", "snips_high", "dr", "dr_low", "dr_high", "gate_reference"} <= set(run.data.metrics)
    assert registry.summary_for_interval("i3") == third

    champion = registry.load("champion")
    holdout = good.holdout[0]
    assert champion.probabilities(holdout.context, holdout.candidates) == good.best.policy.probabilities(
        holdout.context, holdout.candidates
    )


def test_runs_log_params_features_plot_and_the_pickled_policy(registry, examples, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    outcome = train_candidates(examples, grid=[CandidateSpec("bootstrap_thompson", 0.05, 4)], n_bootstrap=100)
    summary = registry.register_outcome(outcome, interval_key="j", n_examples=len(examples), skew={"priority": 0.01})
    run = registry.client.get_run(summary["runs"][0])
    assert run.data.params["explorer"] == "bootstrap_thompson" and "skew_priority" in run.data.metrics
    artifacts = {a.path for a in registry.client.list_artifacts(run.info.run_id)}
    assert {"features.json", "ope.png"} <= artifacts
    assert str(tmp_path / "artifacts") in run.info.artifact_uri  # pinned, not ./mlruns
    features = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/features.json")["features"]
    assert "priority*done_rate_28d" in features


def test_a_policy_pickled_by_other_code_fails_to_load_clearly(registry, examples, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    outcome = train_candidates(examples, grid=[CandidateSpec("epsilon_greedy", 0.05, 0.1)], n_bootstrap=100)
    summary = registry.register_outcome(outcome, interval_key="k", n_examples=len(examples))
    registry.client.set_registered_model_alias(registry.model_name, "champion", summary["challenger"])
    import models.policies.base as base

    monkeypatch.setattr(base, "POLICY_FORMAT", base.POLICY_FORMAT + 1)
    with pytest.raises(PolicyFormatError, match="retrain"):
        registry.load("challenger")
    # a champion written by other code cannot be re-evaluated: the gate falls back to the logged policy
    decision = registry.gate("999", outcome.best.report, outcome)
    assert "unloadable" in decision.reason and decision.reference == outcome.best.report.logged
