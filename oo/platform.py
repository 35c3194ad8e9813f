"""``make run``: the whole platform on one machine, on the embedded defaults.

``python -m oo.platform up`` starts, each as a child process with its logs prefixed by its name:

- ``todoist``: the FAKE Todoist API v1 with synthetic demo users (not when ``OO_TODOIST__BASE_URL``
  is set: then that API is used and nothing is started);
- ``airflow``: ``airflow standalone`` (API server, scheduler, DAG processor, triggerer) with the
  project's DAGs unpaused and ``OO_PLATFORM__AIRFLOW_PARALLELISM`` (2) workers;
- ``mlflow``: the MLflow tracking server and UI on the project's tracking store and artifact root;
- ``learner``: with ``OO_SERVING__LEARNER=separate`` only, the one online learner
  (``python -m serving.learner``) whose snapshots serving follows;
- ``serving``: the BentoML service (``serving.service:TipService``), once it exists;
- ``app-api``: the FastAPI app (``app_api.main:create_app``), once it exists; once healthy, the
  demo login (:data:`DEMO_EMAIL` / :data:`DEMO_PASSWORD`, local mode only) is created and
  connected to the fake Todoist's first user, whose tasks are synced once.

A service whose code is not in this checkout is reported *not built* and skipped. Each port is
a setting (``OO_PLATFORM__*_PORT``), each command can be replaced (``OO_PLATFORM__COMMANDS``)
and a service left out (``OO_PLATFORM__SKIP``). On the first start (no ``var/platform/seeded``),
the ``--seed`` command (``make run`` passes ``make demo-batch``) fills the stores with simulated
history first, so that MLflow and the dashboards are not empty.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console

from oo.launcher import Launcher, Service
from oo.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
"""The repository (services run from here)."""

SEED_NOTE = (
    "SIMULATED history: synthetic users and their Todoist tasks, and the decisions, reactions and "
    "rewards a simulator makes for them, run through the real DAGs (events_ingest, features, "
    "policy_training) into the lake, the feature store and MLflow."
)

DEMO_EMAIL = "demo@example.org"
DEMO_PASSWORD = "oo-demo-password"  # local mode only, printed in the table
"""The demo login ``make run`` creates (local mode only); anyone may also sign up on the page."""

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run the oO platform on one machine.")


def tool(name: str) -> str:
    """The venv's own executable ``name`` (next to this Python), else ``name`` from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def todoist_is_external(settings: Settings) -> bool:
    """Whether a Todoist API was configured (``OO_TODOIST__BASE_URL``): then no fake is started."""
    return "base_url" in settings.todoist.model_fields_set


def airflow_password(settings: Settings) -> str | None:
    """The admin password ``airflow standalone`` generated, once it has."""
    home = Path(os.environ.get("AIRFLOW_HOME", str(settings.paths.resolve("airflow"))))
    try:
        passwords: dict[str, str] = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return passwords.get("admin")


