"""The `oo` command: status of every store and service, policy versions with the gate's evidence,
moving @champion by hand with who and why recorded, training once, and users through the app API."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.commands import app
from oo.settings import Settings, get_settings

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("OO_FEAST__PROJECT", f"cmd_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("OO_TRAINING__N_BOOTSTRAP", "50")
    for port in ("APP_API", "SERVING", "MLFLOW", "AIRFLOW"):  # nothing listens there
        monkeypatch.setenv(f"OO_PLATFORM__{port}_PORT", str(_closed_port()))
    from rich.console import Console

    import models.commands
    import oo.cli

    for module in (models.commands, oo.cli):  # wide tables: no cell wraps in the asserted output
        monkeypatch.setattr(module, "console", Console(width=400))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real training outcomes through the gate, once per module: v1 and v2 (its MLflow database)."""
    from models.policies import UniformRandom
    from models.registry import Registry
    from models.simulation import Simulator
    from models.training import CandidateSpec, train_candidates

    var = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OO_PATHS__VAR_DIR", str(var))
        get_settings.cache_clear()
        examples = Simulator(n_users=8, seed=3).log(UniformRandom(seed=3), 900)
        registry = Registry()
        for i, spec in enumerate([CandidateSpec("softmax", 0.05, 0.05), CandidateSpec("epsilon_greedy", 0.05, 0.05)]):
            outcome = train_candidates(examples, grid=[spec], n_bootstrap=50)
            registry.register_outcome(outcome, interval_key=f"i{i}", n_examples=len(examples))
    get_settings.cache_clear()
    return var / "mlflow.db"


@pytest.fixture
def two_versions(env: Settings, trained_registry: Path) -> list[str]:
    """This test's own copy of the trained registry (artifacts are shared, read-only)."""
    shutil.copy(trained_registry, env.paths.resolve("mlflow.db"))
    return ["1", "2"]


def test_policy_list_shows_aliases_the_dr_interval_and_the_gate_reason(two_versions: list[str]) -> None:
    from models.policy_admin import list_versions
    from models.registry import Registry

    versions = list_versions()
    assert [v.version for v in versions] == ["2", "1"]
    registry = Registry()
    assert "challenger" in versions[0].aliases
    first = versions[1]
    # 8 users and 900 decisions are too few for the gate: it refuses, and says why
    assert first.gate_decision == "refused" and first.gate_reason.startswith("not enough evidence")
    assert first.metrics["dr_low"] <= first.metrics["dr"] <= first.metrics["dr_high"]

    out = runner.invoke(app, ["policy", "list"])
    assert out.exit_code == 0, out.output
    assert "@challenger" in out.output and first.interval("dr") in out.output
    assert first.gate_reason[:40] in " ".join(out.output.split())
    assert registry.version_for("champion") is None and "@champion" not in out.output


def test_promote_and_rollback_move_champion_and_record_who_and_why(two_versions: list[str]) -> None:
    from models.policy_admin import list_versions
    from models.registry import Registry

    registry = Registry()
    before = registry.version_for("champion")
    target = "2" if before != "2" else "1"
    out = runner.invoke(app, ["policy", "promote", target, "--reason", "canary looked good", "--by", "alice"])
    assert out.exit_code == 0, out.output
    assert registry.version_for("champion") == target
    moved = {v.version: v for v in list_versions()}[target]
    assert moved.moves["action"] == "promote" and moved.moves["by"] == "alice"
    assert moved.moves["reason"] == "canary looked good" and moved.moves["previous"] == (before or "")
    run_tags = registry.client.get_run(moved.run_id).data.tags
    assert run_tags["oo.champion.by"] == "alice" and run_tags["oo.champion.action"] == "promote"

    if before is None:  # nothing to roll back to: said so, nothing moved
        out = runner.invoke(app, ["policy", "rollback", "--reason", "regression", "--by", "bob"])
        assert out.exit_code == 1 and "no champion before" in out.output
        assert registry.version_for("champion") == target
        out = runner.invoke(app, ["policy", "rollback", "--reason", "regression", "--by", "bob", "--to", "1"])
        assert out.exit_code == 0, out.output
        back_to = "1"
    else:
        out = runner.invoke(app, ["policy", "rollback", "--reason", "regression", "--by", "bob"])
        assert out.exit_code == 0, out.output
        back_to = before
    assert registry.version_for("champion") == back_to
    rolled = {v.version: v for v in list_versions()}[back_to]
    assert rolled.moves["action"] == "rollback" and rolled.moves["by"] == "bob"
    assert rolled.moves["previous"] == target
    listed = runner.invoke(app, ["policy", "list"])
    assert "rollback by bob" in listed.output


