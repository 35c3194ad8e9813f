"""MLflow registry: one run per candidate, `@challenger` on the best, the `@champion` gate, identity."""

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
    return Simulator(n_users=30, seed=11).log(UniformRandom(seed=11), 3000)


def make_registry(tmp_path: Path, **training: object):  # type: ignore[no-untyped-def]
    from models.registry import Registry

    settings = Settings(
        mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=tmp_path / "artifacts"),
        training=TrainingSettings(**{"n_bootstrap": 200, "gate_min_ess": 50, "gate_level": 0.9, **training}),  # type: ignore[arg-type]
    )
    return Registry(settings)


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_registry(tmp_path)


class Inverted(EpsilonGreedy):
    """A policy that learns the opposite of the reward: it prefers what users dislike."""

    def learn_one(self, x, candidate, reward):  # type: ignore[no-untyped-def]
        super().learn_one(x, candidate, 1.0 - reward)


@pytest.fixture(scope="module")
def good_and_bad(examples):  # type: ignore[no-untyped-def]
    good = train_candidates(examples, grid=[CandidateSpec("softmax", 0.05, 0.05)], n_bootstrap=200)
    train, _ = split(examples, 0.3)
    bad_policy = warm_start(Inverted(epsilon=0.05, floor=0.01, seed=0, model=default_model(0.05)), train)
    bad_report = evaluate_policy(bad_policy, good.selection, n_bootstrap=200)
    bad = TrainingOutcome(
        candidates=[TrainedCandidate(CandidateSpec("epsilon_greedy", 0.05, 0.05), bad_policy, bad_report, len(train))],
        selection=good.selection,
        gated=good.gated,
    )
    return good, bad


def test_gate_promotes_a_better_challenger_and_refuses_a_worse_one_on_the_later_slice(registry, good_and_bad) -> None:  # type: ignore[no-untyped-def]
    good, bad = good_and_bad
    assert max(d.decided_at for d in good.selection) <= min(d.decided_at for d in good.gated)  # two slices in time

    first = registry.register_outcome(bad, interval_key="i1", n_examples=1)
    assert not first["promoted"] and registry.version_for("champion") is None
    assert first["gate"].startswith("refused") and "challenger - logged policy" in first["gate"]
    assert first["evidence"]["gate_difference_high"] < 0  # measurably worse than what was logged
    assert registry.version_for("challenger") == first["challenger"]

    second = registry.register_outcome(good, interval_key="i2", n_examples=1)
    assert second["promoted"] and registry.version_for("champion") == second["challenger"]
    assert second["evidence"]["gate_difference_low"] > 0 and second["evidence"]["gate.reference"] == "logged policy"

    third = registry.register_outcome(bad, interval_key="i3", n_examples=1)
    assert not third["promoted"] and third["gate"].startswith("refused")
    assert third["evidence"]["gate.reference"] == f"champion v{second['challenger']}"
    assert third["evidence"]["gate_difference_high"] < 0
    assert registry.version_for("challenger") == third["challenger"]
    assert registry.version_for("champion") == second["challenger"]  # unchanged

    run = registry.client.get_run(third["runs"][0])
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["gate.decision"] == "refused" and tags["gate.reason"] == third["gate"]
    assert tags["gate.metric"] == "dr" and tags["gate.weight_clip"] == "None"
    assert tags["gate.slice_start"] == min(d.decided_at for d in good.gated).isoformat()
    assert tags["gate.selection_end"] == max(d.decided_at for d in good.selection).isoformat()
    assert metrics["gate_n_users"] == len({d.user_id for d in good.gated}) and metrics["gate_ess"] >= 50
    assert metrics["gate_difference_low"] <= metrics["gate_difference"] <= metrics["gate_difference_high"]
    assert {"ips", "ips_low", "snips_high", "dr", "dr_low", "dr_high", "ess", "max_weight"} <= set(metrics)
    assert registry.summary_for_interval("i3") == third

    champion = registry.load("champion")
    d = good.gated[0]
    assert champion.probabilities(d.context, d.candidates) == good.best.policy.probabilities(d.context, d.candidates)


def test_too_little_evidence_is_refused_whatever_the_difference(tmp_path: Path, good_and_bad) -> None:  # type: ignore[no-untyped-def]
    good, _ = good_and_bad
    strict = make_registry(tmp_path, gate_min_ess=10_000)
    summary = strict.register_outcome(good, interval_key="e", n_examples=1)
    assert not summary["promoted"] and summary["gate"].startswith("not enough evidence: effective sample size")
    assert summary["evidence"]["gate_difference_low"] > 0  # it would have passed on the difference alone
    assert strict.version_for("champion") is None


