"""What `make run` starts: the platform's services as the settings and the checkout have them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oo.platform import platform_services, todoist_is_external
from oo.settings import Settings


def test_every_service_listens_where_its_setting_says_and_has_its_health_check(tmp_path: Path) -> None:
    s = Settings(platform={"app_api_port": 18000, "serving_port": 13000, "mlflow_port": 15000, "airflow_port": 18080})
    services = {x.name: x for x in platform_services(s, root=tmp_path)}
    assert list(services) == ["todoist", "airflow", "mlflow", "serving", "app-api"]
    assert services["app-api"].health_url == "http://127.0.0.1:18000/healthz"
    assert services["serving"].health_url == "http://127.0.0.1:13000/readyz"
    assert services["mlflow"].health_url == "http://127.0.0.1:15000/health"
    assert services["airflow"].health_url == "http://127.0.0.1:18080/api/v2/monitor/health"
    assert services["todoist"].port == 8765 and services["todoist"].any_http_status
    mlflow = services["mlflow"].command
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == s.mlflow_tracking_uri
    assert mlflow[mlflow.index("--port") + 1] == "15000"
    assert services["serving"].command[1:3] == ["serve", "serving.service:TipService"]
    assert services["app-api"].env["OO_APP__SERVING_URL"] == "http://127.0.0.1:13000"  # the serving started here
    assert services["app-api"].command[1:3] == ["--factory", "app_api.main:create_app"]


def test_airflow_gets_two_workers_its_api_on_loopback_unpaused_dags_and_the_venv_on_path(tmp_path: Path) -> None:
    airflow = {x.name: x for x in platform_services(Settings(), root=tmp_path)}["airflow"]
    assert airflow.command[-1] == "standalone"
    assert airflow.env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert airflow.env["AIRFLOW__API__HOST"] == "127.0.0.1" and airflow.env["AIRFLOW__API__PORT"] == "8080"
    assert airflow.env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"  # the workers' execution API
    assert airflow.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert airflow.env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert ["unpause", "--treat-dag-id-as-regex"] == airflow.after_healthy[0][2:4]


def test_serving_and_the_app_api_are_not_built_until_their_code_exists(tmp_path: Path) -> None:
    services = {x.name: x for x in platform_services(Settings(), root=tmp_path)}
    assert not services["serving"].built and "serving/service.py" in services["serving"].why_not_built
    assert not services["app-api"].built and not services["app-api"].to_start
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "service.py").touch()
    (tmp_path / "app_api").mkdir()
    (tmp_path / "app_api" / "main.py").touch()
    services = {x.name: x for x in platform_services(Settings(), root=tmp_path)}
    assert services["serving"].to_start and services["app-api"].to_start


def test_the_fake_todoist_runs_unless_a_todoist_api_is_configured_and_children_use_it(tmp_path: Path) -> None:
    services = {x.name: x for x in platform_services(Settings(), root=tmp_path)}
    assert services["todoist"].to_start
    assert services["app-api"].env["OO_TODOIST__BASE_URL"] == "http://127.0.0.1:8765/api/v1/"
    assert any("demo tokens" in n for n in services["todoist"].notes)
    real = Settings(todoist={"base_url": "https://todoist.example/api/v1/"})
    assert todoist_is_external(real) and not todoist_is_external(Settings())
    services = {x.name: x for x in platform_services(real, root=tmp_path)}
    assert not services["todoist"].to_start and services["todoist"].external == "https://todoist.example/api/v1/"
    assert "OO_TODOIST__BASE_URL" not in services["airflow"].env


def test_commands_can_be_replaced_and_services_skipped_by_settings(tmp_path: Path) -> None:
    s = Settings(platform={"commands": {"mlflow": "mlflow ui --port 5001"}, "skip": ["airflow"]})
    services = {x.name: x for x in platform_services(s, root=tmp_path)}
    assert services["mlflow"].command == ["mlflow", "ui", "--port", "5001"]
    assert not services["airflow"].to_start and "skipped" in services["airflow"].external


@pytest.mark.parametrize("port", ["0", "not-a-port"])
def test_a_bad_port_setting_is_refused(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_PLATFORM__APP_API_PORT", port)
    with pytest.raises(ValueError, match="app_api_port"):
        Settings()


def test_a_separate_learner_is_started_before_serving_only_when_the_settings_ask_for_one(tmp_path: Path) -> None:
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "learner.py").touch()
    embedded = [x.name for x in platform_services(Settings(), root=tmp_path)]
    assert "learner" not in embedded
    separate = platform_services(Settings(serving={"learner": "separate"}), root=tmp_path)
    names = [x.name for x in separate]
    assert names.index("learner") == names.index("serving") - 1
    learner = separate[names.index("learner")]
    assert learner.command == [sys.executable, "-m", "serving.learner"] and learner.to_start
    assert learner.port is None  # no HTTP: running is healthy


def test_the_table_shows_the_demo_login_which_is_created_once_the_app_api_is_healthy(tmp_path: Path) -> None:
    from oo.platform import DEMO_EMAIL, DEMO_PASSWORD, _fake_todoist_tokens

    app_api = {x.name: x for x in platform_services(Settings(), root=tmp_path)}["app-api"]
    assert f"demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}" in app_api.notes
    assert "the page: http://127.0.0.1:8000/" in app_api.notes
    (command,) = app_api.after_healthy
    assert command[1:4] == ["-m", "oo.platform", "demo-account"]
    assert command[command.index("--todoist-token") + 1] == _fake_todoist_tokens(3)[0]
    staging = Settings(
        env="staging", vault={"keys": ["x" * 43 + "="]}, todoist={"client_secret": "s"}, auth={"secret_key": "k" * 40}
    )
    app_api = {x.name: x for x in platform_services(staging, root=tmp_path)}["app-api"]
    assert app_api.after_healthy == [] and not any("demo login" in n for n in app_api.notes)
