"""The one settings object: every knob of the platform, read from ``OO_*`` environment variables.

Nested groups use ``__``: ``OO_DB__URL=postgresql://...``, ``OO_BUS__NATS_URL=nats://...``.
Embedded defaults keep all state under ``./var/`` so that ``make run`` needs no service.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from data_contracts.events import Reaction

DEV_VAULT_KEY = "b08tZGV2LWtleS1uZXZlci11c2Utb3V0c2lkZS1sbyE="
"""Fernet key used in local mode only; any other mode refuses it."""


def project_root() -> Path:
    """The checkout this package runs from (the folder above it that holds ``pyproject.toml``);
    from an installed wheel, which has none, the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


class PathsSettings(BaseModel):
    """Where embedded state lives. Relative paths (``var_dir`` and the stores' own folders) are
    anchored at ``root``, never at the current directory, so that every process of a checkout
    (the CLI, Airflow tasks, notebooks, tests started from anywhere) finds the same ``var/``."""

    root: Path | None = Field(default=None, description="unset means the project root (the checkout)")
    var_dir: Path = Path("var")

    def anchor(self, path: Path) -> Path:
        """``path`` made absolute against :attr:`root` (an absolute path stays as it is)."""
        return (path if path.is_absolute() else (self.root or project_root()) / path).resolve()

    def resolve(self, *parts: str) -> Path:
        """Absolute path of ``var_dir / parts``."""
        return self.anchor(self.var_dir / Path(*parts))


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
    unknown_fields: Literal["record", "quarantine"] = Field(
        default="record",
        description="a field the API docs do not list: `record` keeps the row and counts the field (its value "
        "stays in the raw payload); `quarantine` refuses the row",
    )


class RewardSettings(BaseModel):
    """How reactions become rewards.

    Every reward, the table's and the default (a decision whose reward window closed without a
    reaction), must be a number in [0, 1], as ``data_contracts.RewardEvent`` requires, and the table
    must price every reaction (done, snooze, dismiss) and nothing else; settings that break this
    fail when they load, not when the first reward is written.

    Examples
    --------
    >>> RewardSettings(table={"done": 1.0, "snooze": 2.0, "dismiss": 0.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for RewardSettings
    table
      Value error, reward of 'snooze' must be a number in [0, 1] (RewardEvent.reward), got 2.0 ...
    """

    table: dict[str, float] = {"done": 1.0, "snooze": 0.2, "dismiss": 0.0}
    window_hours: float = Field(default=24.0, gt=0)
    default_reward: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("table")
    @classmethod
    def _table_prices_every_reaction_in_unit_range(cls, table: dict[str, float]) -> dict[str, float]:
        reactions = {r.value for r in Reaction}
        if set(table) != reactions:
            missing, unknown = sorted(reactions - set(table)), sorted(set(table) - reactions)
            raise ValueError(
                f"the reward table must price exactly the reactions {sorted(reactions)}; "
                f"missing {missing}, unknown {unknown}"
            )
        for reaction, reward in table.items():
            if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
                raise ValueError(
                    f"reward of {reaction!r} must be a number in [0, 1] (RewardEvent.reward), got {reward}"
                )
        return table


class TrainingSettings(BaseModel):
    """Policy training and the promotion gate (``policy_training`` DAG).

    The latest ``holdout_fraction`` of decisions is held out; its earlier part picks the
    challenger, its latest ``gate_fraction`` gates it (see :mod:`models.gate`).
    """

    window_days: float = Field(default=28.0, gt=0, description="training examples read, ending at the interval end")
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1, description="latest share of examples held out for OPE")
    gate_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="latest share of the held-out decisions that gates; the rest selects"
    )
    min_examples: int = Field(default=50, ge=2, description="fewer examples: the run trains nothing")
    n_bootstrap: int = Field(default=300, ge=50, description="bootstrap resamples of each OPE interval")
    seed: int = 0
    gate_metric: Literal["dr", "snips", "ips"] = "dr"
    gate_margin: float = Field(
        default=0.0,
        allow_inf_nan=False,
        description="the lower bound of (challenger - reference) must exceed this to promote",
    )
    gate_level: float = Field(
        default=0.98,
        gt=0,
        lt=1,
        description="two-sided level of the paired interval; promotion needs its lower end above the margin",
    )
    gate_min_ess: float = Field(
        default=100.0,
        ge=1,
        description="below this effective sample size (of the gate slice's importance weights) the gate refuses",
    )
    gate_min_users: int = Field(
        default=5, ge=2, description="below this many users on the gate slice the gate refuses (users are resampled)"
    )
    weight_clip: float | None = Field(
        default=None, gt=0, description="clip importance weights at this value (biased, steadier); None: no clip"
    )


