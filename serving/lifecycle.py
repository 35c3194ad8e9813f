"""Which policy to serve: ``@champion`` from MLflow, else the last local snapshot, else the rule
baseline; and whether ``@champion`` has moved since.

MLflow is imported on first use (a few seconds). Its HTTP client would retry a dead tracking
server for minutes, so the retries and timeout are bounded here, before the first call, from
``OO_SERVING__MLFLOW_TIMEOUT_S``: a dead MLflow falls back within seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from models.policies import Policy, RuleBased
from oo.settings import Settings
from serving.snapshots import SnapshotStore

log = logging.getLogger(__name__)

CHAMPION = "champion"
SNAPSHOT = "snapshot"
RULE_BASELINE = "rule_baseline"
BASELINE_VERSION = "rule-baseline/1"
"""The rule baseline's version in logs (it has no registry version)."""


class MlflowUnavailable(ConnectionError):
    """MLflow could not be asked (server down, store unreadable)."""


@dataclass(frozen=True)
class Loaded:
    """A policy and where it came from."""

    policy: Policy
    source: str
    champion_version: str | None


def rule_baseline(floor: float = 0.0) -> Policy:
    """The always-available default policy (``floor``: ``OO_SERVING__BASELINE_FLOOR``)."""
    return RuleBased(version=BASELINE_VERSION, floor=floor)


def _bound_mlflow_http(settings: Settings) -> None:
    # MLflow reads these environment variables itself, per request; only defaults are set here.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(settings.serving.mlflow_timeout_s))))


def _registry(settings: Settings) -> Any:
    _bound_mlflow_http(settings)
    from models.registry import Registry

    return Registry(settings)


def champion_version(settings: Settings) -> str | None:
    """The version behind ``@champion`` (``None`` without one); :class:`MlflowUnavailable` when
    MLflow cannot be asked."""
    try:
        from mlflow.exceptions import MlflowException

        registry = _registry(settings)
        try:
            return str(registry.client.get_model_version_by_alias(registry.model_name, CHAMPION).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise
    except Exception as exc:  # any failure to reach the registry means: fall back
        raise MlflowUnavailable(f"MLflow unavailable: {type(exc).__name__}: {exc}") from exc


def load_champion(settings: Settings, version: str) -> Policy:
    """The policy of ``tip-policy`` version ``version``, its ``version`` set to ``tip-policy/<n>``."""
    try:
        registry = _registry(settings)
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}")
        policy: Policy = model.unwrap_python_model().policy
    except Exception as exc:  # unreachable store or unreadable artifact: the caller falls back
        raise MlflowUnavailable(f"champion v{version} could not be loaded: {type(exc).__name__}: {exc}") from exc
    if policy.version in ("", "dev"):
        policy.version = f"{settings.mlflow.model_name}/{version}"
    return policy


def initial_policy(settings: Settings, snapshots: SnapshotStore) -> Loaded:
    """``@champion``; MLflow down or no champion: the newest local snapshot; none: the rule baseline.

    A snapshot based on the current champion (the learner's online updates of it) wins over the
    bare champion.
    """
    try:
        version = champion_version(settings)
    except MlflowUnavailable as exc:
        log.warning("serving: %s; trying the last local snapshot", exc)
        version, mlflow_up = None, False
    else:
        mlflow_up = True
    latest = snapshots.latest()
    if version is not None and (latest is None or latest.champion_version != version):
        try:
            return Loaded(load_champion(settings, version), CHAMPION, version)
        except MlflowUnavailable as exc:
            log.warning("serving: %s; trying the last local snapshot", exc)
    loaded = snapshots.load_latest()
    if loaded is not None and (version is None or loaded[0].champion_version == version or not mlflow_up):
        info, policy = loaded
        log.info("serving: snapshot %d (%s %s)", info.seq, info.policy, info.policy_version)
        return Loaded(policy, SNAPSHOT, info.champion_version)
    log.info("serving: no champion and no snapshot; serving the rule baseline")
    return Loaded(rule_baseline(settings.serving.baseline_floor), RULE_BASELINE, None)
