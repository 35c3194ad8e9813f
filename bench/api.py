"""App API benchmark: ``make bench-api`` writes ``bench/results/api.json``.

The app runs as it is deployed (``uvicorn --factory app_api.main:create_app``, one process, the
outbox relay in it, SQLite on the embedded defaults) with the real serving behind it over HTTP:
``bentoml serve serving.service:TipService`` on a free port, seeded as ``bench/serving.py``
seeds it (its helpers, not a copy: a registered ``@champion``, Feast applied, 30 open Todoist
tasks in the lake for each benchmark user, so each rank scores 30 candidates). Load is
open-loop: requests are sent on a fixed schedule of ``RPS`` per second whatever the answers'
latency (so a slow answer cannot hide the queue behind it), from ``USERS`` signed-in users, for
``SECONDS`` per endpoint. Latency is measured per request from its scheduled send time. ``rps``
is the rate of answered (2xx) requests; ``failed`` counts errors and timeouts (60 s).
``app_cpu_ms_per_request`` is the CPU time (user + system, all threads, ``psutil``) the app's
process used during the phase divided by its requests (for feedback it includes the relay
delivering the rewards to serving); ``serving_cpu_ms_per_request`` the same for serving's
processes, ``bench_cpu_ms_per_request`` for this load generator's (it shares the cores; its client
is aiohttp for that reason), ``send_lag_p99_ms`` how late it started requests and
``steal_ms_per_s`` how much CPU time per second the hypervisor took from this shared machine
during the phase (all cores; ``/proc/stat``), ``disk_fsync_ms`` how long this machine's disk
took meanwhile to make a 4 KB append durable (p50, p99, max of ``n``, one every 50 ms, in the
run's directory: :class:`FsyncProbe`; every rank waits for an fsync of the event log).
``serving_over_50ms`` counts, from serving's own Prometheus histograms read before and after the
phase (the read before it a second ahead of its first request: serving renders ``/metrics`` on its
event loop, 45 ms the first time, which used to land on the phase's first ranks), the ranks whose
decision took longer than 50 ms (``decide``), those that waited that long for their decision to be
logged (``log_wait``: the event log's write and fsync and the index insert), and the ``/rank``
requests that took that long inside serving's ASGI app (``http``: BentoML's own request histogram,
from the moment the request's task runs to its response; a request queued before that, behind the
event loop's other work, is not in it): a slow tail with none of them was spent outside serving's
request handling (waiting for serving's event loop, the app).
``sequential`` is the same endpoints one request at a time (service time, no queue).
Feedback reacts to the decisions the tips phases made, each with done, snooze and dismiss
(``distinct_reactions`` says how many were new; the rest are answered as duplicates). Before
each open-loop phase the app is given time to drain what the previous one queued.

``replicas`` is a second run with serving in the topology past the default: ``OO_SERVING__WORKERS=2``
worker processes (one per core) and ``python -m serving.learner`` beside them; reported apart from
the default's figures above (``BENCH_API_REPLICAS=0`` skips it).

``stand_in`` is a third, separate run with the protocol stand-in ``oo.fakes.serving`` in
serving's place (a near-free rank): what the app costs on its own. It is labelled and never
mixed with the figures above. ``BENCH_API_STAND_IN=0`` skips it.

Goal: tips/next p99 <= 30 ms and feedback p99 <= 10 ms at 100 requests per second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import free_port, pct  # noqa: E402  # after the path: `python bench/api.py` works

RPS, SECONDS, USERS, WARMUP, SEQUENTIAL = 100, 10, 20, 100, 200
REPLICA_WORKERS = 2
RELAY_SETTLE_S = 2.0
QUIET_BEFORE_PHASE_S = 1.0
"""Between reading serving's histograms (``serving_over_50ms``) and a phase's first request."""
REACTIONS = ("done", "snooze", "dismiss")
APP_ENV = {"OO_AUTH__LOGIN_MAX_FAILURES": "1000", "OO_LOG_LEVEL": "WARNING"}


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


def steal_ms() -> float:
    """CPU time the hypervisor gave to other guests while this machine wanted it, all cores, since
    boot (``/proc/stat``); 0 where there is none to read. A phase's share says how much of a slow
    run was the host's (this machine is shared)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class FsyncProbe:
    """How long this machine's disk took to make a small append durable during a phase: a thread
    appends ``size`` bytes to a file in ``directory`` and fsyncs it every ``every_s`` seconds (the
    event log's own steps, on the same filesystem), timing each. Like ``steal_ms_per_s``, it says
    how much of a slow run was the machine's: every rank waits for an fsync of the event log. Its
    own 20 fsyncs per second are about a tenth of those the event log makes at 100 ranks per second.

    Examples
    --------
    >>> import tempfile
    >>> with FsyncProbe(Path(tempfile.mkdtemp()), every_s=0.001) as probe:
    ...     time.sleep(0.05)
    >>> sorted(probe.summary()), probe.summary()["n"] > 0
    (['max', 'n', 'p50', 'p99'], True)
    """

    def __init__(self, directory: Path, every_s: float = 0.05, size: int = 4096) -> None:
        self.path = directory / "fsync-probe.dat"
        self.every_s, self.block = every_s, b"x" * size
        self.times_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not self._stop.wait(self.every_s):
                t0 = time.perf_counter()
                os.write(fd, self.block)
                os.fsync(fd)
                self.times_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def summary(self) -> dict[str, float]:
        """``n`` fsyncs timed and their p50, p99 and max in milliseconds."""
        t = self.times_ms
        return {
            "n": len(t),
            "p50": round(pct(t, 0.5), 2) if t else 0.0,
            "p99": round(pct(t, 0.99), 2) if t else 0.0,
            "max": round(max(t), 2) if t else 0.0,
        }