class LLMSettings(BaseModel):
    """The LLM gateway (``oo/llm``, a LiteLLM Router) and the LLM candidate pool of serving."""

    enabled: bool = Field(default=True, description="false: no LLM pool at all (status 'disabled')")
    config_path: Path | None = Field(
        default=None, description="the aliases' YAML (tip-generator, embedder, judge); unset means oo/llm/models.yaml"
    )
    ollama_base_url: str = Field(
        default="http://127.0.0.1:11434", description="api_base of every ollama/... deployment that names none"
    )
    cloud_api_key: SecretStr | None = Field(
        default=None, description="enables the YAML's cloud deployments (marked requires: cloud_api_key)"
    )
    cloud_api_base: str | None = Field(default=None, description="api_base of the cloud deployments; unset: theirs")
    timeout_s: float = Field(default=10.0, gt=0, description="LiteLLM timeout of one call")
    num_retries: int = Field(default=1, ge=0, le=5, description="LiteLLM retries of a failed call, before fallbacks")
    deadline_ms: float = Field(
        default=300.0, gt=0, description="how long a decision waits for the LLM pool; late tips are cached"
    )
    prompt_version: str = Field(default="tips-v1", min_length=1, description="the tip prompt (oo/llm/prompts.py)")
    tips_per_request: int = Field(default=3, ge=1, le=10)
    cache_ttl_s: float = Field(default=3600.0, ge=0, description="how long a user's generated tips are reused")
    cache_max_users: int = Field(
        default=10_000, ge=1, description="users whose open tasks, tips and recent tips are kept in memory"
    )
    recent_window_s: float = Field(default=7 * 86_400.0, ge=0, description="a tip this recent is not written again")
    recent_per_user: int = Field(default=50, ge=1, description="recent tips remembered per user")
    duplicate_similarity: float = Field(
        default=0.85, gt=0, le=1, description="cosine similarity (embedder alias) at which a tip repeats another"
    )


class ServingSettings(BaseModel):
    """The BentoML decision service, its online learner and the snapshots between them."""

    learner: Literal["embedded", "separate"] = Field(
        default="embedded",
        description="embedded: the service learns in-process; separate: `python -m serving.learner` learns, "
        "replicas load its snapshots",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="BentoML worker processes of one `bentoml serve` (each a replica; more than one needs "
        "learner=separate: one learner for all)",
    )
    mode: Literal["online", "apprentice"] = Field(
        default="online", description="apprentice: serve the rule baseline's pick while the learner learns"
    )
    snapshot_dir: Path | None = Field(default=None, description="policy snapshots; unset means var/serving/snapshots")
    state_dir: Path | None = Field(
        default=None, description="decision index and learner checkpoint; unset means var/serving"
    )
    index_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the decision index replicas share past one machine (schema `serving`); "
        "unset means SQLite in the state dir",
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
    candidates_ttl_s: float = Field(
        default=1.0,
        ge=0,
        description="how long the lake's Todoist task files are trusted before they are checked again for a "
        "sync (a sync reaches the candidates within this; users' open tasks are cached until one)",
    )
    trace_sample_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="share of requests BentoML traces with OpenTelemetry (its `tracing.sample_rate`); at 0 "
        "none, and the decision routes skip the tracing middleware",
    )
    trace_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint the sampled spans are exported to (`http://collector:4318/v1/traces`)",
    )
    task_features_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="how long a task's stored online features are reused (only materialization changes them)",
    )
    mlflow_timeout_s: float = Field(default=3.0, gt=0, description="MLflow HTTP timeout (a dead server fails fast)")
    apprentice_window: int = Field(default=1000, ge=1, description="decisions compared in apprentice mode")
    baseline_floor: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="exploration mass of the rule baseline when it serves (0: deterministic; > 0 gives every "
        "candidate a propensity, so its logs can evaluate other policies off-policy)",
    )
    control_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="share of the decisions the rule baseline serves (at random, by decision id) while a learned "
        "champion serves the rest: a control group that measures the champion's lift on the same days and users, "
        "and keeps logging the baseline's exploration for the next challengers' off-policy evaluation",
    )
    simulated_clock: bool = Field(
        default=False,
        description="accept a caller's `decided_at` on rank (simulations, `oo simulate`; local only); "
        "off: a request that gives one is refused",
    )

    @model_validator(mode="after")
    def _one_learner(self) -> ServingSettings:
        if self.workers > 1 and self.learner == "embedded":
            raise ValueError(
                f"serving.workers={self.workers} needs serving.learner='separate' (each worker would learn on its "
                "own: set OO_SERVING__LEARNER=separate and run `make learner`)"
            )
        return self


