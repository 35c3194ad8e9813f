"""The ML engineer's command line: ``python -m models.cli --help``.

``make run`` uses it around the DAGs when it first seeds its history: ``simulate`` writes the
traffic serving and the app would have written before they started, then ``summary`` says what
the DAGs made of it.

- ``simulate``: seeded synthetic users (:class:`models.simulation.Simulator`) over the last few
  days. Their Todoist tasks go to the lake's ``todoist_tasks`` / ``todoist_completions`` (as a
  Todoist sync would write them, user ids ``sim-user-N``, task ids ``sim-<MMDD>s<seed>-N``); every decision of
  the logging policy (``tip-policy@champion`` when there is one, else an epsilon-greedy
  explorer; it learns online from each reward, like the single learner) and every reaction and
  reward are appended to the event log that ``events_ingest`` reads (where serving and the app
  write). Re-running it appends only events the log does not hold yet.
- ``summary``: lake row counts, train/serve skew, the MLflow runs with their doubly robust
  estimates, the aliases and the gate's decision, and what was simulated.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from data_contracts import TodoistCompletion, TodoistTask
from models.policies.base import Policy
from models.simulation import Simulator

app = typer.Typer(add_completion=False, no_args_is_help=True, help="oO ML-engineer commands.")
console = Console(width=120)

NAMESPACE = uuid.UUID("5e1d0c6a-0b0e-4b9a-9f51-6d0c5a1e7a11")
"""Namespace of simulated decision ids (seed, start and round make them unique and stable)."""

SIMULATED_NOTE = (
    "Simulated: the users (sim-user-N), their Todoist tasks and completions, and every decision, "
    "reaction and reward (written by `models.cli simulate` where serving and the app will write). "
    "Real: migrations, Todoist ingestion (against a FAKE Todoist API), events_ingest, features "
    "(Feast, Great Expectations), policy_training (MLflow) as Airflow DAG runs. "
    "Serving (BentoML) and the app API (FastAPI) are built: `make run` starts them after this seeding, "
    "and from then on they write the decisions, reactions and rewards; this history stands in for "
    "the traffic before them."
)


@dataclass
class SimulationReport:
    """What :func:`simulate_traffic` wrote."""

    users: int
    start: datetime
    end: datetime
    policy: str
    decisions: int = 0
    appended: dict[str, int] = dataclasses.field(default_factory=dict)
    already_logged: int = 0
    tasks_written: int = 0
    completions_written: int = 0
    mean_reward: float = 0.0
    oracle_reward: float = 0.0


def _logged_ids(path: Path, key: str) -> set[str]:
    """The ``key`` of every line already in an event log file."""
    if not path.exists():
        return set()
    with open(path, "rb") as handle:
        return {str(json.loads(line)[key]) for line in handle if line.strip()}


def logging_policy(seed: int) -> Policy:
    """What serving would rank with: ``tip-policy@champion`` if one is registered, else a fresh
    epsilon-greedy explorer (every candidate keeps a positive propensity for off-policy evaluation)."""
    from models.policies.explore import EpsilonGreedy
    from models.registry import Registry

    registry = Registry()
    if registry.version_for("champion") is not None:
        return registry.load("champion")
    return EpsilonGreedy(epsilon=0.2, seed=seed, version="sim-bootstrap")


def simulate_traffic(
    users: int,
    days: float,
    seed: int,
    now: datetime | None = None,
    policy: Policy | None = None,
    lake: Any = None,
    events: Any = None,
) -> SimulationReport:
    """Simulate ``days`` of traffic ending at ``now`` (default: the current time) for ``users``.

    The window starts at the UTC midnight ``days`` days before ``now``'s, so two calls on the same
    day with the same seed produce the same world, the same decisions and the same ids: what the
    event log already holds is not appended again, and the lake deduplicates the snapshots.
    """
    from oo.events_ingest import get_event_log
    from oo.lake import get_lake

    if users < 1 or days <= 0:
        raise typer.BadParameter("--users must be >= 1 and --days > 0")
    end = now or datetime.now(UTC)
    midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=days)
    lake = lake or get_lake()
    events = events or get_event_log()
    policy = policy or logging_policy(seed)
    # one world per (start day, seed): its task ids never collide with another day's world
    sim = Simulator(n_users=users, seed=seed, start=start, track_tasks=True, task_prefix=f"sim-{start:%m%d}s{seed}-")
    report = SimulationReport(users=users, start=start, end=end, policy=f"{policy.name}@{policy.version}")

    tasks: list[TodoistTask] = []
    completions: list[TodoistCompletion] = []

    def drain() -> None:
        t, c = sim.drain_todoist()
        tasks.extend(t)
        completions.extend(c)

    drain()  # the first sync: every user's open tasks at the start
    logged = {
        "decisions": _logged_ids(events.path("decisions"), "decision_id"),
        "reactions": _logged_ids(events.path("reactions"), "event_id"),
        "rewards": _logged_ids(events.path("rewards"), "event_id"),
    }
    report.appended = dict.fromkeys(logged, 0)
    total = oracle = 0.0
    while True:
        rnd = sim.next_round()
        reacted_at = rnd.at + timedelta(minutes=5)
        if reacted_at > end:
            break
        rnd = dataclasses.replace(
            rnd, decision_id=uuid.uuid5(NAMESPACE, f"{seed}/{start.isoformat()}/{rnd.decision_id}")
        )
        choice = policy.choose(rnd.context, rnd.candidates)
        outcome = sim.react(rnd, choice.chosen_id)
        chosen = next(c for c in rnd.candidates if c.candidate_id == choice.chosen_id)
        policy.learn_one(rnd.context, chosen, outcome.reward)
        drain()
        decision, reaction, reward, _ = sim.records(rnd, choice, outcome, policy)
        report.decisions += 1
        total += outcome.reward
        oracle += outcome.expected + outcome.regret
        for topic, record, key in (
            ("decisions", decision, str(decision.decision_id)),
            ("reactions", reaction, str(reaction.event_id)),
            ("rewards", reward, str(reward.event_id)),
        ):
            if key in logged[topic]:
                report.already_logged += 1
                continue
            events.append(topic, record)
            report.appended[topic] += 1
    report.tasks_written = lake.write("todoist_tasks", tasks).written
    report.completions_written = lake.write("todoist_completions", completions).written
    n = max(report.decisions, 1)
    report.mean_reward, report.oracle_reward = total / n, oracle / n
    return report


@app.command()
def simulate(
    users: int = typer.Option(20, help="simulated users"),
    days: float = typer.Option(3.0, help="days of traffic, ending now"),
    seed: int = typer.Option(0, help="seed of the simulated world"),
) -> None:
    """Simulated serving + app traffic: decisions, reactions, rewards to the event log; the
    simulated users' Todoist tasks to the lake."""
    from oo.db import migrate
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    migrate()  # the feature pipeline reads user timezones from the app database
    r = simulate_traffic(users, days, seed)
    s = get_settings()
    console.print(
        f"[bold]SIMULATED traffic[/] (no serving or app yet): {r.users} users, "
        f"{r.start:%Y-%m-%d %H:%M} -> {r.end:%Y-%m-%d %H:%M} UTC, logging policy {r.policy}\n"
        f"  {r.decisions} decisions; appended to the event log {s.paths.resolve('events')}: "
        + ", ".join(f"{n} {t}" for t, n in r.appended.items())
        + f" ({r.already_logged} already there)\n"
        f"  lake: {r.tasks_written} new todoist_tasks snapshots, {r.completions_written} new completions "
        f"(sim- users)\n"
        f"  mean reward {r.mean_reward:.3f} (oracle's expected {r.oracle_reward:.3f})"
    )