def test_a_registered_policy_carries_its_version_and_decisions_log_it(registry, good_and_bad) -> None:  # type: ignore[no-untyped-def]
    good, _ = good_and_bad
    assert good.best.policy.version == "dev"  # never registered
    summary = registry.register_outcome(good, interval_key="v", n_examples=1)
    version = summary["challenger"]
    for name in ("challenger", version):
        assert registry.load(name).version == f"tip-policy/{version}"
    sim = Simulator(n_users=2, seed=1)
    policy = registry.load("challenger")
    rnd = sim.next_round()
    choice = policy.choose(rnd.context, rnd.candidates)
    decision = sim.records(rnd, choice, sim.react(rnd, choice.chosen_id), policy)[0]
    assert decision.policy_version == f"tip-policy/{version}"
    with pytest.raises(LookupError, match="no @nobody alias"):
        registry.load("nobody")
    with pytest.raises(LookupError, match="no version 99"):
        registry.load("99")


def test_runs_log_params_features_plot_and_the_pickled_policy(tmp_path: Path, examples) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    registry = make_registry(tmp_path, weight_clip=20.0)
    outcome = train_candidates(
        examples[:1500], grid=[CandidateSpec("bootstrap_thompson", 0.05, 4)], n_bootstrap=100, clip=20.0
    )
    summary = registry.register_outcome(
        outcome, interval_key="j", n_examples=1500, skew={"priority": 0.01}, examples=examples[:1500]
    )
    run = registry.client.get_run(summary["runs"][0])
    assert run.data.params["explorer"] == "bootstrap_thompson" and "skew_priority" in run.data.metrics
    assert run.data.params["ope_weight_clip"] == "20.0" and run.data.params["ope_slice"] == "selection"
    assert run.data.metrics["max_weight"] > 0 and "n_clipped" in run.data.metrics
    artifacts = {a.path for a in registry.client.list_artifacts(run.info.run_id)}
    assert {"features.json", "ope.png"} <= artifacts
    assert str(tmp_path / "artifacts") in run.info.artifact_uri  # pinned, not ./mlruns
    features = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/features.json")["features"]
    assert "priority*done_rate_28d" in features
    # the challenger's run keeps the training set's lineage: which decisions, of which users
    import pyarrow.parquet as pq

    from models.registry import TRAINING_SET

    lineage = pq.read_table(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/{TRAINING_SET}"))
    assert lineage.num_rows == 1500
    assert lineage["decision_id"].to_pylist() == [str(e.decision_id) for e in examples[:1500]]
    assert set(lineage["user_id"].to_pylist()) == {e.user_id for e in examples[:1500]}


def test_a_policy_pickled_by_other_code_fails_to_load_clearly(registry, examples, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    outcome = train_candidates(examples[:1500], grid=[CandidateSpec("epsilon_greedy", 0.05, 0.1)], n_bootstrap=100)
    summary = registry.register_outcome(outcome, interval_key="k", n_examples=1500)
    registry.client.set_registered_model_alias(registry.model_name, "champion", summary["challenger"])
    import models.policies.base as base

    monkeypatch.setattr(base, "POLICY_FORMAT", base.POLICY_FORMAT + 1)
    with pytest.raises(PolicyFormatError, match="retrain"):
        registry.load("challenger")
    # a champion written by other code cannot be re-evaluated: the gate falls back to the logged policy
    evidence = registry.gate("999", outcome)
    assert evidence.reference == f"logged policy (champion v{summary['challenger']} unloadable)"
    assert evidence.difference is not None
    assert evidence.difference.reference == pytest.approx(sum(d.reward for d in outcome.gated) / len(outcome.gated))


def test_training_on_too_few_examples_to_split_skips_instead_of_raising(tmp_path: Path, examples) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from models.policy_training import train_and_register
    from oo.lake import Lake

    lake = Lake(tmp_path / "lake")
    few = examples[:3]  # at min_examples 2, three examples leave no held-out pair to select and gate on
    lake.write("training_examples", few)
    settings = make_registry(tmp_path, min_examples=2).settings
    end = max(e.decided_at for e in few) + timedelta(seconds=1)
    out = train_and_register(end, settings=settings, lake=lake)
    assert out == {"interval_end": end.isoformat(), "examples": 3, "trained": 0, "promoted": False}