DEV_AUTH_SECRET = "dev-auth-secret-never-use-outside-local-0123456789"
"""JWT signing key used in local mode only; any other mode refuses it."""


class AuthSettings(BaseModel):
    """End-user authentication of the app API: JWTs, refresh tokens, login limits, Google sign-in."""

    secret_key: SecretStr = Field(
        default=SecretStr(DEV_AUTH_SECRET), description="HS256 key of access tokens (>= 32 bytes)"
    )
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    issuer: str = "oo-app"
    access_ttl_s: int = Field(default=900, ge=30, le=3600, description="access token lifetime")
    refresh_idle_ttl_s: int = Field(
        default=14 * 86400, ge=60, description="a refresh token unused for this long expires"
    )
    refresh_max_ttl_s: int = Field(default=90 * 86400, ge=60, description="a token family's absolute lifetime")
    login_max_failures: int = Field(default=5, ge=1, description="failed logins per email or address per window")
    login_window_s: int = Field(default=900, ge=1)
    google_client_id: str | None = Field(default=None, description="unset disables Google sign-in")
    google_client_secret: SecretStr = SecretStr("")
    google_metadata_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    google_redirect_uri: str = "http://127.0.0.1:8000/v1/auth/google/callback"
    oidc_state_ttl_s: int = Field(default=600, ge=10, description="how long a sign-in may take")

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value().encode()) < 32:
            raise ValueError("OO_AUTH__SECRET_KEY must be at least 32 bytes (RFC 7518 §3.2)")
        return v