def _lake_counts() -> Table:
    from oo.lake import DATASETS, get_lake

    lake = get_lake()
    rows = Table("dataset", "rows", "sim- users", title="lake")
    for name in DATASETS:
        if not lake.files(name):
            rows.add_row(name, "0", "")
            continue
        model = DATASETS[name]
        table = lake.read(name, columns=["user_id"] if "user_id" in model.model_fields else model.key_fields[:1])
        sim = ""
        if "user_id" in table.column_names:
            sim = str(sum(1 for u in table.column("user_id").to_pylist() if str(u).startswith("sim-")))
        rows.add_row(name, str(table.num_rows), sim)
    return rows


def _skew() -> list[str]:
    from data_contracts import CandidateFeatures, FeatureSkew
    from data_contracts.arrow import from_table
    from models.features.skew import aggregate
    from oo.lake import get_lake

    lake = get_lake()
    if not lake.files("feature_skew"):
        return ["train/serve skew: nothing compared yet"]
    rows = from_table(FeatureSkew, lake.read("feature_skew"))
    rates = aggregate(rows)

    def line(names: list[str]) -> str:
        ordered = sorted(names, key=lambda n: (-rates[n], n))
        return ", ".join(f"{n} {rates[n]:.0%}" for n in ordered)

    task = [n for n in rates if n in CandidateFeatures.model_fields]
    user = [n for n in rates if n not in CandidateFeatures.model_fields]
    return [
        f"train/serve skew (what serving logged vs the point-in-time offline value, {len(rows)} rows):",
        f"  candidate features: {line(task)}",
        f"  user context: {line(user)}",
        "  (the simulator draws a user's context around hidden traits instead of computing it from "
        "history, so simulated context disagrees with the feature store; task features come from the "
        "same snapshots and should agree)",
    ]


def _runs() -> list[Any]:
    from models.registry import Registry

    registry = Registry()
    runs = registry.client.search_runs([registry.experiment_id], order_by=["attributes.start_time DESC"])
    out: list[Any] = [
        Table("run", "interval end", "n train", "DR [95% interval]", "logged reward", "gate", title="MLflow")
    ]
    nan = float("nan")
    for run in runs[:10]:
        m, t = run.data.metrics, run.data.tags
        out[0].add_row(
            run.info.run_name,
            t.get("oo.interval_end", "")[:16],
            str(run.data.params.get("n_train", "")),
            f"{m.get('dr', nan):.3f} [{m.get('dr_low', nan):.3f}, {m.get('dr_high', nan):.3f}]",
            f"{m.get('logged_reward', nan):.3f}",
            t.get("gate.decision", ""),
        )
    if len(runs) > 10:
        out.append(f"({len(runs)} runs in all; the 10 latest shown)")
    out.append(
        f"aliases: @challenger = v{registry.version_for('challenger') or '-'}, "
        f"@champion = v{registry.version_for('champion') or '-'}"
    )
    gated = [r for r in runs if "gate.decision" in r.data.tags]
    if gated:
        tags = gated[0].data.tags
        out.append(f"gate ({gated[0].info.run_name}): {tags['gate.decision']}: {tags['gate.reason']}")
    else:
        out.append("gate: no training run has gated yet")
    return out


@app.command()
def summary() -> None:
    """What the platform holds now: lake counts, skew, MLflow runs, aliases, the gate; what was simulated."""
    from oo.runtime import configure

    configure()
    console.print(_lake_counts())
    for line in _skew():
        console.print(line)
    for item in _runs():
        console.print(item)
    console.print(f"[bold]{SIMULATED_NOTE}[/]")


if __name__ == "__main__":
    app()
