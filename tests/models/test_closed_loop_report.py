"""The closed-loop report's off-policy section, on a stand-in lake and registry: the estimate of
record is the gate slice's (the slice that chose nothing), not the selection slice's, and the
simulator's truth on that slice separates the estimator's error from what changed live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from data_contracts import TrainingExample
from data_contracts.arrow import to_table
from models.closed_loop import LoopConfig, LoopRun, Served
from models.closed_loop_report import build_report
from models.policies import UniformRandom
from models.simulation import Simulator

START = datetime(2030, 3, 4, tzinfo=UTC)


class Lake:
    """The two datasets the report reads; no feature skew."""

    def __init__(self, decisions: list[dict[str, Any]], examples: list[TrainingExample]) -> None:
        self.decisions, self.examples = decisions, examples

    def read(self, name: str, **_: Any) -> pa.Table:
        if name == "decisions":
            return pa.Table.from_pylist(self.decisions)
        assert name == "training_examples"
        return to_table(TrainingExample, self.examples)

    def files(self, name: str) -> list[Path]:
        return []


def promoted_run(tmp_path: Path, served: list[Served], users: int, days: int, at: datetime) -> LoopRun:
    """A run whose version 7 was promoted on day 0 at ``at``."""
    return LoopRun(
        config=LoopConfig(users=users, days=days, seed=0, var_dir=tmp_path),
        start=START,
        served=served,
        days=[{"training": {"gate": "promoted: ..."}}],
        promotions=[{"day": 0, "at": at.isoformat(), "version": "7"}],
    )


def registry(metrics: dict[str, float], tags: dict[str, str]) -> Any:
    run = SimpleNamespace(data=SimpleNamespace(metrics=metrics, tags=tags))
    client = SimpleNamespace(
        get_model_version=lambda name, version: SimpleNamespace(run_id="run-1"), get_run=lambda run_id: run
    )
    return SimpleNamespace(model_name="tip-policy", client=client, load=lambda version: UniformRandom(seed=0))


def test_the_estimate_of_record_is_the_gate_slices_and_the_truth_on_that_slice_is_reported(tmp_path: Path) -> None:
    sim = Simulator(n_users=4, seed=2, start=START)
    examples = sim.log(UniformRandom(seed=2), 40)  # the gate slice: logged by a uniform policy
    served: list[Served] = []
    decisions: list[dict[str, Any]] = []
    truths = []
    for e in examples:  # before the promotion: the baseline's decisions, day 0
        values = {c.candidate_id: 0.1 * (k + 1) for k, c in enumerate(e.candidates)}
        truths.append(sum(values.values()) / len(values))  # the promoted policy is uniform here
        served.append(Served(0, e.decided_at, e.user_id, str(e.decision_id), e.chosen_id, "done", 1.0, 0.3, values))
        decisions.append(
            {
                "decision_id": str(e.decision_id),
                "policy": "rule_based",
                "policy_version": "rule-baseline/1",
                "candidates": [{"candidate_id": c.candidate_id} for c in e.candidates],
                "propensity": e.propensity,
            }
        )
    for i in range(40):  # after it: the promoted version's live decisions, days 1 and 2
        user = f"u{i % 4}"
        decision = f"live-{i}"
        served.append(
            Served(
                1 + i % 2,
                START + timedelta(days=1),
                user,
                decision,
                "a",
                "done" if i % 2 else "dismiss",
                float(i % 2),
                0.45,
                {"a": 0.45, "b": 0.5},
            )  # fmt: skip
        )
        decisions.append(
            {
                "decision_id": decision,
                "policy": "epsilon_greedy",
                "policy_version": "7",
                "candidates": [{"candidate_id": "a"}, {"candidate_id": "b"}],
                "propensity": 0.9,
            }
        )
    run = promoted_run(tmp_path, served, users=4, days=3, at=START)
    first, last = min(e.decided_at for e in examples), max(e.decided_at for e in examples)
    metrics = {"dr": 0.9, "dr_low": 0.85, "dr_high": 0.95, "gate_challenger": 0.52, "gate_challenger_low": 0.4,
               "gate_challenger_high": 0.62, "gate_ess": 150.0, "gate_n_decisions": 40.0}  # fmt: skip
    tags = {"gate.slice_start": first.isoformat(), "gate.slice_end": last.isoformat()}

    report = build_report(run, Lake(decisions, examples), registry(metrics, tags))

    ope = report["ope"]
    assert ope["estimate"]["slice"] == "gate"
    assert (ope["estimate"]["estimate"], ope["estimate"]["low"], ope["estimate"]["high"]) == (0.52, 0.4, 0.62)
    assert ope["estimate"]["dr"] == 0.9  # the selection slice's, kept for comparison, not the estimate
    assert ope["live_reward"]["mean"] == pytest.approx(0.5) and ope["live_reward"]["decisions"] == 40
    assert ope["live_expected_reward"]["mean"] == pytest.approx(0.45)
    truth = ope["truth_on_gate_slice"]
    assert truth["decisions"] == len(examples)
    assert truth["truth"] == pytest.approx(sum(truths) / len(truths))
    # the live mean 0.5 lies in [0.4, 0.62]; the estimate 0.52 lies in the live interval (it is wide)
    assert report["checks"]["ope_within_interval"] is True
    assert report["checks"]["ope_estimate_within_live_interval"] is (
        ope["live_reward"]["low"] <= 0.52 <= ope["live_reward"]["high"]
    )


def test_a_run_logged_before_the_gate_kept_its_interval_falls_back_to_the_selection_slice(tmp_path: Path) -> None:
    run = LoopRun(
        config=LoopConfig(users=1, days=2, seed=0, var_dir=tmp_path),
        start=START,
        served=[Served(1, START, "u", "d", "a", "done", 1.0, 0.5, {"a": 0.5})],
        days=[],
        promotions=[{"day": 0, "at": START.isoformat(), "version": "3"}],
    )
    decisions = [
        {"decision_id": "d", "policy": "softmax", "policy_version": "3", "candidates": [{"candidate_id": "a"}],
         "propensity": 1.0}
    ]  # fmt: skip
    report = build_report(run, Lake(decisions, []), registry({"dr": 0.7, "dr_low": 0.6, "dr_high": 0.8}, {}))
    estimate = report["ope"]["estimate"]
    assert (estimate["slice"], estimate["estimate"], estimate["low"], estimate["high"]) == ("selection", 0.7, 0.6, 0.8)
    assert report["ope"]["truth_on_gate_slice"] is None


def test_the_estimate_of_record_is_the_unselected_one_on_decisions_no_gate_saw(tmp_path: Path) -> None:
    sim = Simulator(n_users=6, seed=3, start=START)
    examples = sim.log(UniformRandom(seed=3), 160)  # the baseline's logs, in time order
    gated, unseen = examples[:60], examples[60:]  # the gate slice, then what came before the promotion
    promoted_at = max(e.decided_at for e in examples) + timedelta(minutes=1)
    served: list[Served] = []
    decisions: list[dict[str, Any]] = []
    for e in examples:
        values = {c.candidate_id: 0.1 * (k + 1) for k, c in enumerate(e.candidates)}
        served.append(
            Served(0, e.decided_at, e.user_id, str(e.decision_id), e.chosen_id, "done", e.reward, 0.3, values)
        )
        decisions.append({"decision_id": str(e.decision_id), "policy": "rule_based",
                          "policy_version": "rule-baseline/1",
                          "candidates": [{"candidate_id": c.candidate_id} for c in e.candidates],
                          "propensity": e.propensity})  # fmt: skip
    for i in range(30):  # the promoted version live, after it
        served.append(Served(1, promoted_at, f"user_{i % 6}", f"live-{i}", "a", "done", 1.0, 0.5, {"a": 0.5}))
        decisions.append({"decision_id": f"live-{i}", "policy": "softmax", "policy_version": "7",
                          "candidates": [{"candidate_id": "a"}], "propensity": 1.0})  # fmt: skip
    run = promoted_run(tmp_path, served, users=6, days=2, at=promoted_at)
    tags = {"gate.slice_start": gated[0].decided_at.isoformat(), "gate.slice_end": gated[-1].decided_at.isoformat()}
    metrics = {"gate_challenger": 0.9, "gate_challenger_low": 0.85, "gate_challenger_high": 0.95}

    report = build_report(run, Lake(decisions, examples), registry(metrics, tags))

    ope, unselected = report["ope"], report["ope"]["unselected"]
    assert ope["estimate_of_record"] == "unselected"
    assert unselected["decisions"] == len(unseen) and unselected["level"] == 0.95
    assert unselected["span"][0] == unseen[0].decided_at.isoformat()
    assert unselected["logged_reward"] == pytest.approx(sum(e.reward for e in unseen) / len(unseen))
    assert unselected["low"] < unselected["estimate"] < unselected["high"]
    assert unselected["truth"] == pytest.approx(
        sum(sum(0.1 * (k + 1) for k in range(len(e.candidates))) / len(e.candidates) for e in unseen) / len(unseen)
    )
    # the checks use it, not the gate slice's 0.9
    live = ope["live_reward"]
    assert report["checks"]["ope_within_interval"] is (unselected["low"] <= live["mean"] <= unselected["high"])


def test_the_live_difference_pairs_each_users_decisions_before_and_after() -> None:
    from models.closed_loop_report import _diff_ci, _paired_diff_ci

    # users differ a lot; each one gains 0.1 after the promotion
    before = {f"u{i}": [0.1 * i] * 20 for i in range(10)}
    after = {f"u{i}": [0.1 * i + 0.1] * 20 for i in range(10)}
    paired, unpaired = _paired_diff_ci(after, before, seed=0), _diff_ci(after, before, seed=0)
    assert paired[0] == pytest.approx(0.1) and unpaired[0] == pytest.approx(0.1)
    assert paired[1] == pytest.approx(0.1) and paired[2] == pytest.approx(0.1)  # no spread left
    assert unpaired[1] < 0 < unpaired[2]  # the users' spread drowns it when the sides are resampled apart


@pytest.mark.parametrize(("promoted_expected", "beats"), [(0.8, True), (0.3, False)])
def test_with_a_control_group_the_promoted_policy_is_compared_on_the_same_days_and_estimated_on_its_logs(
    tmp_path: Path, promoted_expected: float, beats: bool
) -> None:
    """The world was kinder before the promotion (every reaction 'done'); after it, the promoted
    policy and the baseline's control group share the same days: the comparison is the control
    group's (a before/after one would see no gain), and the estimate of record is the promoted
    policy's DR on the control group's logs, which no gate saw. Whether it beats the baseline is
    the simulator's truth (the exact expected rewards of the same decisions), not the luck of the
    draws: a realized win of choices no better in expectation than the control group's is none."""
    promoted_at = START + timedelta(hours=23)
    sim = Simulator(n_users=6, seed=4, start=START + timedelta(days=1))
    control = [
        e.model_copy(update={"policy": "rule_based", "policy_version": "rule-baseline/1"})
        for e in sim.log(UniformRandom(seed=4), 120)
    ]
    served: list[Served] = []
    decisions: list[dict[str, Any]] = []

    def add(s: Served, policy: str, version: str, candidates: list[str], propensity: float) -> None:
        served.append(s)
        cands = [{"candidate_id": c} for c in candidates]
        decisions.append({"decision_id": s.decision_id, "policy": policy, "policy_version": version,
                          "candidates": cands, "propensity": propensity})  # fmt: skip

    for i in range(60):  # before: the baseline, every task done
        add(Served(0, START, f"user_{i % 6}", f"before-{i}", "a", "done", 1.0, 0.8, {"a": 0.8}), "rule_based",
            "rule-baseline/1", ["a"], 1.0)  # fmt: skip
    for e in control:  # after: the control group, on the same days as the promoted policy
        values = {c.candidate_id: 0.3 for c in e.candidates}
        ids = [c.candidate_id for c in e.candidates]
        add(Served(1, e.decided_at, e.user_id, str(e.decision_id), e.chosen_id, e.reaction.value, e.reward, 0.3,
                   values), "rule_based", "rule-baseline/1", ids, e.propensity)  # fmt: skip
    for i in range(120):  # after: the promoted version, every task done
        add(Served(1, promoted_at + timedelta(hours=2), f"user_{i % 6}", f"live-{i}", "a", "done", 1.0,
                   promoted_expected, {"a": promoted_expected}), "softmax", "7", ["a"], 1.0)  # fmt: skip
    run = promoted_run(tmp_path, served, users=6, days=2, at=promoted_at)
    metrics = {"gate_challenger": 0.9, "gate_challenger_low": 0.85, "gate_challenger_high": 0.95}

    report = build_report(run, Lake(decisions, control), registry(metrics, {}))

    versus = report["promoted_vs_baseline"]
    assert versus["compared_with"] == "control" and versus["baseline_decisions"] == len(control)
    logged = sum(e.reward for e in control) / len(control)
    assert versus["reward_difference"]["value"] == pytest.approx(1.0 - logged)
    assert versus["reward_difference_before_after"]["value"] == pytest.approx(0.0)
    assert versus["reward_difference_significant"] is True
    assert versus["expected_reward_difference"]["value"] == pytest.approx(promoted_expected - 0.3)
    assert report["checks"]["beats_baseline"] is beats
    ope, on_control = report["ope"], report["ope"]["control"]
    assert ope["estimate_of_record"] == "control" and on_control["decisions"] == len(control)
    assert on_control["logged_reward"] == pytest.approx(logged)  # the uniform policy evaluated on uniform logs
    live = ope["live_reward"]
    assert report["checks"]["ope_within_interval"] is (on_control["low"] <= live["mean"] <= on_control["high"])
