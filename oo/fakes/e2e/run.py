"""One load-and-fault run, start to report: :func:`run_e2e` (``make bench-e2e`` and the test)."""

from __future__ import annotations

import asyncio
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from oo.fakes.e2e.ledger import account, figures
from oo.fakes.e2e.load import Conditions, Driver, User, recovered, sign_up, sync_everyone
from oo.fakes.e2e.stack import Stack


def sync_check(users: list[User], statuses: dict[str, str]) -> dict[str, Any]:
    """The sync during the faults: users without a fault (and with a one-request fault) synced;
    users whose every request failed did not, and that did not stop the others."""
    healthy = [u for u in users if u.fault is None or u.fault["times"] != -1]
    broken = [u for u in users if u.fault is not None and u.fault["times"] == -1]
    return {
        "synced_ok": sum(1 for u in healthy if statuses.get(u.user_id) == "ok"),
        "expected_ok": len(healthy),
        "failed_as_injected": sum(1 for u in broken if statuses.get(u.user_id) == "failed"),
        "expected_failed": len(broken),
        "others_unaffected": all(statuses.get(u.user_id) == "ok" for u in healthy),
    }


async def _drive(stack: Stack, cond: Conditions, recovery_timeout_s: float) -> tuple[Any, ...]:
    import httpx

    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30.0) as client:
        users = await sign_up(client, stack, cond)
    initial = await asyncio.to_thread(sync_everyone, stack, users)
    if set(initial.values()) != {"ok"}:
        raise RuntimeError(f"the first sync (no faults yet) failed for some users: {initial}")
    result = await Driver(stack, users, cond).run()
    recovery = await recovered(stack, users, recovery_timeout_s)
    return users, result, recovery


def run_e2e(
    var_dir: Path,
    cond: Conditions,
    env: dict[str, str] | None = None,
    drain_timeout_s: float = 120.0,
    recovery_timeout_s: float = 90.0,
) -> dict[str, Any]:
    """Start the stack under ``var_dir``, run the load and the faults, account for every accepted
    reaction; the figures (see :func:`oo.fakes.e2e.ledger.figures`)."""
    stack = Stack(var_dir, todoist_users=cond.users, env=env or {}, seed=cond.seed)
    started = time.monotonic()
    startup = stack.start()
    try:
        users, result, recovery = asyncio.run(_drive(stack, cond, recovery_timeout_s))
        delivery = account(stack, result, drain_timeout_s)
        during: dict[str, str] = next((s["statuses"] for s in result.syncs if s["round"] == "during_load"), {})
        extra = {
            "recovery": recovery,
            "sync_check": sync_check(users, during),
            "setup": {
                "stack": "fake Todoist, learner (separate), serving (BentoML), app API (uvicorn, relay)"
                " on 127.0.0.1; each its own process",
                "stores": {
                    k: v.split("://")[0]
                    for k, v in stack.child_env().items()
                    if k.endswith(("_URL", "__URL")) and k.startswith(("OO_DB", "OO_BUS", "OO_REDIS"))
                }
                or "embedded defaults (SQLite, event log, Parquet lake)",
                "startup_s": {k: round(v, 1) for k, v in startup.items()},
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "logs": str(var_dir / "logs" / "e2e"),
            },
            "wall_s": round(time.monotonic() - started, 1),
        }
        return figures(cond, result, delivery, extra)
    finally:
        stack.close()


async def _one_round(stack: Stack, cond: Conditions) -> tuple[list[User], dict[str, Any], Any]:
    """Sign up, connect, sync; then each user asks for a tip and reacts to it once."""
    import httpx

    from oo.fakes.e2e.load import LoadResult, Reaction

    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30.0) as client:
        users = await sign_up(client, stack, cond)
        synced = await asyncio.to_thread(sync_everyone, stack, users)
        result = LoadResult()
        for i, user in enumerate(users):
            r = await client.get("/v1/tips/next", headers=user.headers)
            if r.status_code != 200 or not r.json().get("tip"):
                raise RuntimeError(f"no tip for a connected, synced user: HTTP {r.status_code} {r.text[:300]}")
            key = str(uuid.UUID(int=i + 1, version=4))
            reaction = Reaction(key, user, r.json()["decision_id"], ("done", "snooze", "dismiss")[i % 3])
            f = await client.post(
                "/v1/feedback",
                json={"decision_id": reaction.decision_id, "reaction": reaction.reaction},
                headers={**user.headers, "Idempotency-Key": key},
            )
            if f.status_code != 202:
                raise RuntimeError(f"feedback refused: HTTP {f.status_code} {f.text[:300]}")
            result.accepted[key] = reaction
        ready = (await client.get(stack.serving_url + "/ops/ready")).json()
    return users, {"synced": synced, "serving_ready": ready}, result


def run_smoke(var_dir: Path, env: dict[str, str] | None = None, users: int = 2) -> dict[str, Any]:
    """register -> connect -> sync -> tip -> feedback -> delivered, on the stack's stores: where each
    reaction arrived (:class:`oo.fakes.e2e.ledger.Delivery`) and what the ingest moved."""
    from dataclasses import asdict

    cond = Conditions(users=users, faulty_users=0)
    stack = Stack(var_dir, todoist_users=users, env=env or {}, health_timeout_s=240.0)
    stack.start()
    try:
        _, seen, result = asyncio.run(_one_round(stack, cond))
        delivery = account(stack, result, drain_timeout_s=60.0)
        return {**asdict(delivery), **seen}
    finally:
        stack.close()
