"""Moving ``@champion`` by hand, with the gate's evidence at hand: ``oo policy list|promote|rollback``.

The gate (:meth:`models.registry.Registry.register_outcome`) moves ``@champion`` when a
challenger's lower bound beats the champion; an engineer can also promote a version or roll
back to the champion before. Every move by hand is recorded, on the model version and on its
run, as tags: ``oo.champion.action`` (promote / rollback), ``.by``, ``.reason``, ``.at`` and
``.previous`` (the version it replaced), so the registry holds who moved it and why.

MLflow is reached only through :class:`models.registry.Registry`'s client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.registry import CHAMPION, Registry

TAG = "oo.champion"
"""Prefix of the tags a move by hand writes."""


class PolicyAdminError(ValueError):
    """A move that cannot be made (an unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class VersionEvidence:
    """One registered version: its aliases and what its run says about it."""

    version: str
    run_id: str
    run_name: str
    aliases: list[str]
    metrics: dict[str, float]
    gate_decision: str = ""
    gate_reason: str = ""
    moves: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None

    def interval(self, metric: str = "dr") -> str:
        """``value [low, high]`` of ``metric``, or an empty string when the run has none."""
        if metric not in self.metrics:
            return ""
        low, high = self.metrics.get(f"{metric}_low"), self.metrics.get(f"{metric}_high")
        return f"{self.metrics[metric]:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""


def list_versions(registry: Registry | None = None) -> list[VersionEvidence]:
    """Every version of the policy model, newest first, with its aliases and evidence."""
    registry = registry or Registry()
    client: Any = registry.client
    name = registry.model_name
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags = dict(run.data.tags) if run else {}
        out.append(
            VersionEvidence(
                version=str(mv.version),
                run_id=mv.run_id or "",
                run_name=tags.get("mlflow.runName", ""),
                aliases=sorted(aliases.get(str(mv.version), [])),
                metrics=dict(run.data.metrics) if run else {},
                gate_decision=tags.get("gate.decision", ""),
                gate_reason=tags.get("gate.reason", ""),
                moves={k.removeprefix(TAG + "."): v for k, v in dict(mv.tags).items() if k.startswith(TAG + ".")},
                created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
            )
        )
    return out


def promote(version: str, reason: str, by: str, registry: Registry | None = None) -> VersionEvidence:
    """Point ``@champion`` at ``version`` and record who and why."""
    return _move(version, reason, by, "promote", registry or Registry())


def rollback(reason: str, by: str, to: str | None = None, registry: Registry | None = None) -> VersionEvidence:
    """Point ``@champion`` back at the champion before (or at ``to``) and record who and why.

    The champion before is the one the current champion replaced by hand (its ``previous`` tag),
    else the newest older version that was champion: promoted by the gate or by hand.
    """
    registry = registry or Registry()
    current = registry.version_for(CHAMPION)
    if current is None:
        raise PolicyAdminError("there is no @champion to roll back")
    target = to or previous_champion(current, list_versions(registry))
    if target is None:
        raise PolicyAdminError(f"no champion before v{current} is known; name one with --to VERSION")
    if target == current:
        raise PolicyAdminError(f"v{target} is already @champion")
    return _move(target, reason, by, "rollback", registry)


def previous_champion(current: str, versions: list[VersionEvidence]) -> str | None:
    """The version ``current`` replaced (see :func:`rollback`)."""
    by_version = {v.version: v for v in versions}
    recorded = by_version.get(current, None)
    if recorded is not None and recorded.moves.get("previous"):
        return recorded.moves["previous"]
    older = [v for v in versions if int(v.version) < int(current)]
    for v in sorted(older, key=lambda v: int(v.version), reverse=True):
        if v.gate_decision == "promoted" or v.moves.get("action") == "promote":
            return v.version
    return None


def _move(version: str, reason: str, by: str, action: str, registry: Registry) -> VersionEvidence:
    if not reason.strip():
        raise PolicyAdminError("a reason is required")
    known = {v.version: v for v in list_versions(registry)}
    if version not in known:
        listed = ", ".join(sorted(known, key=int)) or "none"
        raise PolicyAdminError(f"{registry.model_name} has no version {version} (versions: {listed})")
    client: Any = registry.client
    previous = registry.version_for(CHAMPION)
    if previous == version:
        raise PolicyAdminError(f"v{version} is already @champion")
    client.set_registered_model_alias(registry.model_name, CHAMPION, version)
    tags = {
        "action": action,
        "by": by,
        "reason": reason,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous": previous or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(registry.model_name, version, f"{TAG}.{key}", value)
        if known[version].run_id:
            client.set_tag(known[version].run_id, f"{TAG}.{key}", value)
    return {v.version: v for v in list_versions(registry)}[version]
