"""One load-and-fault run, start to report: :func:`run_e2e` (``make bench-e2e`` and the test)."""

from __future__ import annotations

import asyncio
import os
import platform
import time
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
