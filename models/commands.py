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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
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


@app.command()
def simulate(
    users: int = typer.Option(20, help="simulated users"),
    days: float = typer.Option(3.0, help="days of traffic, ending now"),
    seed: int = typer.Option(0, help="seed of the simulated world"),
) -> None:
    """SIMULATED traffic into the event log and the lake (``models.cli simulate``; the closed loop
    through the app API comes with serving and the app)."""
    with _progress() as progress:
        progress.add_task(f"simulating {users} users over {days:g} days", total=None)
        models_cli.simulate(users=users, days=days, seed=seed)


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
