"""The ``oo`` command (``uv run oo --help``; installed by ``[project.scripts]``).

It lives in ``models`` because it is an entry point over both kernel and ML commands: ``oo
train`` and ``oo policy`` need :mod:`models`, and the import-linter layers let ``models`` import
``oo`` but never the reverse (not even lazily inside a function, which import-linter also sees).
So the kernel's commands stay in :mod:`oo.cli` and :mod:`oo.platform`, the ML engineer's in
:mod:`models.cli`, and this module gathers them under one name with the commands that need both:

- platform: ``up`` (what ``make run`` runs), ``status`` (each store and service, healthy or not);
- ML: ``train`` (the training pipeline once, outside Airflow), ``policy list|promote|rollback``,
  ``simulate`` and ``summary``;
- users: ``user export|delete`` through the app API;
- Todoist: ``fake-todoist``, ``todoist-connect``, ``todoist-sync``, and ``migrate``.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from models import cli as models_cli
from oo import cli as oo_cli
from oo import platform
from oo.launcher import wide_console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="oO: the platform, its policies and its users.")
policy_app = typer.Typer(no_args_is_help=True, help="Policy versions, aliases and the gate's evidence.")
user_app = typer.Typer(no_args_is_help=True, help="A user's data, through the app API.")
app.add_typer(policy_app, name="policy")
app.add_typer(user_app, name="user")
console = wide_console()

ROOT = Path(__file__).resolve().parents[1]

# the kernel's and the ML engineer's commands, under their own names
app.command("up")(platform.up)
app.command("status")(oo_cli.status)
app.command("migrate")(oo_cli.migrate)
app.command("fake-todoist")(oo_cli.fake_todoist)
app.command("todoist-connect")(oo_cli.todoist_connect)
app.command("todoist-sync")(oo_cli.todoist_sync)
app.command("summary")(models_cli.summary)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)


@app.command()
def train() -> None:
    """Train, evaluate off-policy, log to MLflow and gate once, now, on the lake's training
    examples (what the policy_training DAG does, outside Airflow)."""
    from oo.runtime import configure

    configure()
    from models.policy_training import train_and_register

    with _progress() as progress:
        progress.add_task("training the candidate grid, evaluating off-policy, gating", total=None)
        summary = train_and_register(datetime.now(UTC))
    if not summary.get("trained"):
        console.print(f"[yellow]nothing trained[/]: {summary.get('examples', 0)} training examples in the window")
        raise typer.Exit(1)
    table = Table("", "", title="oo train")
    for key in ("examples", "trained", "challenger", "champion", "promoted", "gate"):
        table.add_row(key, str(summary.get(key)))
    console.print(table)


@app.command("simulate-events")
def simulate_events(
    users: int = typer.Option(20, help="simulated users"),
    days: float = typer.Option(3.0, help="days of traffic, ending now"),
    seed: int = typer.Option(0, help="seed of the simulated world"),
) -> None:
    """SIMULATED traffic straight into the event log and the lake, no services (what `make
    demo-batch` seeds; ``models.cli simulate``). The closed loop through the services is `oo simulate`."""
    with _progress() as progress:
        progress.add_task(f"simulating {users} users over {days:g} days", total=None)
        models_cli.simulate(users=users, days=days, seed=seed)


@app.command()
def simulate(
    users: int = typer.Option(50, min=1, max=2000, help="simulated users"),
    days: int = typer.Option(14, min=1, max=90, help="simulated days"),
    seed: int = typer.Option(0, help="seed of the simulated world"),
    visits_per_day: int = typer.Option(
        4, min=1, max=12, help="slots a day; every user opens the app once a slot, after the hourly features run"
    ),
    tasks_per_user: int = typer.Option(3, min=1, max=100, help="open tasks of each user (serving's candidates)"),
    baseline_floor: float = typer.Option(
        0.8, min=0.0, max=1.0, help="exploration mass of the served rule baseline (OO_SERVING__BASELINE_FLOOR)"
    ),
    control_fraction: float = typer.Option(
        0.5,
        min=0.0,
        max=0.95,
        help="share of decisions the baseline still serves after a promotion (OO_SERVING__CONTROL_FRACTION)",
    ),
    holdout_fraction: float = typer.Option(0.6, min=0.05, max=0.95, help="OO_TRAINING__HOLDOUT_FRACTION of the run"),
    gate_fraction: float = typer.Option(0.7, min=0.05, max=0.95, help="OO_TRAINING__GATE_FRACTION of the run"),
    concurrency: int = typer.Option(8, min=1, max=64, help="users' requests in flight at once"),
    out: Annotated[Path | None, typer.Option(help="the run's folder (default: a new one under var/simulate)")] = None,
) -> None:
    """The closed loop: SIMULATED users sign up, connect a FAKE Todoist, ask the app API for tips
    and react, day by day on a simulated clock, through the real app API and serving (started on
    free ports); the DAGs' work runs in-process between days. Ends with a report (table, JSON,
    plots in MLflow)."""
    from models.closed_loop import ClosedLoop, LoopConfig, new_run_dir
    from oo.runtime import configure
    from oo.settings import get_settings, settings_env

    configure()
    folder = (out or new_run_dir(get_settings().paths.resolve("simulate"), users, days, seed)).resolve()
    config = LoopConfig(
        users=users,
        days=days,
        seed=seed,
        var_dir=folder,
        visits_per_day=visits_per_day,
        tasks_per_user=tasks_per_user,
        baseline_floor=baseline_floor,
        control_fraction=control_fraction,
        concurrency=concurrency,
        holdout_fraction=holdout_fraction,
        gate_fraction=gate_fraction,
    )
    console.print(
        f"[bold]SIMULATED closed loop[/]: {users} users x {days} days x {visits_per_day} visits "
        f"({tasks_per_user} tasks each, baseline floor {baseline_floor:g}), seed {seed}; "
        f"state in {folder}"
    )
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    with progress:
        decisions = progress.add_task("decisions (users asking for tips)", total=users * days * visits_per_day)
        day_bar = progress.add_task("simulated days (then sync, ingest, features, training, gate)", total=days)

        def on_progress(what: str, n: int) -> None:
            if what == "decision":
                progress.advance(decisions, n)
            elif what == "day":
                progress.advance(day_bar, n)

        for name in ("", "mlflow", "alembic", "py.warnings"):  # the bars; the report says what happened
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            run = ClosedLoop(config, on_progress).run()
        except (RuntimeError, TimeoutError) as exc:
            console.print(f"[red]simulation failed[/]: {exc}; service logs under {folder / 'logs'}")
            raise typer.Exit(1) from None
    import pickle

    (folder / "run.pkl").write_bytes(pickle.dumps(run))  # what the loop lived, to report on again
    with settings_env(OO_PATHS__VAR_DIR=str(folder), OO_FEAST__PROJECT="oo_simulation"):
        report_path, mlflow_run = _report(run, folder)
    console.print(f"report: {report_path}; MLflow run {mlflow_run} in {folder / 'mlflow.db'}")


def _report(run: Any, folder: Path) -> tuple[Path, str]:
    from models import closed_loop_report as rep
    from models.registry import Registry
    from oo.lake import get_lake

    registry = Registry()
    report = rep.build_report(run, get_lake(), registry)
    path = rep.write(report, folder / "report.json")
    rep.write(report, folder.parent / "latest.json")
    mlflow_run = rep.log_to_mlflow(report, registry, path)
    console.print(_report_table(report))
    return path, mlflow_run


def _report_table(report: dict[str, Any]) -> Table:
    table = Table("", "", title="oo simulate (SIMULATED users, real services)", show_header=False)
    d = report["decisions"]
    table.add_row("wall time", f"{report['wall_seconds']:.0f} s")
    table.add_row(
        "decisions", f"{d['asked']} asked, {d['logged_by_serving']} logged by serving, {d['reacted']} reacted"
    )
    for version, s in report["per_policy"].items():
        table.add_row(
            f"policy {version}",
            f"{s['decisions']} decisions, reward {s['reward']:.3f}, expected {s['expected']:.3f}, "
            f"oracle {s['oracle']:.3f}, regret {s['regret']:.3f}",
        )
    for p in report["promotions"]:
        table.add_row("promotion", f"v{p['version']} after day {p['day']} ({p['at']})")
    ope = report.get("ope")
    if ope:
        e, live, nan = ope["estimate"], ope["live_reward"], float("nan")
        table.add_row(
            "off-policy vs live",
            f"DR on the {e.get('slice')} slice {e.get('estimate', nan):.3f} [{e.get('low', nan):.3f}, "
            f"{e.get('high', nan):.3f}] vs live {live['mean']:.3f} [{live['low']:.3f}, {live['high']:.3f}] "
            f"over {live['decisions']} decisions (selection slice's DR {e.get('dr', nan):.3f})",
        )
        of_record = ope.get("estimate_of_record")
        for name, label in (("control", "control group's"), ("unselected", "unselected")):
            u = ope.get(name) or {}
            if "estimate" in u:
                table.add_row(
                    f"{label} off-policy",
                    f"DR {u['estimate']:.3f} [{u['low']:.3f}, {u['high']:.3f}] (95%) on {u['decisions']} decisions no "
                    f"gate saw (ESS {u['ess']:.0f}; simulator's truth there {u.get('truth') or nan:.3f})"
                    + (": the estimate of record" if of_record == name else ""),
                )
        truth = ope.get("truth_on_gate_slice") or {}
        if truth:
            table.add_row(
                "simulator's truth",
                f"{truth['truth']:.3f} on the gate slice's {truth['decisions']} decisions (estimate - truth: "
                f"{e.get('estimate', nan) - truth['truth']:+.3f}); live expected "
                f"{ope['live_expected_reward']['mean']:.3f} (truth - live: "
                f"{truth['truth'] - ope['live_expected_reward']['mean']:+.3f})",
            )
        versus = report["promoted_vs_baseline"]
        diff, exact = versus["reward_difference"], versus["expected_reward_difference"]
        table.add_row(
            "promoted - baseline",
            f"{exact['value']:+.3f} [{exact['low']:+.3f}, {exact['high']:+.3f}] expected reward (simulator's truth); "
            f"{diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] realized, "
            f"against the {versus['compared_with']} ({versus['baseline_decisions']} decisions)",
        )
    skew = report.get("skew") or {}
    if skew:
        worst = sorted(skew.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            "train/serve skew",
            f"max {100 * report['skew_max']:.2f}% over {len(skew)} features; worst: "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in worst),
        )
    if report.get("not_evaluated"):
        table.add_row("not evaluated", report["not_evaluated"])
    for name, ok in report["checks"].items():
        table.add_row(f"check {name}", "[green]yes[/]" if ok else "[red]NO[/]")
    return table


# -- policies ------------------------------------------------------------------------------------
@policy_app.command("list")
def policy_list() -> None:
    """Every version of the policy model: aliases, DR estimate with its interval, the gate's decision
    and reason, and who moved @champion by hand and why."""
    from models.policy_admin import list_versions
    from oo.runtime import configure

    configure()
    versions = list_versions()
    if not versions:
        console.print("no policy versions registered yet (`oo train` or the policy_training DAG makes them)")
        return
    table = Table("version", "aliases", "run", "DR [95%]", "logged", "gate", "moved by hand", title="tip-policy")
    for v in versions:
        logged = v.metrics.get("logged_reward")
        moved = (
            f"{v.moves['action']} by {v.moves.get('by')} at {v.moves.get('at')}: {v.moves.get('reason')}"
            if v.moves.get("action")
            else ""
        )
        gate = f"{v.gate_decision}: {v.gate_reason}" if v.gate_decision else ""
        table.add_row(
            v.version,
            ", ".join("@" + a for a in v.aliases),
            v.run_name,
            v.interval("dr"),
            f"{logged:.3f}" if logged is not None else "",
            gate,
            moved,
        )
    console.print(table)


@policy_app.command("promote")
def policy_promote(
    version: str = typer.Argument(..., help="the model version to make @champion"),
    reason: str = typer.Option(..., "--reason", help="why (recorded on the version and its run)"),
    by: str = typer.Option("", help="who (default: the current user)"),
) -> None:
    """Point @champion at VERSION and record who and why."""
    from models.policy_admin import PolicyAdminError, promote
    from oo.runtime import configure

    configure()
    try:
        moved = promote(version, reason, by or getpass.getuser())
    except PolicyAdminError as exc:
        console.print(f"[red]not promoted[/]: {exc}")
        raise typer.Exit(1) from None
    previous = moved.moves.get("previous") or "none"
    console.print(f"@champion = v{moved.version} (was {previous}); DR {moved.interval('dr') or 'n/a'}")


@policy_app.command("rollback")
def policy_rollback(
    reason: str = typer.Option(..., "--reason", help="why (recorded on the version and its run)"),
    to: str = typer.Option("", "--to", help="the version to roll back to (default: the champion before)"),
    by: str = typer.Option("", help="who (default: the current user)"),
) -> None:
    """Point @champion back at the champion before (or --to VERSION) and record who and why."""
    from models.policy_admin import PolicyAdminError, rollback
    from oo.runtime import configure

    configure()
    try:
        moved = rollback(reason, by or getpass.getuser(), to=to or None)
    except PolicyAdminError as exc:
        console.print(f"[red]not rolled back[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(f"@champion = v{moved.version} (rolled back from v{moved.moves.get('previous')})")


# -- users ---------------------------------------------------------------------------------------
def _app_api_url() -> str:
    """The running app API's base URL, or exit with why there is none."""
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    p = get_settings().platform
    url = p.url(p.app_api_port)
    if not (ROOT / "app_api" / "main.py").exists():
        console.print(
            "[red]app API not built[/]: app_api/ is not in this checkout, so nothing can be exported or deleted"
        )
        raise typer.Exit(2)
    try:
        httpx.get(url + "/healthz", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        console.print(
            f"[red]app API not running[/] at {url} ({type(exc).__name__}); start the platform with `make run`"
        )
        raise typer.Exit(2) from None
    return url


def _token(token: str) -> str:
    return token or typer.prompt("the user's access token (from signing in to the app API)", hide_input=True)


@user_app.command("export")
def user_export(
    token: str = typer.Option("", help="the user's bearer token (asked for, hidden, when not given)"),
    out: Annotated[Path | None, typer.Option(help="write the export here (default: print it)")] = None,
) -> None:
    """Everything held about the user (GET /v1/me/export)."""
    url = _app_api_url()
    response = httpx.get(url + "/v1/me/export", headers={"Authorization": f"Bearer {_token(token)}"}, timeout=60)
    if response.status_code != 200:
        console.print(f"[red]export refused[/]: HTTP {response.status_code} {response.text[:300]}")
        raise typer.Exit(1)
    text = json.dumps(response.json(), indent=2, sort_keys=True)
    if out is None:
        console.print_json(text)
    else:
        out.write_text(text + "\n")
        console.print(f"export written to {out}")


@user_app.command("delete")
def user_delete(
    token: str = typer.Option("", help="the user's bearer token (asked for, hidden, when not given)"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
) -> None:
    """Delete the user from every store (DELETE /v1/me)."""
    url = _app_api_url()
    if not yes:
        typer.confirm("Delete this user and everything held about them?", abort=True)
    response = httpx.delete(url + "/v1/me", headers={"Authorization": f"Bearer {_token(token)}"}, timeout=60)
    if response.status_code not in (200, 202, 204):
        console.print(f"[red]delete refused[/]: HTTP {response.status_code} {response.text[:300]}")
        raise typer.Exit(1)
    console.print("user deleted" + (f": {response.text[:300]}" if response.text else ""))


if __name__ == "__main__":
    app()
