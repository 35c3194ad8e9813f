"""The ``oo`` command line: ``python -m oo.cli --help``.

``run`` is what ``make run`` calls: it starts every part of the platform that exists so far, on
the embedded defaults, and says what it started and what is not built yet.
"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="oO platform commands.")
console = Console()


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
    """Show where each store lives and how many rows each lake dataset holds."""
    from oo.lake import DATASETS, get_lake
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    s = get_settings()
    lake = get_lake()
    stores = Table("store", "where", title="oO stores")
    stores.add_row("app database", s.db_url)
    stores.add_row("lake", str(s.lake_root))
    stores.add_row("event bus", s.bus.nats_url or "in-process")
    stores.add_row("MLflow", s.mlflow_tracking_uri)
    console.print(stores)
    rows = Table("dataset", "files", "rows", title="lake datasets")
    for name in DATASETS:
        files = lake.files(name)
        rows.add_row(name, str(len(files)), str(lake.read(name).num_rows) if files else "0")
    console.print(rows)


@app.command("fake-todoist")
def fake_todoist(host: str = "127.0.0.1", port: int = 8765, users: int = 3, tasks: int = 20, seed: int = 0) -> None:
    """Serve the FAKE Todoist API v1 (seeded synthetic users) until interrupted."""
    from oo.fake_todoist import main

    main(host=host, port=port, users=users, tasks=tasks, seed=seed)


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
    status()
    console.print(
        "[bold]Started:[/] app database (migrated), lake, event bus.\n"
        "[bold]Not built yet:[/] Todoist ingestion, feature store, policies and training, "
        "serving, app API (see `issues`)."
    )


if __name__ == "__main__":
    app()
