"""Settings: one object, OO_ variables, embedded defaults under var/, no dev secrets outside local."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from oo.settings import Settings


def test_defaults_are_embedded_and_under_var(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_PATHS__VAR_DIR", str(tmp_path))
    s = Settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'app.db'}"
    assert s.lake_root == tmp_path / "lake"
    assert s.mlflow_tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.mlflow_tracking_uri
    assert s.bus.nats_url is None and s.redis.url is None and s.db.url is None


def test_nested_values_come_from_oo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_DB__URL", "postgresql://db/oo")
    monkeypatch.setenv("OO_BUS__NATS_URL", "nats://bus:4222")
    monkeypatch.setenv("OO_REWARD__WINDOW_HOURS", "6")
    s = Settings()
    assert (s.db_url, s.bus.nats_url, s.reward.window_hours) == ("postgresql://db/oo", "nats://bus:4222", 6.0)


def test_the_dev_vault_key_is_refused_outside_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_ENV", "prod")
    with pytest.raises(ValidationError, match="dev key"):
        Settings()


def test_more_than_one_serving_worker_needs_the_separate_learner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_SERVING__WORKERS", "2")
    with pytest.raises(ValidationError, match="learner='separate'"):
        Settings()  # two embedded learners would each learn half the decisions
    monkeypatch.setenv("OO_SERVING__LEARNER", "separate")
    assert Settings().serving.workers == 2


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.vault.keys[0].get_secret_value() not in repr(s)


def test_var_resolves_against_the_project_root_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oo.settings import Settings, project_root

    root = Path(__file__).resolve().parents[2]
    assert project_root() == root and (root / "pyproject.toml").is_file()
    monkeypatch.chdir(tmp_path)
    s = Settings(paths={"var_dir": "var"}, lake={"root": "var/elsewhere"})
    assert s.paths.resolve("app.db") == root / "var" / "app.db"
    assert s.lake_root == root / "var" / "elsewhere" and s.feast_dir == root / "var" / "feast"
    assert s.db_url == f"sqlite:///{root / 'var' / 'app.db'}"
    absolute = Settings(paths={"var_dir": str(tmp_path / "state")})
    assert absolute.lake_root == tmp_path / "state" / "lake"  # an absolute setting is kept as it is
    assert Settings(paths={"root": str(tmp_path), "var_dir": "v"}).lake_root == tmp_path / "v" / "lake"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OO_REWARD__TABLE", '{"done": 1.0, "snooze": 1.5, "dismiss": 0.0}', r"'snooze' must be a number in \[0, 1\]"),
        ("OO_REWARD__TABLE", '{"done": 1.0, "snooze": -0.2, "dismiss": 0.0}', r"'snooze' must be a number in \[0, 1\]"),
        ("OO_REWARD__TABLE", '{"done": NaN, "snooze": 0.2, "dismiss": 0.0}', r"'done' must be a number in \[0, 1\]"),
        ("OO_REWARD__TABLE", '{"done": 1.0, "dismiss": 0.0}', r"missing \['snooze'\]"),
        ("OO_REWARD__TABLE", '{"done": 1.0, "snooze": 0.2, "dismiss": 0.0, "like": 1}', r"unknown \['like'\]"),
        ("OO_REWARD__DEFAULT_REWARD", "2", "default_reward"),
        ("OO_REWARD__DEFAULT_REWARD", "nan", "default_reward"),
    ],
)
def test_a_reward_table_outside_the_reward_contract_fails_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_the_default_reward_table_satisfies_the_reward_contract() -> None:
    from data_contracts.events import Reaction

    s = Settings()
    assert set(s.reward.table) == {r.value for r in Reaction}
    assert all(0.0 <= v <= 1.0 for v in s.reward.table.values()) and 0.0 <= s.reward.default_reward <= 1.0
