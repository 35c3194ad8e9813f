"""The one settings object: every knob of the platform, read from ``OO_*`` environment variables.

Nested groups use ``__``: ``OO_DB__URL=postgresql://...``, ``OO_BUS__NATS_URL=nats://...``.
Embedded defaults keep all state under ``./var/`` so that ``make run`` needs no service.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_VAULT_KEY = "b08tZGV2LWtleS1uZXZlci11c2Utb3V0c2lkZS1sbyE="
"""Fernet key used in local mode only; any other mode refuses it."""


class PathsSettings(BaseModel):
    """Where embedded state lives."""

    var_dir: Path = Path("var")

    def resolve(self, *parts: str) -> Path:
        """Absolute path of ``var_dir / parts``."""
        return (self.var_dir / Path(*parts)).resolve()


class DBSettings(BaseModel):
    """The app database (users, integrations, outbox, deliveries)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means SQLite at var/app.db. postgresql://... uses psycopg 3.",
    )
    echo: bool = False


class LakeSettings(BaseModel):
    """The Parquet lake of raw snapshots, decisions and rewards."""

    root: Path | None = Field(default=None, description="unset means var/lake")


class BusSettings(BaseModel):
    """The event bus."""

    nats_url: str | None = Field(
        default=None, description="nats://host:port selects NATS JetStream; unset is in-process"
    )
    stream: str = "OO_EVENTS"
    subject_prefix: str = "oo"
    max_deliver: int = Field(default=5, ge=1, description="redeliveries before dead-lettering")
    ack_wait_s: float = Field(default=30.0, gt=0)


class RedisSettings(BaseModel):
    """Redis, used by the Feast online store when set."""

    url: str | None = Field(default=None, description="redis://host:port/db; unset means SQLite")


class FeastSettings(BaseModel):
    """The Feast feature store (``feature_repo/``): its project, registry, tables and online store."""

    project: str = Field(default="oo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$")
    data_dir: Path | None = Field(
        default=None, description="registry, SQLite online store and feature tables; unset means var/feast"
    )
    redis_key_ttl_s: int = Field(default=0, ge=0, description="Redis key TTL; 0 keeps keys")
    redis_timeout_s: float = Field(default=0.5, gt=0, description="Redis connect and read timeout")
    redis_retries: int = Field(default=1, ge=0, description="Redis retries of a failed command (10 ms backoff)")
    registry_cache_ttl_s: int = Field(default=60, ge=0, description="how long a process trusts its registry copy")


class MlflowSettings(BaseModel):
    """MLflow tracking and registry."""

    tracking_uri: str | None = Field(default=None, description="unset means SQLite at var/mlflow.db")
    artifact_root: Path | None = Field(default=None, description="unset means var/mlartifacts")
    experiment: str = "tip-policy"
    model_name: str = "tip-policy"


class VaultSettings(BaseModel):
    """Encryption of third-party tokens at rest."""

    keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr(DEV_VAULT_KEY)],
        description="Fernet keys, newest first (MultiFernet); rotate by prepending",
    )


class TodoistSettings(BaseModel):
    """The Todoist API v1."""

    base_url: str = "https://api.todoist.com/api/v1/"
    timeout_s: float = 15.0
    max_retries: int = 5
    client_secret: SecretStr = SecretStr("dev-client-secret")
    max_retry_after_s: float = Field(
        default=120.0, gt=0, description="longest Retry-After honoured; a longer one fails the user's sync"
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, description="first 5xx/timeout backoff (doubles, jittered)")
    backoff_max_s: float = Field(default=30.0, gt=0)
    schedule: str | None = Field(default="@hourly", description="cron or preset of the todoist_sync DAG")
    history_days: int = Field(default=90, ge=1, description="completion history fetched on a user's first sync")
    window_days: int = Field(default=85, ge=1, le=89, description="completed-tasks window (the API allows <= 3 months)")
    window_overlap_hours: float = Field(default=24.0, ge=0, description="overlap of consecutive windows and runs")
    page_limit: int = Field(default=200, ge=1, le=200)
    concurrency: int = Field(default=4, ge=1, le=32, description="users fetched at once by one sync_users call")
    unknown_fields: Literal["quarantine", "ignore"] = Field(
        default="quarantine", description="what to do with a task field the API docs do not list"
    )


class RewardSettings(BaseModel):
    """How reactions become rewards."""

    table: dict[str, float] = {"done": 1.0, "snooze": 0.2, "dismiss": 0.0}
    window_hours: float = Field(default=24.0, gt=0)
    default_reward: float = 0.0


class TrainingSettings(BaseModel):
    """Policy training and the promotion gate (``policy_training`` DAG)."""

    window_days: float = Field(default=28.0, gt=0, description="training examples read, ending at the interval end")
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1, description="latest share of examples held out for OPE")
    min_examples: int = Field(default=50, ge=2, description="fewer examples: the run trains nothing")
    n_bootstrap: int = Field(default=300, ge=50, description="bootstrap resamples of each OPE interval")
    seed: int = 0
    gate_metric: Literal["dr", "snips", "ips"] = "dr"
    gate_margin: float = Field(
        default=0.0, description="challenger's lower bound must beat the champion's estimate by this much"
    )


