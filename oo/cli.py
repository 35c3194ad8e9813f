"""The ``oo`` command line: ``python -m oo.cli --help``.

``run`` is the batch half of ``make run``'s first seeding (``make demo-batch``): it starts the
parts it needs on the embedded defaults and says what it started.
"""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from oo.launcher import wide_console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="oO platform commands.")
console = wide_console()


@app.command()
def migrate() -> None:
    """Upgrade the app database to the newest migration."""
    from oo.db import migrate as upgrade
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    upgrade()
    console.print(f"app database at head: {get_settings().db_url}")


@app.command()
def status() -> None:
    """Whether each store and service is healthy (exit code 1 when one is down), then how many
    rows each lake dataset holds."""
    from oo.health import check_all
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    checks = check_all(get_settings())
    colour = {"ok": "green", "down": "red", "not configured": "dim", "not built": "yellow"}
    health = Table(title="oO status")
    health.add_column("store or service", no_wrap=True)
    health.add_column("state", no_wrap=True)
    health.add_column("where", overflow="fold")
    health.add_column("detail", overflow="fold")
    for c in checks:
        health.add_row(c.name, f"[{colour[c.state]}]{c.state}[/]", c.where, c.detail)
    console.print(health)
    _lake_table()
    down = [c.name for c in checks if c.state == "down"]
    if down:
        console.print(f"[red]down:[/] {', '.join(down)}")
        raise typer.Exit(1)


@app.command("fake-todoist")
def fake_todoist(host: str = "127.0.0.1", port: int = 8765, users: int = 3, tasks: int = 20, seed: int = 0) -> None:
    """Serve the FAKE Todoist API v1 (seeded synthetic users) until interrupted."""
    from oo.fakes.todoist import main

    main(host=host, port=port, users=users, tasks=tasks, seed=seed)


@app.command("todoist-connect")
def todoist_connect(user_id: str) -> None:
    """Store USER_ID's Todoist token (asked for, hidden; or piped on stdin), encrypted."""
    import sys

    from pydantic import SecretStr

    from oo.db import get_engine
    from oo.db import migrate as upgrade
    from oo.integrations.todoist.sync import connect_user
    from oo.runtime import configure
    from oo.vault import get_vault

    configure()
    upgrade()
    raw = sys.stdin.readline() if not sys.stdin.isatty() else typer.prompt("Todoist token", hide_input=True)
    token = SecretStr(raw.strip())
    if not token.get_secret_value():
        raise typer.BadParameter("an empty token")
    connect_user(get_engine(), get_vault(), user_id, token)
    console.print(f"{user_id}: Todoist connected (token encrypted); the next sync is a full one")


@app.command("todoist-sync")
def todoist_sync() -> None:
    """Sync every connected user's Todoist into the lake once (what one DAG run does)."""
    from oo.integrations.todoist.sync import connected_users, summarize, sync_users
    from oo.runtime import configure

    configure()
    from oo.db import get_engine
    from oo.db import migrate as upgrade

    upgrade()
    console.print(summarize(sync_users(connected_users(get_engine()))))


@app.command()
def run() -> None:
    """Start what exists of the platform on the embedded defaults, and say what it started."""
    from oo.bus import get_bus
    from oo.runtime import configure

    configure()
    migrate()
    bus = get_bus()
    asyncio.run(bus.close())
    console.print(f"event bus ready: {type(bus).__name__}")
    todoist_demo()
    _lake_table()
    console.print(
        "[bold]Started:[/] app database (migrated), lake, event bus; Todoist ingestion ran against the "
        "FAKE Todoist API (synthetic users).\n"
        "[bold]Next:[/] simulated traffic and the events_ingest, features and policy_training DAGs "
        "(`make demo-batch`); `make run` then starts the services."
    )


def _lake_table() -> None:
    from oo.lake import DATASETS, get_lake

    lake = get_lake()
    rows = Table("dataset", "files", "rows", title="lake datasets")
    for name in DATASETS:
        files = lake.files(name)
        count = lake.read(name, columns=DATASETS[name].key_fields[:1]).num_rows if files else 0
        rows.add_row(name, str(len(files)), str(count))
    console.print(rows)


@app.command("todoist-demo")
def todoist_demo(users: int = 3, tasks: int = 20, seed: int = 0) -> None:
    """Ingestion on the FAKE Todoist API: connect synthetic users, sync, let their tasks change,
    sync again (incremental), and say what landed in the lake. Never calls the real Todoist."""
    from pydantic import SecretStr

    from oo.db import get_engine
    from oo.fakes.todoist import FakeTodoist, serve_in_thread
    from oo.integrations.todoist.sync import connect_user, summarize, sync_users
    from oo.lake import get_lake
    from oo.runtime import configure
    from oo.vault import get_vault

    configure()
    world = FakeTodoist.seeded(seed=seed, users=users, tasks_per_user=tasks)
    with serve_in_thread(world) as url:
        console.print(f"[bold]FAKE Todoist API v1[/] (synthetic data, not todoist.com) at {url}")
        engine, lake, vault = get_engine(), get_lake(), get_vault()
        ids = []
        for i, account in enumerate(world.users, start=1):
            user_id = f"demo-{i}"
            # a demo user: its fake token is bound to this server and is never sent elsewhere
            connect_user(engine, vault, user_id, SecretStr(account.token), demo_base_url=url)
            ids.append(user_id)
        first = sync_users(ids, engine=engine, lake=lake, vault=vault, chunk=len(ids))
        console.print("first sync (full):       " + summarize(first))
        world.evolve(1)  # tasks added, edited, completed, deleted
        again = sync_users(ids, engine=engine, lake=lake, vault=vault, chunk=len(ids))
        console.print("second sync (incremental): " + summarize(again))


if __name__ == "__main__":
    app()