class Client:
    """The load generator's HTTP client: aiohttp (its parser in C) rather than httpx, because it
    shares the machine's cores with the app and serving; ``bench_cpu_ms_per_request`` reports
    what it still costs."""

    def __init__(self, base_url: str) -> None:
        import aiohttp

        self.errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
        self.session = aiohttp.ClientSession(
            base_url,
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=60),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        async with self.session.request(method, path, json=body, headers=headers) as r:
            return Answer(r.status, await r.read())

    async def close(self) -> None:
        await self.session.close()


class Answer:
    """A status and a body."""

    def __init__(self, status: int, content: bytes) -> None:
        self.status_code, self.content = status, content

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if not 200 <= self.status_code < 300:
            raise RuntimeError(f"HTTP {self.status_code}: {self.content[:300]!r}")


async def open_loop(client: Client, make: Any, rps: int, seconds: int) -> dict[str, float]:
    """Send ``rps * seconds`` requests on schedule; latency from the scheduled time (a late send,
    the generator's own delay included, counts against the answer: no coordinated omission).
    ``send_lag_p99_ms`` is how late the generator itself started requests."""
    n = rps * seconds
    latencies: list[float] = []
    lags: list[float] = []
    failures = 0
    # This process holds the seeding's heap (Feast, MLflow, the models: ~700k objects); one full
    # collection over it took 270 ms here, in the middle of a phase, and every request due during it
    # was sent late and counted against the app. The generator's own pauses are not the app's:
    # its heap is frozen and its collector off while it sends (about 1,000 requests' garbage).
    gc.collect()
    gc.freeze()
    gc.disable()
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal failures
        due = start + i / rps
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        lags.append((time.perf_counter() - due) * 1000)
        try:
            r = await make(client, i)
        except client.errors:
            failures += 1
            return
        if not 200 <= r.status_code < 300:
            failures += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        gc.enable()
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(pct(latencies, 0.99), 2) if latencies else None,
        "rps": round(len(latencies) / elapsed, 1),
        "requests": n,
        "failed": failures,
        "send_lag_p99_ms": round(pct(lags, 0.99), 2),
    }


SLOW_S = 0.05
"""The threshold of ``serving_over_50ms`` (a bucket bound of every histogram read)."""
SLOW_HISTOGRAMS: dict[str, tuple[str, dict[str, str]]] = {
    "decide": ("oo_decision_latency_seconds", {}),
    "log_wait": ("oo_decision_log_wait_seconds", {}),
    "http": ("bentoml_service_request_duration_seconds", {"endpoint": "/rank"}),
}
"""Each count's histogram, and the labels its samples must have."""