class ServingSettings(BaseModel):
    """The BentoML decision service, its online learner and the snapshots between them."""

    learner: Literal["embedded", "separate"] = Field(
        default="embedded",
        description="embedded: the service learns in-process; separate: `python -m serving.learner` learns, "
        "replicas load its snapshots",
    )
    mode: Literal["online", "apprentice"] = Field(
        default="online", description="apprentice: serve the rule baseline's pick while the learner learns"
    )
    snapshot_dir: Path | None = Field(default=None, description="policy snapshots; unset means var/serving/snapshots")
    state_dir: Path | None = Field(
        default=None, description="decision index and learner checkpoint; unset means var/serving"
    )
    snapshot_every_rewards: int = Field(default=50, ge=1, description="publish a snapshot after this many rewards")
    snapshot_every_s: float = Field(default=5.0, gt=0, description="... or after this many seconds with news")
    checkpoint_every_s: float = Field(
        default=60.0, gt=0, description="how often the learner checkpoints (the event log replays the rest)"
    )
    snapshot_poll_s: float = Field(default=0.05, ge=0, description="how often a replica looks for a newer snapshot")
    champion_poll_s: float = Field(default=30.0, gt=0, description="how often `@champion` is looked up in MLflow")
    learner_poll_s: float = Field(default=0.02, gt=0, description="how often the learner reads the event log")
    reward_hold_s: float = Field(
        default=600.0, gt=0, description="how long a reward that arrived before its decision waits for it"
    )
    max_waiting_rewards: int = Field(default=10_000, ge=1)
    max_pending: int = Field(default=100_000, ge=1, description="pending decisions the learner keeps at most")
    candidates_ttl_s: float = Field(default=30.0, ge=0, description="how long a user's open tasks are cached")
    mlflow_timeout_s: float = Field(default=3.0, gt=0, description="MLflow HTTP timeout (a dead server fails fast)")
    apprentice_window: int = Field(default=1000, ge=1, description="decisions compared in apprentice mode")


class Settings(BaseSettings):
    """All configuration of oO."""

    model_config = SettingsConfigDict(env_prefix="OO_", env_file=".env", env_nested_delimiter="__", extra="ignore")

    env: Literal["local", "staging", "prod"] = "local"
    require_services: bool = Field(default=False, description="integration tests fail instead of skipping")
    log_level: str = "INFO"
    paths: PathsSettings = PathsSettings()
    db: DBSettings = DBSettings()
    lake: LakeSettings = LakeSettings()
    bus: BusSettings = BusSettings()
    redis: RedisSettings = RedisSettings()
    feast: FeastSettings = FeastSettings()
    mlflow: MlflowSettings = MlflowSettings()
    vault: VaultSettings = VaultSettings()
    todoist: TodoistSettings = TodoistSettings()
    reward: RewardSettings = RewardSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()

    @model_validator(mode="after")
    def _no_dev_secrets_outside_local(self) -> Settings:
        if self.env != "local":
            if any(k.get_secret_value() == DEV_VAULT_KEY for k in self.vault.keys):
                raise ValueError("OO_VAULT__KEYS holds the dev key; set real keys outside local")
            if self.todoist.client_secret.get_secret_value() == "dev-client-secret":
                raise ValueError("OO_TODOIST__CLIENT_SECRET is the dev default outside local")
        return self

    @property
    def db_url(self) -> str:
        """The app database URL, SQLite under var/ by default."""
        return self.db.url or f"sqlite:///{self.paths.resolve('app.db')}"

    @property
    def lake_root(self) -> Path:
        """The lake's root folder."""
        return (self.lake.root or self.paths.resolve("lake")).resolve()

    @property
    def feast_dir(self) -> Path:
        """Where the Feast registry, SQLite online store and feature tables live."""
        return (self.feast.data_dir or self.paths.resolve("feast")).resolve()

    @property
    def serving_state_dir(self) -> Path:
        """Serving's own state: the decision index and the learner's checkpoint."""
        return (self.serving.state_dir or self.paths.resolve("serving")).resolve()

    @property
    def snapshot_dir(self) -> Path:
        """Where the learner publishes policy snapshots and replicas read them."""
        return (self.serving.snapshot_dir or self.serving_state_dir / "snapshots").resolve()

    @property
    def mlflow_tracking_uri(self) -> str:
        """MLflow's backend store URI (SQLite under var/ by default)."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.paths.resolve('mlflow.db')}"

    @property
    def mlflow_artifact_root(self) -> Path:
        """Where MLflow artifacts go when the experiment is created here."""
        return (self.mlflow.artifact_root or self.paths.resolve("mlartifacts")).resolve()


@lru_cache
def get_settings() -> Settings:
    """The process's settings, built once on first use."""
    return Settings()