def child_env() -> dict[str, str]:
    """What every child gets: the venv first on PATH, unbuffered output, readable logs on a terminal."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        # `airflow standalone` starts its parts as `airflow ...` from PATH (stack-notes §2)
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "OO_LOG_FORMAT": os.environ.get("OO_LOG_FORMAT", "console" if sys.stdout.isatty() else "json"),
        "PYTHONUNBUFFERED": "1",
    }


def platform_services(settings: Settings, root: Path = ROOT) -> list[Service]:
    """The platform's services, as the settings and this checkout have them."""
    p = settings.platform
    external_todoist = todoist_is_external(settings)
    fake_url = f"{p.url(p.todoist_port)}/api/v1/"
    common = child_env()
    if not external_todoist:
        common["OO_TODOIST__BASE_URL"] = fake_url
    if "serving_url" not in settings.app.model_fields_set:  # the app API asks the serving started here
        common["OO_APP__SERVING_URL"] = p.url(p.serving_port)
    todoist = Service(
        name="todoist",
        command=[
            sys.executable,
            "-m",
            "oo.cli",
            "fake-todoist",
            "--host",
            p.host,
            "--port",
            str(p.todoist_port),
            "--users",
            str(p.todoist_users),
        ],  # fmt: skip
        url=fake_url,
        port=p.todoist_port,
        health_url=fake_url + "projects",
        any_http_status=True,  # it answers 401 without a token: it is up
        external=settings.todoist.base_url if external_todoist else "",
        notes=[] if external_todoist else _fake_todoist_notes(p.todoist_users),
    )
    airflow = Service(
        name="airflow",
        command=[tool("airflow"), "standalone"],
        url=p.url(p.airflow_port),
        port=p.airflow_port,
        health_url=p.url(p.airflow_port) + "/api/v2/monitor/health",
        env={
            "AIRFLOW__CORE__PARALLELISM": str(p.airflow_parallelism),
            "AIRFLOW__API__HOST": p.host,
            "AIRFLOW__API__PORT": str(p.airflow_port),
            # where task workers reach the execution API (`{base_url}/execution/`); unset, Airflow
            # assumes localhost:8080 and every task fails on another port
            "AIRFLOW__API__BASE_URL": p.url(p.airflow_port),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        },
        # DAGs first seen by `airflow dags test` (the seeding) may have been created paused
        after_healthy=[[tool("airflow"), "dags", "unpause", "--treat-dag-id-as-regex", "-y", ".*"]],
        notes=["DAGs unpaused"],
        late_notes=lambda: [f"login: admin / {airflow_password(settings) or '(see AIRFLOW_HOME)'}"],
    )
    mlflow = Service(
        name="mlflow",
        command=[
            tool("mlflow"),
            "server",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            settings.mlflow_artifact_root.as_uri(),
            "--host",
            p.host,
            "--port",
            str(p.mlflow_port),
            "--workers",
            "1",
        ],  # fmt: skip
        url=p.url(p.mlflow_port),
        port=p.mlflow_port,
        health_url=p.url(p.mlflow_port) + "/health",
        notes=[f"experiment {settings.mlflow.experiment}, model {settings.mlflow.model_name}"],
    )
    serving = Service(
        name="serving",
        command=[
            tool("bentoml"),
            "serve",
            "serving.service:TipService",
            "--host",
            p.host,
            "--port",
            str(p.serving_port),
        ],  # fmt: skip
        url=p.url(p.serving_port),
        port=p.serving_port,
        health_url=p.url(p.serving_port) + "/readyz",
        built=(root / "serving" / "service.py").exists(),
        why_not_built="serving/service.py is not in this checkout yet",
    )
    learner = Service(
        name="learner",
        command=[sys.executable, "-m", "serving.learner"],
        notes=["the one online learner (OO_SERVING__LEARNER=separate); serving follows its snapshots"],
        built=(root / "serving" / "learner.py").exists(),
        why_not_built="serving/learner.py is not in this checkout yet",
    )
    demo = settings.env == "local"
    demo_command = [sys.executable, "-m", "oo.platform", "demo-account", "--api", p.url(p.app_api_port)]
    if not external_todoist:
        demo_command += ["--todoist-token", _fake_todoist_tokens(p.todoist_users)[0]]
    app_api = Service(
        name="app-api",
        command=[
            tool("uvicorn"),
            "--factory",
            "app_api.main:create_app",
            "--host",
            p.host,
            "--port",
            str(p.app_api_port),
        ],  # fmt: skip
        url=p.url(p.app_api_port),
        port=p.app_api_port,
        health_url=p.url(p.app_api_port) + "/healthz",
        built=(root / "app_api" / "main.py").exists(),
        why_not_built="app_api/main.py is not in this checkout yet",
        notes=[
            f"the page: {p.url(p.app_api_port)}/",
            *(
                [f"demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}"]
                + ([] if external_todoist else ["  (Todoist connected to the fake's first user)"])
                if demo
                else []
            ),
            "or sign up there (any email, a password of 12+ characters)",
            "API docs: /docs",
        ],
        after_healthy=[demo_command] if demo else [],
    )
    services = [todoist, airflow, mlflow, serving, app_api]
    if settings.serving.learner == "separate":
        services.insert(services.index(serving), learner)
    for service in services:
        service.cwd = root
        service.env = {**common, **service.env}
        if service.name in p.commands:
            service.command = shlex.split(p.commands[service.name])
        if service.name in p.skip and not service.external:
            service.external = "skipped (OO_PLATFORM__SKIP)"
    return services