def slow_counts(metrics_text: str) -> dict[str, float]:
    """Observations over ``SLOW_S`` in each of ``SLOW_HISTOGRAMS``, from a Prometheus exposition
    (all workers' and label values' samples summed): each histogram's count minus its ``le=SLOW_S``
    bucket.

    Examples
    --------
    >>> text = (
    ...     "# TYPE oo_decision_latency_seconds histogram\\n"
    ...     'oo_decision_latency_seconds_bucket{le="0.05"} 7.0\\n'
    ...     'oo_decision_latency_seconds_bucket{le="+Inf"} 9.0\\n'
    ...     "oo_decision_latency_seconds_count 9.0\\n"
    ...     "oo_decision_latency_seconds_sum 0.6\\n"
    ...     "# TYPE bentoml_service_request_duration_seconds histogram\\n"
    ...     'bentoml_service_request_duration_seconds_bucket{endpoint="/rank",le="0.05"} 5.0\\n'
    ...     'bentoml_service_request_duration_seconds_bucket{endpoint="/rank",le="+Inf"} 9.0\\n'
    ...     'bentoml_service_request_duration_seconds_count{endpoint="/rank"} 9.0\\n'
    ...     'bentoml_service_request_duration_seconds_bucket{endpoint="/reward",le="0.05"} 1.0\\n'
    ...     'bentoml_service_request_duration_seconds_bucket{endpoint="/reward",le="+Inf"} 3.0\\n'
    ...     'bentoml_service_request_duration_seconds_count{endpoint="/reward"} 3.0\\n'
    ... )
    >>> slow_counts(text)
    {'decide': 2.0, 'log_wait': 0.0, 'http': 4.0}
    """
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(SLOW_HISTOGRAMS, 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for key, (name, labels) in SLOW_HISTOGRAMS.items():
            if family.name != name:
                continue
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                if sample.name.endswith("_count"):
                    out[key] += sample.value
                elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == SLOW_S:
                    out[key] -= sample.value
    return out


async def run(
    api: str, app_pid: int, on_users: Any, serving_pids: Any, var: Path, serving_url: str | None = None
) -> dict[str, Any]:
    """Register the users, hand their ids to ``on_users`` (seed serving, wait for it), then
    measure. ``serving_pids`` returns the pids whose CPU is serving's; ``var`` is the run's
    directory (where its event log is: the :class:`FsyncProbe` writes there); ``serving_url`` (the
    real serving's, not the stand-in's) is where its ``/metrics`` are read."""
    import psutil

    async def slow() -> dict[str, float]:
        async with httpx.AsyncClient(timeout=10) as c:
            return slow_counts((await c.get(f"{serving_url}/metrics")).raise_for_status().text)

    def cpu(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    client = Client(api)
    try:
        tokens, ids = [], []
        for u in range(USERS):
            body = {"email": f"bench{u}@example.org", "password": "bench-password-123"}
            r = await client.call("POST", "/v1/auth/register", body)
            r.raise_for_status()
            tokens.append({"Authorization": f"Bearer {r.json()['access_token']}"})
            ids.append((await client.call("GET", "/v1/auth/me", headers=tokens[-1])).json()["id"])
        await asyncio.to_thread(on_users, ids)
        decisions: list[tuple[dict[str, str], str]] = []

        async def tip(c: Client, i: int) -> Answer:
            headers = tokens[i % USERS]
            r = await c.call("GET", "/v1/tips/next", headers=headers)
            if r.status_code == 200 and (decision := r.json()["decision_id"]):
                decisions.append((headers, decision))
            return r

        pool: list[tuple[dict[str, str], str]] = []  # the decisions the feedback phase reacts to

        async def feedback(c: Client, i: int) -> Answer:
            # each decision three times (done, snooze, dismiss: distinct reactions), then again
            # (duplicates: answered from the stored reaction) if there are too few decisions
            headers, decision = pool[(i // len(REACTIONS)) % len(pool)]
            body = {"decision_id": decision, "reaction": REACTIONS[i % len(REACTIONS)]}
            return await c.call("POST", "/v1/feedback", body, headers)

        async def settle() -> None:
            """Wait until the app answers promptly again (what a phase queued has drained)."""
            end = time.monotonic() + 120
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    r = await client.call("GET", "/v1/me/profile", headers=tokens[0])
                    if r.status_code == 200 and time.perf_counter() - t0 < 0.2:
                        return
                except client.errors:
                    pass
                await asyncio.sleep(0.5)

        deadline = time.monotonic() + 120
        for i in range(WARMUP):  # connections, imports and caches warm
            r = await tip(client, i)
            while r.status_code == 503 and time.monotonic() < deadline:  # serving still warming up
                await asyncio.sleep(0.5)
                r = await tip(client, i)
            r.raise_for_status()
        if not decisions:
            raise RuntimeError(f"no tip in {WARMUP} warm-up requests: {r.content[:300]!r}")
        if serving_url is not None:
            await slow()  # serving's first /metrics (its collector's first read) is the slow one
        # Service time: one request at a time (no queue), what a request costs the app.
        sequential = {"tips_next": await one_at_a_time(client, tip, SEQUENTIAL)}
        pool[:] = decisions[: WARMUP // 2]
        sequential["feedback"] = await one_at_a_time(client, feedback, min(SEQUENTIAL, len(REACTIONS) * len(pool)))
        del decisions[: WARMUP // 2]  # the rest is fresh, and the open-loop tips add theirs
        out: dict[str, Any] = {}
        me = psutil.Process()
        for name, make in (("tips_next", tip), ("feedback", feedback)):
            await settle()
            pool[:] = decisions
            slow0 = await slow() if serving_url is not None else None
            # serving renders /metrics on its event loop (45 ms the first time, 4 to 6 ms after,
            # measured): read before the phase, not in its first requests' way
            await asyncio.sleep(QUIET_BEFORE_PHASE_S)
            app0, serving0, bench0, steal0 = cpu([app_pid]), cpu(serving_pids()), cpu([me.pid]), steal_ms()
            with FsyncProbe(var) as disk:
                out[name] = await open_loop(client, make, RPS, SECONDS)
            bench1 = cpu([me.pid])  # the generator's own share of the 2 cores, before the settle wait
            out[name]["steal_ms_per_s"] = round((steal_ms() - steal0) / SECONDS, 1)
            out[name]["disk_fsync_ms"] = disk.summary()
            if slow0 is not None:
                out[name]["serving_over_50ms"] = {k: round(v - slow0[k]) for k, v in (await slow()).items()}
            if name == "feedback":  # the relay delivers the last rewards after the last answer
                await asyncio.sleep(RELAY_SETTLE_S)
                out[name]["distinct_reactions"] = min(out[name]["requests"], len(REACTIONS) * len(pool))
            n = out[name]["requests"]
            out[name]["app_cpu_ms_per_request"] = round((cpu([app_pid]) - app0) / n * 1000, 3)
            out[name]["serving_cpu_ms_per_request"] = round((cpu(serving_pids()) - serving0) / n * 1000, 3)
            out[name]["bench_cpu_ms_per_request"] = round((bench1 - bench0) / n * 1000, 3)
    finally:
        await client.close()
    return out | {"sequential": sequential}


async def one_at_a_time(client: Client, make: Any, n: int) -> dict[str, float]:
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
        "p99_ms": round(pct(latencies, 0.99), 2),
        "rps": round(n / (time.perf_counter() - start), 1),
    }


def start_app(env: dict[str, str], log: Path) -> tuple[Any, str]:
    """The app API as deployed, on a free port."""
    from bench.serving import Proc

    port = free_port()
    args = ["-m", "uvicorn", "--factory", "app_api.main:create_app", "--host", "127.0.0.1", "--port", str(port)]
    app = Proc([sys.executable, *args, "--no-access-log", "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/healthz")
    return app, url


def with_real_serving(var: Path, workers: int = 1) -> dict[str, Any]:
    """The app with ``bentoml serve serving.service:TipService`` behind it: as it starts by
    default (one worker, the embedded learner), or with ``workers`` worker processes and
    ``python -m serving.learner`` beside them (whose CPU counts as serving's)."""
    import psutil

    from bench.serving import TASKS, prepare, serve, start_learner, wait_ready
    from data_contracts.serving import RankRequest
    from oo.serving_client import wire_body
    from tests.serving.conftest import seed_tasks

    var.mkdir(parents=True, exist_ok=True)
    env = prepare(var)  # champion registered, Feast applied (and bench/serving.py's own users)
    learners = []
    if workers > 1:
        env, learner = start_learner(env, var, workers)
        learners.append(learner)
    service, serving_url = serve("serving.service:TipService", env, var / "serve.log")
    procs = [service, *learners]
    try:
        app, api = start_app(env | APP_ENV | {"OO_APP__SERVING_URL": serving_url}, var / "app.log")
        procs.insert(0, app)  # stopped first: the app (and its relay) before serving

        def seed(ids: list[str]) -> None:
            from oo.settings import get_settings

            for user_id in ids:
                seed_tasks(get_settings(), user_id, TASKS)
            wait_ready(service, serving_url)
            # cold start (each user's first read of the lake and the store) is not the app's: each
            # user ranked on every worker, on fresh connections, which the kernel spreads over them
            with httpx.Client(base_url=serving_url, timeout=120) as client:
                for _ in range(4 * workers if workers > 1 else 1):
                    for user_id in ids:
                        body = wire_body("rank", RankRequest(user_id=user_id))
                        headers = {"Connection": "close"} if workers > 1 else None
                        client.post("/rank", json=body, headers=headers).raise_for_status()

        def serving_pids() -> list[int]:
            root = psutil.Process(service.proc.pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True)), *(p.proc.pid for p in learners)]

        result = asyncio.run(run(api, app.proc.pid, seed, serving_pids, var, serving_url))
        result["candidates_per_rank"] = TASKS
    finally:
        for p in procs:
            p.stop()
    return result


def with_stand_in(var: Path) -> dict[str, Any]:
    """The app with the protocol stand-in ``oo.fakes.serving`` behind it (labelled apart)."""
    from bench.serving import Proc

    var.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"OO_PATHS__VAR_DIR": str(var), "OO_LOG_LEVEL": "WARNING"}
    stand_in = Proc([sys.executable, "-c", f"from oo.fakes.serving import main; main(port={port})"], env, var / "s.log")
    procs = [stand_in]
    try:
        wait_up(f"http://127.0.0.1:{port}/")
        app, api = start_app(env | APP_ENV | {"OO_APP__SERVING_URL": f"http://127.0.0.1:{port}"}, var / "app.log")
        procs.insert(0, app)
        result = asyncio.run(run(api, app.proc.pid, lambda ids: None, lambda: [stand_in.proc.pid], var))
    finally:
        for p in procs:
            p.stop()
    result["serving"] = "STAND-IN: oo.fakes.serving (protocol stand-in, near-free rank), own process"
    return result


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="oo-bench-api-"))
    started, start_load = time.time(), round(os.getloadavg()[0], 2)
    result = with_real_serving(var / "real")
    if os.environ.get("BENCH_API_REPLICAS", "1") != "0":
        result["replicas"] = {"workers": REPLICA_WORKERS, **with_real_serving(var / "replicas", REPLICA_WORKERS)}
    if os.environ.get("BENCH_API_STAND_IN", "1") != "0":
        result["stand_in"] = with_stand_in(var / "stand-in")
    result["setup"] = {
        "load_average_at_start": start_load,
        "offered_rps": RPS,
        "seconds_per_endpoint": SECONDS,
        "users": USERS,
        "app": "uvicorn, 1 process, SQLite, outbox relay running",
        "serving": "bentoml serve serving.service:TipService (own processes), seeded by bench/serving.py's prepare",
        "replicas": f"the same with OO_SERVING__WORKERS={REPLICA_WORKERS} (one per core) and python -m "
        "serving.learner beside them (the topology past the default), reported apart",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "wall_s": round(time.time() - started, 1),
        "goal": {"tips_next_p99_ms": 30, "feedback_p99_ms": 10},
    }
    out = ROOT / "bench" / "results" / "api.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(var, ignore_errors=True)  # kept when a run fails: its logs say why


if __name__ == "__main__":
    main()