def test_bad_moves_are_refused_with_a_reason_and_move_nothing(two_versions: list[str]) -> None:
    from models.policy_admin import PolicyAdminError, promote
    from models.registry import Registry

    registry = Registry()
    before = registry.version_for("champion")
    out = runner.invoke(app, ["policy", "promote", "99", "--reason", "typo"])
    assert out.exit_code == 1 and "no version 99" in out.output and "versions: 1, 2" in out.output
    with pytest.raises(PolicyAdminError, match="reason is required"):
        promote("2", "  ", "alice")
    runner.invoke(app, ["policy", "promote", "2", "--reason", "r"])
    out = runner.invoke(app, ["policy", "promote", "2", "--reason", "again"])
    assert out.exit_code == 1 and "already @champion" in out.output
    assert registry.version_for("champion") == "2" and before != "99"


def test_policy_commands_with_no_versions_say_so(env: Settings) -> None:
    out = runner.invoke(app, ["policy", "list"])
    assert out.exit_code == 0 and "no policy versions registered yet" in out.output
    out = runner.invoke(app, ["policy", "rollback", "--reason", "x"])
    assert out.exit_code == 1 and "no @champion to roll back" in out.output


def test_train_with_too_few_examples_trains_nothing_and_says_so(env: Settings) -> None:
    out = runner.invoke(app, ["train"])
    assert out.exit_code == 1 and "nothing trained" in out.output


def test_status_reports_each_store_and_service_and_fails_when_one_is_down(env: Settings) -> None:
    from oo.health import check_all

    checks = {c.name: c for c in check_all(env)}
    assert checks["lake"].state == "ok" and checks["lake"].detail == "empty (nothing written yet)"
    assert checks["app database"].state == "down" and "does not exist yet" in checks["app database"].detail
    assert checks["event bus (NATS)"].state == "not configured" and checks["Redis"].state == "not configured"
    assert checks["Airflow"].state == "down" and "not running" in checks["Airflow"].detail
    assert checks["MLflow server"].state == "down"
    out = runner.invoke(app, ["migrate"])
    assert out.exit_code == 0, out.output
    assert {c.name: c for c in check_all(get_settings())}["app database"].state == "ok"
    out = runner.invoke(app, ["status"])
    assert out.exit_code == 1 and "down:" in out.output and "Airflow" in out.output


def test_status_checks_redis_and_nats_when_configured(env: Settings, redis_url: str, nats_url: str) -> None:
    from oo.health import check_nats, check_online_store, check_redis

    configured = Settings(redis={"url": redis_url}, bus={"nats_url": nats_url})
    assert check_redis(configured).state == "ok" and check_online_store(configured).state == "ok"
    assert check_nats(configured).state == "ok" and "JetStream" in check_nats(configured).detail
    dead = Settings(
        redis={"url": f"redis://127.0.0.1:{_closed_port()}/0"}, bus={"nats_url": f"nats://127.0.0.1:{_closed_port()}"}
    )
    assert check_redis(dead).state == "down" and check_nats(dead).state == "down"


def test_services_answer_healthy_or_not_over_http(env: Settings) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from oo.health import check_airflow, check_http

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            healthy = self.path != "/sick"
            body = b'{"metadatabase": {"status": "healthy"}, "scheduler": {"status": "%s"}}' % (
                b"healthy" if healthy else b"unhealthy"
            )
            self.send_response(200 if self.path != "/500" else 500)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert check_http("x", base + "/readyz").state == "ok"
        assert check_http("x", base + "/500").state == "down"
        assert check_http("x", base + "/500", built=False, why_not_built="no code").state == "not built"
        assert check_airflow(base + "/health").state == "ok"
        sick = check_airflow(base + "/sick")
        assert sick.state == "down" and "scheduler" in sick.detail
    finally:
        server.shutdown()
        server.server_close()


def test_user_commands_say_the_app_api_is_not_built_or_not_running(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.commands as commands

    monkeypatch.setattr(commands, "ROOT", env.paths.var_dir)  # a checkout without app_api/
    out = runner.invoke(app, ["user", "export", "--token", "t"])
    assert out.exit_code == 2 and "app API not built" in out.output
    (env.paths.var_dir / "app_api").mkdir()
    (env.paths.var_dir / "app_api" / "main.py").touch()
    out = runner.invoke(app, ["user", "delete", "--token", "t", "--yes"])
    assert out.exit_code == 2 and "app API not running" in out.output and "make run" in out.output


def test_simulate_writes_simulated_events_and_says_so(env: Settings) -> None:
    out = runner.invoke(app, ["simulate-events", "--users", "2", "--days", "1", "--seed", "4"])
    assert out.exit_code == 0, out.output
    assert "SIMULATED traffic" in out.output
    assert (env.paths.resolve("events")).exists()
