"""The report of an ``oo simulate`` run (:mod:`models.closed_loop`): what the live stack did with
the simulated users, measured against the simulator's hidden truth.

- **Reward over time per policy**: each day's mean reward of the decisions each served policy
  version made (the versions are read from the lake's ``decisions``, i.e. what serving logged).
- **Regret against the oracle**: per decision, the best expected reward among the candidates
  serving offered (the simulator knows each one's) minus the chosen one's expected reward.
- **Off-policy estimate vs live reward**: the promoted version's doubly robust estimate on
  baseline-logged decisions no gate saw (the control group's after the promotion, else the day
  before it), and the ones training logged (its MLflow run), against the mean reward of that
  version's live decisions after promotion (with a user-resampled bootstrap interval).
- **Promoted vs baseline**: live mean reward of the promoted version against the served rule
  baseline's on the same days (its control group, ``OO_SERVING__CONTROL_FRACTION``; without one,
  its decisions before the promotion), with a user-resampled paired interval of the difference.
- **Train/serve skew per feature**: the lake's ``feature_skew`` (what serving logged with each
  decision vs the feature store's point-in-time value), aggregated over the run.

Every check is computed, never assumed: a run whose challenger is not promoted, does not beat the
baseline, or whose estimate misses its live reward says so in ``checks``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.closed_loop import LoopRun, Served

BASELINE = "rule_based"
SKEW_LIMIT = 0.01
MIN_CONTROL = 20
"""Fewest control-group decisions after the promotion to compare the promoted policy with on the same
days (fewer: with the baseline's decisions before the promotion)."""


def _mean_ci(values_by_user: dict[str, list[float]], seed: int, n_boot: int = 1000) -> tuple[float, float, float]:
    """Mean over decisions and a 95% bootstrap interval that resamples whole users."""
    users = sorted(values_by_user)
    if not users:
        return math.nan, math.nan, math.nan
    sums = np.array([sum(values_by_user[u]) for u in users])
    counts = np.array([len(values_by_user[u]) for u in users])
    mean = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(users), size=(n_boot, len(users)))
    boots = sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)
    return mean, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _diff_ci(
    a: dict[str, list[float]], b: dict[str, list[float]], seed: int, n_boot: int = 1000
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` with a 95% bootstrap interval resampling users of each side."""
    if not a or not b:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)

    def arrays(d: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
        users = sorted(d)
        return np.array([sum(d[u]) for u in users]), np.array([len(d[u]) for u in users])

    (sa, ca), (sb, cb) = arrays(a), arrays(b)
    point = float(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    ia = rng.integers(0, len(sa), size=(n_boot, len(sa)))
    ib = rng.integers(0, len(sb), size=(n_boot, len(sb)))
    boots = sa[ia].sum(1) / ca[ia].sum(1) - sb[ib].sum(1) / cb[ib].sum(1)
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _paired_diff_ci(
    a: dict[str, list[float]], b: dict[str, list[float]], seed: int, n_boot: int = 1000
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` with a 95% bootstrap interval that resamples **users**, each resampled
    user bringing their decisions on both sides: the same users are seen before the promotion (``b``)
    and after it (``a``), so a user who reacts more than others does so on both sides and the
    difference does not carry that between-user spread (the gate's own paired cluster bootstrap).
    Treating the two sides as independent samples (:func:`_diff_ci`) overstates its variance."""
    if not a or not b:
        return math.nan, math.nan, math.nan
    users = sorted(set(a) | set(b))
    sa = np.array([sum(a.get(u, [])) for u in users])
    ca = np.array([len(a.get(u, [])) for u in users])
    sb = np.array([sum(b.get(u, [])) for u in users])
    cb = np.array([len(b.get(u, [])) for u in users])
    point = float(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    idx = np.random.default_rng(seed).integers(0, len(users), size=(n_boot, len(users)))
    boots = sa[idx].sum(1) / np.maximum(ca[idx].sum(1), 1) - sb[idx].sum(1) / np.maximum(cb[idx].sum(1), 1)
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _logged(lake: Any) -> dict[str, dict[str, Any]]:
    table = lake.read("decisions", columns=["decision_id", "policy", "policy_version", "candidates", "propensity"])
    out = {}
    for row in table.to_pylist():
        out[str(row["decision_id"])] = {
            "policy": row["policy"],
            "policy_version": row["policy_version"],
            "candidates": [c["candidate_id"] for c in row["candidates"]],
            "propensity": row["propensity"],
        }
    return out


def _rows(served: Sequence[Served], logged: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per reacted decision, joined with what serving logged; oracle and regret."""
    rows = []
    for s in served:
        if s.reaction is None or s.expected is None or s.reward is None:
            continue
        d = logged.get(s.decision_id)
        if d is None:
            continue
        offered = [s.values[c] for c in d["candidates"] if c in s.values]
        oracle = max(offered) if offered else s.expected
        rows.append(
            {
                "day": s.day,
                "user": s.user,
                "policy": d["policy"],
                "policy_version": d["policy_version"],
                "reward": s.reward,
                "expected": s.expected,
                "oracle": oracle,
                "regret": oracle - s.expected,
            }
        )
    return rows


def _skew(lake: Any) -> dict[str, float]:
    from data_contracts import FeatureSkew
    from data_contracts.arrow import from_table
    from models.features.skew import aggregate

    if not lake.files("feature_skew"):
        return {}
    return aggregate(from_table(FeatureSkew, lake.read("feature_skew")))


def _ope(registry: Any, version: str) -> dict[str, Any]:
    """The promoted version's off-policy estimates as training logged them: on the **gate slice**
    (``gate_challenger``, the gate's DR estimate of the challenger alone, with its interval at the
    gate's level), the estimate of record, since that slice chose nothing; and on the **selection
    slice** (``dr``), where the challenger was picked as the best of the grid, so optimistic by
    construction (the winner's curse)."""
    mv = registry.client.get_model_version(registry.model_name, version)
    run = registry.client.get_run(mv.run_id).data
    m = run.metrics
    out: dict[str, Any] = {
        k: float(m[k]) for k in ("dr", "dr_low", "dr_high", "logged_reward", "ess", "gate_level") if k in m
    }
    if "gate_challenger" in m:
        out["slice"] = "gate"
        out["estimate"] = float(m["gate_challenger"])
        out["low"] = float(m.get("gate_challenger_low", math.nan))
        out["high"] = float(m.get("gate_challenger_high", math.nan))
        out["gate_ess"] = float(m.get("gate_ess", math.nan))
        out["gate_decisions"] = float(m.get("gate_n_decisions", math.nan))
        out["gate_slice"] = [run.tags.get("gate.slice_start"), run.tags.get("gate.slice_end")]
    else:  # a run logged before the gate kept the challenger's own interval
        out["slice"] = "selection"
        out["estimate"], out["low"], out["high"] = out.get("dr", math.nan), out.get("dr_low"), out.get("dr_high")
    return out


def _truth_on_gate_slice(
    registry: Any, version: str, lake: Any, served: Sequence[Served], span: Sequence[str | None]
) -> dict[str, float] | None:
    """The simulator's exact expected reward of the promoted policy's choice distribution on the
    gate slice's logged decisions (what the estimate estimates): each candidate's expected reward
    at decision time is known to the simulator (``Served.values``). ``None`` without a slice."""
    from datetime import datetime

    from data_contracts import TrainingExample
    from data_contracts.arrow import from_table
    from models.evaluation import target_distributions
    from models.training import to_logged

    if not span or None in span:
        return None
    start, end = (datetime.fromisoformat(str(t)) for t in span)
    table = lake.read("training_examples", where="decided_at >= ? AND decided_at <= ?", params=[start, end])
    values = {s.decision_id: s.values for s in served}
    known = [
        (values[str(e.decision_id)], to_logged(e))
        for e in from_table(TrainingExample, table)
        if str(e.decision_id) in values and all(c.candidate_id in values[str(e.decision_id)] for c in e.candidates)
    ]
    if not known:
        return None
    dists = target_distributions(registry.load(version), [d for _, d in known])
    truths = [sum(p * v[c] for c, p in dist.items()) for (v, _), dist in zip(known, dists, strict=True)]
    return {
        "truth": float(np.mean(truths)),
        "logged_truth": float(np.mean([v[d.chosen_id] for v, d in known])),
        "decisions": len(known),
    }


def _unselected(
    registry: Any,
    version: str,
    lake: Any,
    served: Sequence[Served],
    after: str | None,
    until: str,
    seed: int,
    min_decisions: int = 20,
    served_by: str | None = None,
    name: str = "unselected",
) -> dict[str, Any] | None:
    """The promoted policy's DR estimate on the logged decisions **no gate saw**: those made after
    the end of the slice that promoted it and before the promotion (by the policy serving then, the
    baseline or an earlier champion), read back from the lake once their reward windows closed.

    The gate slice's own estimate is the one that crossed the gate's bar: conditioning on the
    promotion selects it upward, as picking the best of the grid does on the selection slice.
    These decisions played no part in training, selection or the gate, so the estimate here is
    unselected. Interval: 95%, the gate's paired cluster bootstrap over users (its ``G / (G - 1)``
    and t corrections). Also the simulator's exact expected reward of the policy's choice
    distribution on the same decisions (``truth``). ``None`` when fewer than ``min_decisions``.

    ``served_by`` keeps only the decisions that policy served (the control group's, ``rule_based``,
    after the promotion: the same days as the promoted policy's live reward); ``name`` names the slice."""
    from datetime import datetime

    from data_contracts import TrainingExample
    from data_contracts.arrow import from_table
    from models.evaluation import InvalidLog, features_of, fit_reward_model, target_distributions
    from models.gate import paired_difference
    from models.training import to_logged

    if after is None:
        return None
    start, end = datetime.fromisoformat(after), datetime.fromisoformat(until)
    table = lake.read("training_examples", where="decided_at > ? AND decided_at < ?", params=[start, end])
    examples = [
        e
        for e in from_table(TrainingExample, table)
        if start < e.decided_at < end and e.policy_version != version and (served_by is None or e.policy == served_by)
    ]
    if len(examples) < min_decisions:
        return None
    policy = registry.load(version)
    logs = [to_logged(e) for e in examples]
    try:
        target = target_distributions(policy, logs)
        q = fit_reward_model(logs, features=features_of(policy), seed=seed)
        d = paired_difference(logs, target, None, q=q, n_bootstrap=1000, seed=seed, level=0.95)
    except InvalidLog as exc:
        return {"decisions": len(logs), "error": str(exc)}
    values = {s.decision_id: s.values for s in served}
    known = [
        (values[str(e.decision_id)], dist)
        for e, dist in zip(examples, target, strict=True)
        if str(e.decision_id) in values and all(c in values[str(e.decision_id)] for c in dist)
    ]
    return {
        "slice": name,
        "span": [min(e.decided_at for e in examples).isoformat(), max(e.decided_at for e in examples).isoformat()],
        "estimate": d.challenger,
        "low": d.challenger_low,
        "high": d.challenger_high,
        "logged_reward": d.reference,
        "difference": {"value": d.value, "low": d.low, "high": d.high},
        "ess": d.ess,
        "decisions": d.n_decisions,
        "users": d.n_users,
        "level": 0.95,
        "truth": float(np.mean([sum(p * v[c] for c, p in dist.items()) for v, dist in known])) if known else None,
    }


def build_report(run: LoopRun, lake: Any, registry: Any) -> dict[str, Any]:
    """The report (a JSON-able dict) of ``run`` from the lake and the registry it wrote."""
    seed = run.config.seed
    logged = _logged(lake)
    rows = _rows(run.served, logged)
    asked = [s for s in run.served if s.decision_id in logged]
    per_day: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    per_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        per_day[(r["day"], r["policy_version"])].append(r)
        per_version[r["policy_version"]].append(r)

    def summary(rs: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "decisions": len(rs),
            "reward": float(np.mean([r["reward"] for r in rs])),
            "expected": float(np.mean([r["expected"] for r in rs])),
            "oracle": float(np.mean([r["oracle"] for r in rs])),
            "regret": float(np.mean([r["regret"] for r in rs])),
        }

    def by_user(rs: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            out[r["user"]].append(r[key])
        return dict(out)

    baseline_rows = [r for r in rows if r["policy"] == BASELINE]
    report: dict[str, Any] = {
        "simulated": True,
        "config": {
            "users": run.config.users,
            "days": run.config.days,
            "seed": seed,
            "visits_per_day": run.config.visits_per_day,
            "tasks_per_user": run.config.tasks_per_user,
            "baseline_floor": run.config.baseline_floor,
            "control_fraction": run.config.control_fraction,
            "concurrency": run.config.concurrency,
            "holdout_fraction": run.config.holdout_fraction,
            "gate_fraction": run.config.gate_fraction,
        },
        "simulated_start": run.start.isoformat(),
        "wall_seconds": round(run.wall_s, 1),
        "step_seconds": dict(sorted(run.step_seconds.items(), key=lambda kv: -kv[1])),
        "decisions": {
            "asked": len(run.served),
            "logged_by_serving": len(asked),
            "reacted": len(rows),
            "policy_versions": sorted({d["policy_version"] for d in logged.values()}),
        },
        "per_day": [
            {"day": day, "policy_version": version, **summary(rs)} for (day, version), rs in sorted(per_day.items())
        ],
        "per_policy": {version: summary(rs) for version, rs in sorted(per_version.items())},
        "overall": summary(rows) if rows else {},
        "batches": run.days,
        "slots": run.slots,
        "promotions": [{k: v for k, v in p.items() if k != "serving"} for p in run.promotions],
    }
    checks: dict[str, Any] = {
        "promoted": bool(run.promotions),
        "beats_baseline": False,
        "ope_within_interval": False,
        "ope_estimate_within_live_interval": False,
    }
    gates = [b["training"].get("gate") for b in run.days if b.get("training", {}).get("gate")]
    report["last_gate"] = gates[-1] if gates else "the gate never ran (too few training examples)"
    if not run.promotions:
        report["not_evaluated"] = (
            "no challenger was promoted, so there is no promoted policy to compare with the baseline or with its "
            "off-policy estimate; the last gate said: " + report["last_gate"]
        )
    if run.promotions:
        first = run.promotions[0]
        version = first["version"]
        until = run.promotions[1]["day"] if len(run.promotions) > 1 else math.inf
        after = [r for r in rows if first["day"] < r["day"] <= until and r["policy"] != BASELINE]
        control = [r for r in rows if first["day"] < r["day"] <= until and r["policy"] == BASELINE]
        same_days = len(control) >= MIN_CONTROL
        versions_after = sorted({r["policy_version"] for r in after})
        live = _mean_ci(by_user(after, "reward"), seed)
        live_expected = _mean_ci(by_user(after, "expected"), seed)
        ope = _ope(registry, version)
        gate_end = (ope.get("gate_slice") or [None, None])[1]
        unselected = _unselected(registry, version, lake, run.served, gate_end, first["at"], seed)
        next_at = run.promotions[1]["at"] if len(run.promotions) > 1 else "9999-12-31T00:00:00+00:00"
        on_control = _unselected(
            registry, version, lake, run.served, first["at"], next_at, seed, served_by=BASELINE, name="control"
        )
        of_record = next(
            (e for e in (on_control, unselected) if e is not None and "estimate" in e),
            ope,
        )
        estimate, low, high = of_record["estimate"], of_record.get("low", math.nan), of_record.get("high", math.nan)
        within = bool(after) and low <= live[0] <= high
        # the other way round (issue 12's wording): the estimate inside the live reward's interval
        estimate_within = bool(after) and live[1] <= estimate <= live[2]
        truth = _truth_on_gate_slice(registry, version, lake, run.served, ope.get("gate_slice") or [])
        report["ope"] = {
            "version": version,
            "served_as": versions_after,
            "estimate_of_record": of_record.get("slice"),
            "estimate": ope,
            "unselected": unselected,
            "control": on_control,
            "live_reward": {"mean": live[0], "low": live[1], "high": live[2], "decisions": len(after)},
            "live_expected_reward": {"mean": live_expected[0], "low": live_expected[1], "high": live_expected[2]},
            "truth_on_gate_slice": truth,
            "live_within_interval": within,
            "estimate_within_live_interval": estimate_within,
            "note": "control (the estimate of record when present): the promoted policy's DR estimate on the "
            "control group's decisions after the promotion (served by the exploring rule baseline, at random, on "
            "the same days and users as the live reward; no training, selection or gate saw them; 95%). "
            "unselected (the estimate of record without a control group): the same on the "
            "logged decisions after the gate slice's end and before the promotion, which no training, selection "
            "or gate saw (95%). estimate: the gate slice's DR estimate (interval at the gate's level), the one "
            "that crossed the gate's bar, so selected upward; dr: the selection slice's, where it was picked as "
            "the best of the grid (optimistic). truth_on_gate_slice: the simulator's exact expected reward "
            "of the promoted policy's choice distribution on the gate slice's decisions (estimate - truth: the "
            "estimator's error); live_expected_reward: the exact expected reward of its live choices (truth - live "
            "expected: what changed between the logged contexts and the live ones, e.g. the pool of open "
            "tasks a better policy empties of its best tasks, and the online learning after promotion)",
        }
        reference = control if same_days else baseline_rows
        diff = _paired_diff_ci(by_user(after, "reward"), by_user(reference, "reward"), seed + 1)
        diff_expected = _paired_diff_ci(by_user(after, "expected"), by_user(reference, "expected"), seed + 2)
        unpaired = _diff_ci(by_user(after, "reward"), by_user(reference, "reward"), seed + 1)
        before = [r for r in baseline_rows if r["day"] <= first["day"]]
        before_after = _paired_diff_ci(by_user(after, "reward"), by_user(before, "reward"), seed + 1)
        report["promoted_vs_baseline"] = {
            "compared_with": "control" if same_days else "before",
            "baseline_decisions": len(reference),
            "promoted_decisions": len(after),
            "reward_difference": {"value": diff[0], "low": diff[1], "high": diff[2]},
            "reward_difference_unpaired": {"value": unpaired[0], "low": unpaired[1], "high": unpaired[2]},
            "expected_reward_difference": {
                "value": diff_expected[0],
                "low": diff_expected[1],
                "high": diff_expected[2],
            },
            "reward_difference_before_after": {
                "value": before_after[0],
                "low": before_after[1],
                "high": before_after[2],
            },
            "reward_difference_significant": bool(diff[1] > 0),
            "note": "live decisions of the promoted policy (after promotion) vs the served rule baseline's: its "
            "control group's on the same days (compared_with: control; the group is drawn at random from the "
            "decisions) or, without one, its decisions before the promotion (compared_with: before; the world "
            "changes over the days, so this confounds the policy with the time), the same users on both sides; "
            "intervals resample users with their decisions on both sides (paired; _unpaired resamples each "
            "side on its own, as if they were different users); expected rewards are the simulator's exact "
            "values; reward_difference_before_after: against the baseline's decisions before the promotion. "
            "beats_baseline (checks) is the expected reward's difference above 0 at 95%: whether the promoted "
            "policy's choices are better than the baseline's in the simulator's truth, which the realized "
            "rewards (0/1 draws around those values) estimate with more noise; reward_difference_significant "
            "says whether the realized rewards alone show it",
        }
        checks["beats_baseline"] = bool(diff_expected[1] > 0)
        checks["ope_within_interval"] = within
        checks["ope_estimate_within_live_interval"] = estimate_within
    skew = _skew(lake)
    report["skew"] = skew
    report["skew_max"] = max(skew.values()) if skew else None
    checks["skew_under_1pct"] = bool(skew) and max(skew.values()) < SKEW_LIMIT
    checks["decisions_from_serving"] = len(asked) == len(run.served)
    report["checks"] = checks
    return report


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """Reward and regret per day per policy, and skew per feature (matplotlib Figures, no pyplot)."""
    from matplotlib.figure import Figure

    out: dict[str, Any] = {}
    versions = sorted({d["policy_version"] for d in report["per_day"]})
    for key, label in (("reward", "mean reward"), ("regret", "mean regret vs oracle")):
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        for v in versions:
            pts = [(d["day"], d[key]) for d in report["per_day"] if d["policy_version"] == v]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
        for p in report["promotions"]:
            ax.axvline(p["day"] + 1, color="grey", linestyle="--")
        ax.set_xlabel("simulated day")
        ax.set_ylabel(label)
        ax.set_title(f"SIMULATED closed loop: {label} per day and policy", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out[f"{key}_per_day.png"] = fig
    skew = report.get("skew") or {}
    if skew:
        fig = Figure(figsize=(7, max(3.0, 0.18 * len(skew))))
        ax = fig.subplots()
        names = sorted(skew)
        ax.barh(names, [100 * skew[n] for n in names])
        ax.axvline(100 * SKEW_LIMIT, color="red", linestyle="--")
        ax.set_xlabel("train/serve mismatch rate (%)")
        ax.tick_params(axis="y", labelsize=6)
        fig.tight_layout()
        out["skew_per_feature.png"] = fig
    return out


def log_to_mlflow(report: dict[str, Any], registry: Any, path: Path) -> str:
    """One MLflow run ``closed-loop-simulation`` with the report's figures, metrics and JSON."""
    import mlflow

    mlflow.set_tracking_uri(registry.settings.mlflow_tracking_uri)
    cfg = report["config"]
    with mlflow.start_run(
        experiment_id=registry.experiment_id, run_name=f"closed-loop-simulation {cfg['users']}x{cfg['days']}"
    ) as active:
        mlflow.set_tags({"oo.simulated": "true", "oo.kind": "closed_loop"})
        mlflow.log_params(cfg)
        overall = report.get("overall") or {}
        metrics = {f"overall_{k}": float(v) for k, v in overall.items()}
        if report.get("skew_max") is not None:
            metrics["skew_max"] = float(report["skew_max"])
        metrics["wall_seconds"] = float(report["wall_seconds"])
        mlflow.log_metrics(metrics)
        for name, fig in figures(report).items():
            mlflow.log_figure(fig, name)
        mlflow.log_artifact(str(path))
        return str(active.info.run_id)


def write(report: dict[str, Any], path: Path) -> Path:
    """The report as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    return path
