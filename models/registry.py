"""The MLflow side of training: one run per candidate, the ``tip-policy`` model, and its aliases.

This and :mod:`models.tracking_erasure` (a user's rows in logged artifacts) are the only modules
that import MLflow. Tracking goes to ``Settings.mlflow_tracking_uri``
(SQLite under ``var/`` by default); the experiment is created with its artifact location
pinned under ``Settings.mlflow_artifact_root`` (MLflow would otherwise write to ``./mlruns``).

Every candidate run logs its parameters (with the weight clip of its estimates), IPS / SNIPS /
DR on the selection slice with their intervals, effective sample size and largest weight, skew
metrics when given, the feature list, a plot of the estimates, and the policy itself as a pyfunc
model whose artifact is the versioned pickle of :func:`models.policies.dumps`. Each is
registered as a version of ``tip-policy``; ``@challenger`` moves to the best on the selection
slice, and its run also logs the training set's lineage (``TRAINING_SET``: decision and user
ids). ``@champion`` moves only when :func:`models.gate.gate` promotes the challenger on the
later gate slice: the paired cluster-bootstrap difference against the champion (or, with no
champion or one pickled by other code, the logged policy) is above the margin, with enough
evidence. The evidence (difference, interval, ESS, users, slice dates, decision, reason) is
logged on the challenger's run as ``gate.*`` tags and ``gate_*`` metrics.

A policy loaded from the registry (:meth:`Registry.load`, by alias or version) carries
``tip-policy/<version>`` as its ``version``, which every decision it makes logs; ``dev`` is
left to policies that were never registered.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from data_contracts import TrainingExample
from models.evaluation import OffPolicyReport, features_of, target_distributions
from models.gate import GateEvidence, GateRule, span
from models.gate import gate as run_gate
from models.policies.base import RIVER_VERSION, Policy, PolicyFormatError, dumps, loads
from models.training import TrainedCandidate, TrainingOutcome

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
TRAINING_SET = "training_set/examples.parquet"
"""Where a challenger's run logs the keys of the examples it was trained on."""


class PolicyPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A pyfunc wrapper so ``models:/tip-policy@champion`` loads anywhere; ``.policy`` is the policy."""

    policy: Policy

    def load_context(self, context: Any) -> None:
        """Read the versioned pickle (fails clearly when written by other code)."""
        self.policy = loads(Path(context.artifacts["policy"]).read_bytes())

    def predict(self, context: Any, model_input: list[dict[str, Any]], params: dict[str, Any] | None = None) -> Any:
        """Rows ``{"context": {...}, "candidates": [{"candidate_id", "features"}]}`` -> ranked ids."""
        from models.policies.base import Arm

        out = []
        for row in model_input:
            arms = [Arm(c["candidate_id"], c.get("features", {})) for c in row["candidates"]]
            out.append(self.policy.rank(row.get("context", {}), arms))
        return out


def _plot(report: OffPolicyReport, title: str, path: Path) -> None:
    names = ["ips", "snips", "dr"]
    est = [getattr(report, n) for n in names]
    # A Figure of its own (no pyplot): no global backend is chosen for whoever imports this module.
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.errorbar(
        names,
        [e.value for e in est],
        yerr=[[e.value - e.low for e in est], [e.high - e.value for e in est]],
        fmt="o",
        capsize=4,
    )
    ax.axhline(report.logged, linestyle="--", color="grey", label="logged policy")
    ax.set_ylabel("estimated reward")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


class Registry:
    """MLflow tracking and registry for tip policies, configured from the settings."""

    def __init__(self, settings: Any = None) -> None:
        from oo.settings import get_settings

        self.settings = settings or get_settings()
        self.model_name: str = self.settings.mlflow.model_name
        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        self.client = MlflowClient(tracking_uri=self.settings.mlflow_tracking_uri)
        self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        name = self.settings.mlflow.experiment
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = self.settings.mlflow_artifact_root / name
        location.mkdir(parents=True, exist_ok=True)
        try:
            return str(self.client.create_experiment(name, artifact_location=location.as_uri()))
        except MlflowException:  # created concurrently by another process: use theirs
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    # -- runs --------------------------------------------------------------------------------
    def log_candidate(
        self,
        candidate: TrainedCandidate,
        interval_key: str,
        skew: Mapping[str, float] | None = None,
    ) -> tuple[str, str]:
        """Log one candidate's run and register it; returns ``(run_id, model version)``."""
        policy = candidate.policy
        featurizer = getattr(policy, "featurizer", None)
        features = list(getattr(featurizer, "feature_names", []))
        with (
            tempfile.TemporaryDirectory() as tmp,
            mlflow.start_run(experiment_id=self.experiment_id, run_name=candidate.spec.name) as run,
        ):
            params = {
                **asdict(candidate.spec),
                **policy.params(),
                "n_train": candidate.n_train,
                "ope_slice": "selection",
                "ope_weight_clip": candidate.report.dr.clip,
            }
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics({k: v for k, v in candidate.report.metrics().items() if math.isfinite(v)})
            if skew:
                mlflow.log_metrics({f"skew_{k}": float(v) for k, v in skew.items()})
            mlflow.set_tags({"oo.interval_end": interval_key, "oo.policy": policy.name})
            mlflow.log_dict({"features": features}, "features.json")
            plot = Path(tmp) / "ope.png"
            _plot(candidate.report, candidate.spec.name, plot)
            mlflow.log_artifact(str(plot))
            pickled = Path(tmp) / "policy.pkl"
            pickled.write_bytes(dumps(policy))
            info = mlflow.pyfunc.log_model(
                name="policy",
                python_model=PolicyPyfunc(),
                artifacts={"policy": str(pickled)},
                pip_requirements=[f"river=={RIVER_VERSION}"],
            )
            run_id = run.info.run_id
        version = mlflow.register_model(info.model_uri, self.model_name, tags={"run_id": run_id})
        self.client.set_model_version_tag(self.model_name, version.version, "dr", str(candidate.report.dr.value))
        return run_id, str(version.version)

    def summary_for_interval(self, interval_key: str) -> dict[str, Any] | None:
        """The summary logged for ``interval_key`` by an earlier run of the task, if any."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`oo.interval_end` = '{interval_key}' AND tags.`oo.summary` != ''",
            max_results=1,
        )
        if not runs:
            return None
        summary: dict[str, Any] = json.loads(runs[0].data.tags["oo.summary"])
        return summary

    # -- aliases -----------------------------------------------------------------------------
    def version_for(self, alias: str) -> str | None:
        """The model version behind ``alias``, or ``None``."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def resolve(self, alias_or_version: str) -> str:
        """The model version an alias (``champion``) or a version (``"3"``) names; a clear error when none."""
        if alias_or_version.isdigit():
            try:
                self.client.get_model_version(self.model_name, alias_or_version)
            except MlflowException as exc:
                raise LookupError(f"{self.model_name} has no version {alias_or_version}") from exc
            return alias_or_version
        version = self.version_for(alias_or_version)
        if version is None:
            raise LookupError(f"{self.model_name} has no @{alias_or_version} alias")
        return version

    def load(self, alias_or_version: str = CHAMPION) -> Policy:
        """The policy behind ``models:/tip-policy@<alias>`` (or ``/<version>``), carrying its identity.

        The alias is resolved to its version first, and the policy's ``version`` becomes
        ``tip-policy/<version>``, what each of its decisions logs. A pickle written by other code
        fails with :class:`~models.policies.base.PolicyFormatError`.
        """
        version = self.resolve(alias_or_version)
        model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        wrapper = model.unwrap_python_model()
        policy: Policy = wrapper.policy
        policy.version = f"{self.model_name}/{version}"
        return policy

    def gate(self, challenger_version: str, outcome: TrainingOutcome) -> GateEvidence:
        """Gate the challenger (``outcome.best``) against the champion on the gate slice."""
        rule = GateRule.from_settings(self.settings.training)
        champion_version = self.version_for(CHAMPION)
        logs = outcome.gated
        challenger = outcome.best.policy
        reference: list[dict[str, float]] | None = None
        name = "logged policy"
        if champion_version is not None:
            try:
                champion = self.load(CHAMPION)
            except PolicyFormatError as exc:  # written by other code: it cannot be re-evaluated here
                log.warning("champion v%s cannot be loaded (%s); gating on the logged policy", champion_version, exc)
                name = f"logged policy (champion v{champion_version} unloadable)"
            else:
                reference = target_distributions(champion, logs)
                name = f"champion v{champion_version}"
        if challenger_version == champion_version:
            return GateEvidence(False, f"v{challenger_version} is already the champion", name, None, rule)
        return run_gate(
            logs,
            target_distributions(challenger, logs),
            reference,
            rule,
            features=features_of(challenger),
            reference_name=name,
            selection=span(outcome.selection),
        )

    def log_training_set(self, run_id: str, examples: Sequence[TrainingExample]) -> None:
        """Log which decisions the run trained and was evaluated on, as ``TRAINING_SET``: a
        Parquet file of each example's key, user, time, choice and reward (the lineage of the
        run; the full rows are in the lake). It holds user ids, so erasures rewrite it
        (:mod:`models.tracking_erasure`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "decision_id": pa.array([str(e.decision_id) for e in examples], pa.string()),
                "user_id": pa.array([e.user_id for e in examples], pa.string()),
                "decided_at": pa.array([e.decided_at for e in examples], pa.timestamp("us", tz="UTC")),
                "chosen_id": pa.array([e.chosen_id for e in examples], pa.string()),
                "propensity": pa.array([e.propensity for e in examples], pa.float64()),
                "reward": pa.array([e.reward for e in examples], pa.float64()),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(TRAINING_SET).name
            pq.write_table(table, path, compression="zstd")
            self.client.log_artifact(run_id, str(path), str(Path(TRAINING_SET).parent))

    def register_outcome(
        self,
        outcome: TrainingOutcome,
        interval_key: str,
        n_examples: int,
        skew: Mapping[str, float] | None = None,
        examples: Sequence[TrainingExample] = (),
    ) -> dict[str, Any]:
        """Log every candidate, move ``@challenger`` to the best, gate ``@champion``; a summary.
        With ``examples``, the challenger's run also logs the training set's lineage."""
        logged = [(c, *self.log_candidate(c, interval_key, skew)) for c in outcome.candidates]
        _, best_run, best_version = logged[0]
        if examples:
            self.log_training_set(best_run, examples)
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, best_version)
        evidence = self.gate(best_version, outcome)
        if evidence.promoted:
            self.client.set_registered_model_alias(self.model_name, CHAMPION, best_version)
        log.info("gate: %s", evidence.reason)
        for key, value in evidence.tags().items():
            self.client.set_tag(best_run, key, value)
        for key, number in evidence.metrics().items():
            self.client.log_metric(best_run, key, number)
        summary = {
            "interval_end": interval_key,
            "examples": n_examples,
            "trained": len(logged),
            "runs": [run for _, run, _ in logged],
            "challenger": best_version,
            "champion": self.version_for(CHAMPION),
            "promoted": evidence.promoted,
            "gate": evidence.reason,
            "evidence": {**evidence.tags(), **evidence.metrics()},
        }
        self.client.set_tag(best_run, "oo.summary", json.dumps(summary))
        return summary