class AppSettings(BaseModel):
    """The app API (FastAPI): its edge, the serving it asks, the outbox relay and the notifier."""

    cors_origins: list[str] = Field(default=[], description="origins allowed to call from a browser; none by default")
    max_body_bytes: int = Field(default=65536, ge=1024, description="larger request bodies get 413")
    serving_url: str = "http://127.0.0.1:3000"
    serving_timeout_s: float = Field(default=2.0, gt=0)
    serving_max_in_flight: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="tip requests waiting at serving at once (its connections); more wait up to "
        "serving_timeout_s for one, then get 503: a queue kept in the app, not inside an overloaded serving",
    )
    run_workers: bool = Field(default=True, description="run the outbox relay in the API process")
    relay_interval_s: float = Field(default=1.0, gt=0, description="how often the relay looks for due messages")
    relay_batch: int = Field(default=100, ge=1)
    relay_concurrency: int = Field(default=8, ge=1, description="messages of a batch in flight at once")
    relay_backoff_initial_s: float = Field(default=1.0, gt=0, description="first retry delay (doubles)")
    relay_backoff_max_s: float = Field(
        default=30.0, gt=0, description="longest retry delay: how long a message may wait after its receiver is back"
    )
    notify_every_hours: float = Field(default=24.0, gt=0, description="a user gets at most one tip per this long")
    notify_max_attempts: int = Field(default=5, ge=1)
    notify_backoff_initial_s: float = Field(default=60.0, gt=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_sender: str = "tips@oo.local"
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    todoist_client_id: str = "dev-client-id"
    todoist_authorize_url: str = "https://app.todoist.com/oauth/authorize"
    todoist_token_url: str = "https://api.todoist.com/oauth/access_token"
    todoist_revoke_url: str = "https://api.todoist.com/api/v1/access_tokens/revoke"
    simulated_clock: bool = Field(
        default=False,
        description="read the request's time from its X-OO-Simulated-Time header (simulations, `oo simulate`; "
        "local only); off: the header is ignored",
    )


class PlatformSettings(BaseModel):
    """What ``make run`` starts (:mod:`oo.platform`): where each service listens, how long to wait."""

    host: str = Field(default="127.0.0.1", description="every service binds here")
    app_api_port: int = Field(default=8000, ge=1, le=65535)
    serving_port: int = Field(default=3000, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    todoist_port: int = Field(default=8765, ge=1, le=65535)
    todoist_users: int = Field(default=3, ge=1, description="synthetic users of the FAKE Todoist API")
    airflow_parallelism: int = Field(default=2, ge=1, description="Airflow's LocalExecutor workers")
    health_timeout_s: float = Field(default=300.0, gt=0, description="how long to wait for every service")
    stop_timeout_s: float = Field(default=15.0, gt=0, description="SIGTERM to SIGKILL")
    commands: dict[str, str] = Field(
        default_factory=dict, description='replace a service\'s command line, e.g. {"mlflow": "mlflow server ..."}'
    )
    skip: list[str] = Field(default_factory=list, description='services not to start, e.g. ["airflow"]')

    def url(self, port: int) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{port}"


class Settings(BaseSettings):
    """All configuration of oO."""

    model_config = SettingsConfigDict(env_prefix="OO_", env_file=".env", env_nested_delimiter="__", extra="ignore")

    env: Literal["local", "staging", "prod"] = "local"
    require_services: bool = Field(default=False, description="integration tests fail instead of skipping")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json lines, a readable console, or auto (console on a terminal)"
    )
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
    llm: LLMSettings = LLMSettings()
    serving: ServingSettings = ServingSettings()
    auth: AuthSettings = AuthSettings()
    app: AppSettings = AppSettings()
    platform: PlatformSettings = PlatformSettings()

    @model_validator(mode="after")
    def _no_dev_secrets_outside_local(self) -> Settings:
        if self.env != "local":
            if self.app.simulated_clock or self.serving.simulated_clock:
                raise ValueError("OO_APP__SIMULATED_CLOCK and OO_SERVING__SIMULATED_CLOCK are local only")
            if any(k.get_secret_value() == DEV_VAULT_KEY for k in self.vault.keys):
                raise ValueError("OO_VAULT__KEYS holds the dev key; set real keys outside local")
            if self.todoist.client_secret.get_secret_value() == "dev-client-secret":
                raise ValueError("OO_TODOIST__CLIENT_SECRET is the dev default outside local")
            if self.auth.secret_key.get_secret_value() == DEV_AUTH_SECRET:
                raise ValueError("OO_AUTH__SECRET_KEY is the dev default outside local")
        return self

    @property
    def db_url(self) -> str:
        """The app database URL, SQLite under var/ by default."""
        return self.db.url or f"sqlite:///{self.paths.resolve('app.db')}"

    @property
    def lake_root(self) -> Path:
        """The lake's root folder."""
        return self.paths.anchor(self.lake.root) if self.lake.root else self.paths.resolve("lake")

    @property
    def feast_dir(self) -> Path:
        """Where the Feast registry, SQLite online store and feature tables live."""
        return self.paths.anchor(self.feast.data_dir) if self.feast.data_dir else self.paths.resolve("feast")

    @property
    def serving_state_dir(self) -> Path:
        """Serving's own state: the decision index and the learner's checkpoint."""
        return self.paths.anchor(self.serving.state_dir) if self.serving.state_dir else self.paths.resolve("serving")

    @property
    def snapshot_dir(self) -> Path:
        """Where the learner publishes policy snapshots and replicas read them."""
        return (
            self.paths.anchor(self.serving.snapshot_dir)
            if self.serving.snapshot_dir
            else self.serving_state_dir / "snapshots"
        )

    @property
    def mlflow_tracking_uri(self) -> str:
        """MLflow's backend store URI (SQLite under var/ by default)."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.paths.resolve('mlflow.db')}"

    @property
    def mlflow_artifact_root(self) -> Path:
        """Where MLflow artifacts go when the experiment is created here."""
        root = self.mlflow.artifact_root
        return self.paths.anchor(root) if root else self.paths.resolve("mlartifacts")


@lru_cache
def get_settings() -> Settings:
    """The process's settings, built once on first use."""
    return Settings()


@contextmanager
def settings_env(**env: str) -> Iterator[Settings]:
    """Settings built from ``env`` (``OO_*`` variables) for the duration of the block: the variables
    are set in this process's environment and restored after, the settings cache cleared both times."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
