"""Where the app API spends its CPU on ``GET /v1/tips/next`` and ``POST /v1/feedback``.

``python bench/api_profile.py [--serving-url URL] [--requests N] [--top K] [--compare DIR]``

1. **CPU per request**: the app as deployed (``uvicorn --factory app_api.main:create_app``, one
   process, SQLite under a temporary var dir, the outbox relay off so that only the request path
   is counted) takes ``N`` sequential requests per endpoint; the CPU time its process used
   (user + system, every thread, from ``psutil``) divided by ``N``. With ``--compare DIR`` the
   code tree ``DIR`` (e.g. ``git archive <commit>`` of an earlier version) runs too, against
   the same serving, and the two are measured in alternating batches of 50 requests: a
   before/after in one run, which a change in the machine's load affects alike.
2. **Profile**: a live uvicorn server (httptools, uvloop) in this process's main thread, its
   load sent from another thread, with FastAPI's thread pool replaced by direct calls (so
   ``cProfile`` sees every route and dependency in one thread; the work done is the same but
   for the thread hops), timed by the server thread's CPU clock. The top functions by own CPU
   time, then the app's, FastAPI's and uvicorn's by cumulative CPU time. (The profiler's own
   overhead inflates these; read them as shares.)

Serving is in *another* process in both (the stand-in ``oo.fakes.serving`` unless
``--serving-url`` names a running one), so its CPU is not the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
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


async def _drive(client: httpx.AsyncClient, n: int, on_tips: Callable[[], Awaitable[None]] | None = None) -> Any:
    """Register users, warm up; returns the async callables of the two endpoints."""
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
    return tip, feedback


class LiveApp:
    """The app from ``code_root`` in a uvicorn process, and the CPU time that process used."""

    def __init__(self, code_root: Path, serving_url: str) -> None:
        import psutil

        from bench.api import free_port, wait_up

        port = free_port()
        self.var = tempfile.mkdtemp(prefix="oo-api-cpu-")
        env = os.environ | {
            "OO_PATHS__VAR_DIR": self.var,
            "OO_APP__SERVING_URL": serving_url,
            "OO_APP__RUN_WORKERS": "false",
            "OO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(code_root),
        }
        args = ["-m", "uvicorn", "--factory", "app_api.main:create_app", "--host", "127.0.0.1", "--port", str(port)]
        quiet = ["--no-access-log", "--log-level", "warning"]
        self.proc = subprocess.Popen([sys.executable, *args, *quiet], cwd=code_root, env=env)
        self.url = f"http://127.0.0.1:{port}"
        wait_up(f"{self.url}/healthz")
        self.process = psutil.Process(self.proc.pid)
        self.spent = {"tips_next": 0.0, "feedback": 0.0}
        self.done = {"tips_next": 0, "feedback": 0}

    def cpu(self) -> float:
        t = self.process.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.var, ignore_errors=True)


async def live_cpu(apps: dict[str, LiveApp], n: int, batch: int = 50) -> dict[str, dict[str, float]]:
    """CPU milliseconds per request of each app, measured in alternating batches of ``batch``
    requests (so that a change in the machine's load affects every app alike)."""
    clients = {k: httpx.AsyncClient(base_url=a.url, timeout=30) for k, a in apps.items()}
    try:
        drivers = {k: await _drive(c, n) for k, c in clients.items()}
        for index, name in enumerate(("tips_next", "feedback")):
            for first in range(0, n, batch):
                for key, app in apps.items():
                    make = drivers[key][index]
                    before = app.cpu()
                    for i in range(first, min(n, first + batch)):
                        r = await make(i)
                        if r.status_code >= 300:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                    app.spent[name] += app.cpu() - before
                    app.done[name] += min(n, first + batch) - first
    finally:
        for c in clients.values():
            await c.aclose()
    return {k: {e: round(a.spent[e] / a.done[e] * 1000, 3) for e in a.spent} for k, a in apps.items()}


def _inline_threadpool() -> None:
    """Run sync routes and dependencies in the event loop's thread (profiling only)."""
    import anyio.to_thread

    async def run_sync(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


def _top(profile: cProfile.Profile, k: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(k)
    stats.sort_stats("cumulative").print_stats(APP_FUNCTIONS, k)
    return out.getvalue()


APP_FUNCTIONS = (
    r"app_api|oo/serving_client|fastapi/routing|fastapi/dependencies/utils|jwt/api_jwt|uvicorn|"
    r"orm/session.py.*(commit|_get_impl|close|execute)|pydantic.*(model_validate|model_dump)"
)


def profile_app(serving_url: str, n: int, top: int) -> dict[str, str]:
    """A live uvicorn server (httptools, uvloop) in this thread under ``cProfile``, its load sent
    from another thread; the thread pool inlined, so every route and dependency runs here."""
    import threading

    import uvicorn

    from bench.api import free_port

    _inline_threadpool()
    from app_api.main import create_app
    from app_api.services import build
    from oo.settings import get_settings

    get_settings.cache_clear()
    services = build(get_settings())
    port = free_port()
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    # CPU time of the server's thread, not wall time: waiting on serving or on an fsync is not CPU
    profiles = {"tips_next": cProfile.Profile(time.thread_time), "feedback": cProfile.Profile(time.thread_time)}
    active: list[cProfile.Profile] = []
    errors: list[BaseException] = []

    def load() -> None:
        async def go() -> None:
            while not server.started:
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                endpoints = await _drive(client, n)
                for name, make in zip(profiles, endpoints, strict=True):
                    active.append(profiles[name])  # the server thread switches it on
                    await asyncio.sleep(0.2)
                    for i in range(n):
                        r = await make(i)
                        if r.status_code >= 300:
                            raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
                    active.append(profiles[name])  # and off

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            server.should_exit = True

    async def serve() -> None:
        async def switch() -> None:
            on: cProfile.Profile | None = None
            while not server.should_exit:
                if active:
                    p = active.pop(0)
                    if on is None:
                        p.enable()
                        on = p
                    else:
                        on.disable()
                        on = None
                await asyncio.sleep(0.01)
            if on is not None:
                on.disable()

        switcher = asyncio.ensure_future(switch())
        await server.serve()
        await switcher

    driver = threading.Thread(target=load)
    driver.start()
    asyncio.run(serve())
    driver.join()
    services.close()
    if errors:
        raise errors[0]
    return {name: _top(p, top) for name, p in profiles.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serving-url", default=None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--compare", type=Path, default=None, help="an earlier code tree to measure too")
    parser.add_argument("--no-profile", action="store_true", help="only the CPU per request")
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
    result: dict[str, Any] = {
        "requests_per_endpoint": args.requests,
        "serving": url if args.serving_url else "stand-in",
    }
    apps: dict[str, LiveApp] = {}
    try:
        apps["after"] = LiveApp(ROOT, url)
        if args.compare is not None:
            apps["before"] = LiveApp(args.compare.resolve(), url)
        result["cpu_ms_per_request"] = asyncio.run(live_cpu(apps, args.requests))
        for app in apps.values():
            app.stop()
        apps.clear()
        if not args.no_profile:
            profiles = profile_app(url, args.requests, args.top)
            for name, text in profiles.items():
                print(f"==== {name}: top {args.top} by own CPU time, then cumulative ====\n{text}")
    finally:
        for app in apps.values():
            app.stop()
        if stand_in is not None:
            stand_in.terminate()
            stand_in.wait(timeout=20)
        shutil.rmtree(var, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