def _fake_todoist_tokens(users: int) -> list[str]:
    """The personal tokens of the fake Todoist's users (the seed ``make run`` starts it with)."""
    from oo.fakes.todoist import FakeTodoist

    return [u.token for u in FakeTodoist.seeded(seed=0, users=users, tasks_per_user=20).users]


def _fake_todoist_notes(users: int) -> list[str]:
    return ["FAKE API, synthetic users; demo tokens:"] + [f"  {t}" for t in _fake_todoist_tokens(users)[:3]]


def ensure_demo_account(api: str, todoist_token: str | None, timeout_s: float = 30.0) -> str:
    """Create the demo login on the app API at ``api`` (or sign in when it exists), connect its
    Todoist with ``todoist_token`` unless connected, and sync it once; the account's user id."""
    import httpx

    with httpx.Client(base_url=api, timeout=timeout_s) as client:
        credentials = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        r = client.post("/v1/auth/register", json=credentials)
        if r.status_code == 409:
            r = client.post("/v1/auth/login", json=credentials)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"demo account: HTTP {r.status_code} {r.text[:200]}")
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        user_id = str(client.get("/v1/auth/me", headers=headers).raise_for_status().json()["id"])
        status = client.get("/v1/integrations/todoist", headers=headers).raise_for_status().json()["status"]
        if todoist_token and status != "active":
            client.post("/v1/integrations/todoist", json={"token": todoist_token}, headers=headers).raise_for_status()
    if todoist_token:
        from oo.integrations.todoist.sync import sync_users

        sync_users([user_id])  # what the hourly todoist_sync DAG would do, now, for the demo login
    return user_id


def build_launcher(settings: Settings, seed: str | None = None, console: Console | None = None) -> Launcher:
    """The launcher of the platform's services, with the seeding command when given."""
    return Launcher(
        platform_services(settings),
        run_dir=settings.paths.resolve("platform"),
        log_dir=settings.paths.resolve("logs", "platform"),
        console=console,
        health_timeout_s=settings.platform.health_timeout_s,
        stop_timeout_s=settings.platform.stop_timeout_s,
        seed=shlex.split(seed) if seed else None,
        seed_marker=settings.paths.resolve("platform", "seeded"),
        seed_note=SEED_NOTE,
        seed_env=child_env(),
        title="oO platform",
    )


@app.callback()
def main() -> None:
    """Run the oO platform on one machine (`make run` is `up`)."""


@app.command()
def up(
    seed: str = typer.Option(
        "", help="command that seeds simulated history on the first start (make run: make demo-batch)"
    ),
) -> None:
    """Start every built service, wait until healthy, print where they run, stream their logs
    until Ctrl-C, then stop them all."""
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    settings = get_settings()
    raise typer.Exit(build_launcher(settings, seed=seed or None).up())


@app.command("demo-account")
def demo_account(
    api: str = typer.Option(..., help="the app API's base URL"),
    todoist_token: str = typer.Option("", help="a (fake) Todoist personal token to connect"),
) -> None:
    """Create the demo login (or find it), connect its Todoist and sync it once (idempotent)."""
    from oo.runtime import configure

    configure()
    user_id = ensure_demo_account(api, todoist_token or None)
    Console().print(f"demo login {DEMO_EMAIL} ready (user {user_id})")


if __name__ == "__main__":
    app()
