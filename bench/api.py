"""App API benchmark: ``make bench-api`` writes ``bench/results/api.json``.

The app runs as it is deployed (``uvicorn --factory app_api.main:create_app``, one process, the
outbox relay in it, SQLite on the embedded defaults) with serving behind it over HTTP; serving is
the protocol stand-in ``oo.fakes.serving`` in its own process (the lead points
``OO_APP__SERVING_URL`` at the BentoML service once it is merged). Load is open-loop: requests
are sent on a fixed schedule of ``RPS`` per second whatever the answers' latency (so a slow
answer cannot hide the queue behind it), from ``USERS`` signed-in users, for ``SECONDS`` per
endpoint. Latency is measured per request from its scheduled send time. ``rps`` is the rate of
answered (2xx) requests; ``failed`` counts errors and timeouts (60 s). ``sequential`` is the
same endpoints one request at a time (service time, no queue). Goal: tips/next p99 <= 30 ms and
feedback p99 <= 10 ms at 100 requests per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RPS, SECONDS, USERS, WARMUP, SEQUENTIAL = 100, 10, 20, 100, 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def open_loop(client: httpx.AsyncClient, make: Any, rps: int, seconds: int) -> dict[str, float]:
    """Send ``rps * seconds`` requests on schedule; latency from the scheduled time."""
    n = rps * seconds
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal failures
        due = start + i / rps
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            r = await make(client, i)
        except httpx.HTTPError:
            failures += 1
            return
        if not 200 <= r.status_code < 300:
            failures += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "rps": round(len(latencies) / elapsed, 1),
        "requests": n,
        "failed": failures,
    }


async def run(api: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=api, timeout=60.0, limits=limits) as client:
        tokens = []
        for u in range(USERS):
            r = await client.post(
                "/v1/auth/register", json={"email": f"bench{u}@example.org", "password": "bench-password-123"}
            )
            r.raise_for_status()
            tokens.append({"Authorization": f"Bearer {r.json()['access_token']}"})
        decisions: list[tuple[dict[str, str], str]] = []

        async def tip(c: httpx.AsyncClient, i: int) -> httpx.Response:
            headers = tokens[i % USERS]
            r = await c.get("/v1/tips/next", headers=headers)
            if r.status_code == 200 and r.json()["decision_id"]:
                decisions.append((headers, r.json()["decision_id"]))
            return r

        async def feedback(c: httpx.AsyncClient, i: int) -> httpx.Response:
            headers, decision = decisions[i % len(decisions)]
            return await c.post("/v1/feedback", json={"decision_id": decision, "reaction": "done"}, headers=headers)

        for i in range(WARMUP):  # connections, imports and caches warm
            await tip(client, i)
        # Service time: one request at a time (no queue), what a request costs the app.
        sequential = {"tips_next": await one_at_a_time(client, tip, SEQUENTIAL)}
        sequential["feedback"] = await one_at_a_time(client, feedback, SEQUENTIAL)
        decisions.clear()
        tips_next = await open_loop(client, tip, RPS, SECONDS)
        fb = await open_loop(client, feedback, RPS, SECONDS)
    return {"tips_next": tips_next, "feedback": fb, "sequential": sequential}


async def one_at_a_time(client: httpx.AsyncClient, make: Any, n: int) -> dict[str, float]:
    """``n`` requests back to back: latency without queueing, and the rate one client reaches."""
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        r = await make(client, i)
        r.raise_for_status()
        latencies.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "rps": round(n / (time.perf_counter() - start), 1),
    }


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="oo-bench-api-"))
    serving_port, api_port = free_port(), free_port()
    env = os.environ | {
        "OO_PATHS__VAR_DIR": str(var),
        "OO_APP__SERVING_URL": f"http://127.0.0.1:{serving_port}",
        "OO_AUTH__LOGIN_MAX_FAILURES": "1000",
        "OO_LOG_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"from oo.fakes.serving import main; main(port={serving_port})"], cwd=ROOT, env=env
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app_api.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        ),  # fmt: skip
    ]
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_up(f"http://127.0.0.1:{serving_port}/")
        wait_up(f"{api}/healthz")
        result = asyncio.run(run(api))
    finally:
        for p in reversed(procs):  # the app (and its relay) before serving
            p.terminate()
            p.wait(timeout=20)
        for p in procs:
            p.wait(timeout=20)
    result["setup"] = {
        "offered_rps": RPS,
        "seconds_per_endpoint": SECONDS,
        "users": USERS,
        "app": "uvicorn, 1 process, SQLite, outbox relay running",
        "serving": "oo.fakes.serving over HTTP (own process)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "goal": {"tips_next_p99_ms": 30, "feedback_p99_ms": 10},
    }
    out = ROOT / "bench" / "results" / "api.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
