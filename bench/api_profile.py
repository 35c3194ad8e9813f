"""Where the app API spends its CPU on ``GET /v1/tips/next`` and ``POST /v1/feedback``.

``python bench/api_profile.py [--serving-url URL] [--requests N] [--top K] [--json]`` runs the
real app (``create_app`` on services built from settings under a temporary var dir, SQLite) in
this process through httpx's ASGI transport, with serving behind it over HTTP in *another*
process (the stand-in ``oo.fakes.serving`` unless ``--serving-url`` names a running one), so the
CPU measured here is the app's alone. For the profile, the thread pool FastAPI runs sync routes
and dependencies in is replaced by a direct call (one thread: ``cProfile`` sees everything; the
work done is the same). Prints CPU milliseconds per request (``time.process_time``, all
threads) and the top functions by own CPU time, then the app's own and FastAPI's by cumulative CPU time. Time-based figures are unreliable on a busy machine;
CPU per request and the profile's shares are not.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USERS, WARMUP = 10, 50


def _inline_threadpool() -> None:
    """Run sync routes and dependencies in the event loop's thread (profiling only)."""
    import anyio.to_thread

    async def run_sync(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


async def _measure(
    name: str, make: Callable[[int], Awaitable[httpx.Response]], n: int, profile: cProfile.Profile
) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    profile.enable()
    for i in range(n):
        r = await make(i)
        if r.status_code >= 300:
            raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
    profile.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms_per_request": round(cpu / n * 1000, 3), "wall_ms_per_request": round(wall / n * 1000, 3)}


def _top(profile: cProfile.Profile, k: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(k)
    stats.sort_stats("cumulative").print_stats(r"app_api|fastapi/routing|fastapi/dependencies/utils|security|jwt", k)
    return out.getvalue()


async def profile_app(serving_url: str, n: int, top: int) -> dict[str, Any]:
    _inline_threadpool()
    from app_api.main import create_app
    from app_api.services import build
    from oo.settings import get_settings

    get_settings.cache_clear()
    services = build(get_settings())
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    result: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        auth = []
        for u in range(USERS):
            body = {"email": f"profile{u}@example.org", "password": "profile-password-123"}
            r = await client.post("/v1/auth/register", json=body)
            r.raise_for_status()
            auth.append({"Authorization": f"Bearer {r.json()['access_token']}"})
        decisions: list[tuple[dict[str, str], str]] = []

        async def tip(i: int) -> httpx.Response:
            r = await client.get("/v1/tips/next", headers=auth[i % USERS])
            if r.status_code == 200 and r.json()["decision_id"]:
                decisions.append((auth[i % USERS], r.json()["decision_id"]))
            return r

        async def feedback(i: int) -> httpx.Response:
            headers, decision = decisions[i]
            return await client.post("/v1/feedback", json={"decision_id": decision, "reaction": "done"}, headers=headers)

        for i in range(WARMUP):
            await tip(i)
        decisions.clear()
        # CPU time of this thread (every route runs in it here), not wall time: waiting on serving's
        # answer or on an fsync is not the app's CPU
        tips_profile, feedback_profile = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)
        result["tips_next"] = await _measure("tips/next", tip, n, tips_profile)
        result["feedback"] = await _measure("feedback", feedback, n, feedback_profile)
        result["profiles"] = {"tips_next": _top(tips_profile, top), "feedback": _top(feedback_profile, top)}
    services.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serving-url", default=None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print only the CPU figures, as JSON")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="oo-api-profile-"))
    os.environ.update({"OO_PATHS__VAR_DIR": str(var), "OO_LOG_LEVEL": "WARNING", "OO_APP__RUN_WORKERS": "false"})
    stand_in = None
    url = args.serving_url
    if url is None:
        from bench.api import free_port, wait_up

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        code = f"from oo.fakes.serving import main; main(port={port})"
        stand_in = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy())
        wait_up(f"{url}/")
    os.environ["OO_APP__SERVING_URL"] = url
    try:
        result = asyncio.run(profile_app(url, args.requests, args.top))
    finally:
        if stand_in is not None:
            stand_in.terminate()
            stand_in.wait(timeout=20)
    profiles = result.pop("profiles")
    if not args.json:
        for name, text in profiles.items():
            print(f"==== {name}: top {args.top} by own time ====\n{text}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
