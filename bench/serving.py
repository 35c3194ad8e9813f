"""Serving benchmark: ``make bench-serving`` writes ``bench/results/serving.json``.

In one run, on this machine:

- **rank**: ``POST /rank`` over HTTP against ``bentoml serve serving.service:TipService``
  (embedded learner, a registered ``@champion`` served, Feast SQLite online store applied), each
  request for one of 20 users whose 30 open Todoist tasks are the candidates (the Todoist pool,
  cached as in production; no LLM pool), 8 concurrent clients with keep-alive, 1,000 requests
  after 50 warm-up ones; latency p50 / p99 and throughput (requests per second of wall time);
- **floor**: the same clients against a trivial BentoML endpoint (``serving.service:Echo``) that
  returns its input, sent a rank request of the same size (30 candidates);
- **reward_to_policy_ms**: the time from a reward's HTTP call to the answer of a rank served
  once the policy includes the reward (``/ops/ready`` polled every 2 ms), 100 times; embedded
  (learner in the service) and, as ``reward_to_policy_separate_ms``, with
  ``python -m serving.learner`` and a replica following its snapshots.

Goals on the 2-core machine: rank p99 <= 15 ms, >= 300 ranks/s, rank p99 <= 3x the floor's;
reward-to-policy p99 <= 100 ms embedded, <= 1 s with a separate learner.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USERS, TASKS, CONCURRENCY, REQUESTS, WARMUP, REWARD_ROUNDS = 20, 30, 8, 1000, 50, 100
START_DEADLINE_S = 900.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Proc:
    """A subprocess with a log, stopped by SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.handle = open(log, "wb")  # noqa: SIM115  # closed in stop()
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **env}, stdout=self.handle, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.handle.close()


def serve(target: str, env: dict[str, str], log: Path) -> tuple[Proc, str]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("bentoml"))
    proc = Proc([exe, "serve", target, "--host", "127.0.0.1", "--port", str(port)], env, log)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: Proc, url: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{proc.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {START_DEADLINE_S} s:\n{proc.log.read_text()[-3000:]}")


def load(url: str, path: str, bodies: Callable[[int], dict[str, Any]], n: int) -> dict[str, float]:
    """``n`` POSTs from CONCURRENCY threads with keep-alive: p50/p99 latency and throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                r = client.post(path, json=bodies(i))
                took = time.perf_counter() - start
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
                with lock:
                    latencies.append(took)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "p50_ms": round(pct(latencies, 0.5) * 1000, 3),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 3),
        "throughput_rps": round(n / wall, 1),
    }


def reward_to_policy(url: str, user: str, rounds: int) -> dict[str, float]:
    """Reward a decision, then wait until the served policy includes it (``/ops/ready``: the
    embedded learner's count, or the count of the snapshot the replica has loaded) and rank once:
    the time from the reward's call to that rank's answer.

    (A single reward need not move the probabilities: a step on features every candidate shares
    changes every score alike, so the ranking's probabilities are not a reliable probe.)
    """
    times: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:

        def learned() -> int:
            return int(client.get("/ops/ready").json()["learner_stats"].get("learned", 0))

        for _ in range(rounds):
            event_id = client.post("/rank", json={"user_id": user}).json()["event_id"]
            target = learned() + 1
            start = time.perf_counter()
            body = {"event_id": event_id, "user_id": user, "reaction": "done", "reaction_id": str(uuid.uuid4())}
            r = client.post("/reward", json=body)
            if r.status_code != 200:
                raise RuntimeError(r.text)
            deadline = start + 10.0
            while learned() < target:
                if time.perf_counter() > deadline:
                    raise RuntimeError("the served policy did not include a reward within 10 s")
                time.sleep(0.002)
            client.post("/rank", json={"user_id": user}).raise_for_status()
            times.append(time.perf_counter() - start)
    return {"p50": round(pct(times, 0.5) * 1000, 3), "p99": round(pct(times, 0.99) * 1000, 3)}


def prepare(var: Path) -> dict[str, str]:
    """Settings env for a world under ``var``: champion registered, Feast applied, users' tasks in the lake."""
    env = {
        "OO_PATHS__VAR_DIR": str(var),
        "OO_FEAST__PROJECT": f"bench_{uuid.uuid4().hex[:8]}",
        "BENTOML_HOME": str(var / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "OO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    from oo.runtime import configure

    configure()
    from oo.settings import get_settings
    from tests.serving.conftest import apply_feature_store, learnable_policy, register_champion, seed_tasks

    get_settings.cache_clear()
    settings = get_settings()
    register_champion(settings, learnable_policy())
    apply_feature_store(settings)
    for u in range(USERS):
        seed_tasks(settings, f"bench-u{u}", TASKS)
    return env


def echo_body(i: int) -> dict[str, Any]:
    return {
        "user_id": f"bench-u{i % USERS}",
        "candidates": [
            {
                "candidate_id": f"task:{j}",
                "content": f"task {j}",
                "kind": "todoist_task",
                "source": "todoist",
                "task_id": str(j),
            }
            for j in range(TASKS)
        ],
    }


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="oo-bench-serving-"))
    env = prepare(var)
    started = time.time()
    service, url = serve("serving.service:TipService", env, var / "serve.log")
    echo, echo_url = serve("serving.service:Echo", {**env, "BENTOML_HOME": str(var / "bentoml-echo")}, var / "echo.log")
    procs = [service, echo]
    try:
        wait_ready(service, url)
        wait_ready(echo, echo_url)
        ranks = lambda i: {"user_id": f"bench-u{i % USERS}"}  # noqa: E731
        load(url, "/rank", ranks, WARMUP)
        load(echo_url, "/echo", echo_body, WARMUP)
        floor = load(echo_url, "/echo", echo_body, REQUESTS)
        rank = load(url, "/rank", ranks, REQUESTS)
        n_candidates = len(httpx.post(f"{url}/rank", json={"user_id": "bench-u0"}, timeout=30).json()["ranking"])
        embedded = reward_to_policy(url, "bench-u1", REWARD_ROUNDS)
        echo.stop()
        service.stop()
        procs = []
        separate_env = {
            **env,
            "OO_SERVING__LEARNER": "separate",
            "OO_SERVING__SNAPSHOT_EVERY_REWARDS": "1",
            "OO_SERVING__STATE_DIR": str(var / "separate"),
        }
        learner = Proc([sys.executable, "-m", "serving.learner"], separate_env, var / "learner.log")
        procs.append(learner)
        snapshot = var / "separate" / "snapshots" / "latest.json"
        deadline = time.monotonic() + START_DEADLINE_S
        while not snapshot.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        replica, replica_url = serve("serving.service:TipService", separate_env, var / "replica.log")
        procs.append(replica)
        wait_ready(replica, replica_url)
        separate = reward_to_policy(replica_url, "bench-u2", REWARD_ROUNDS // 4)
    finally:
        for p in procs:
            p.stop()
    result = {
        "rank": rank,
        "floor": floor,
        "reward_to_policy_ms": embedded,
        "reward_to_policy_separate_ms": separate,
        "ratio_rank_p99_to_floor_p99": round(rank["p99_ms"] / floor["p99_ms"], 2),
        "setup": {
            "candidates_per_rank": n_candidates,
            "concurrency": CONCURRENCY,
            "requests": REQUESTS,
            "users": USERS,
            "policy": "softmax champion from MLflow (tip-policy/1), rule baseline as shadow",
            "feature_store": "Feast SQLite online store",
            "reward_rounds": {"embedded": REWARD_ROUNDS, "separate": REWARD_ROUNDS // 4},
            "load_average_at_end": os.getloadavg()[0],
            "cpu_count": os.cpu_count(),
            "wall_s": round(time.time() - started, 1),
        },
        "goals": {
            "rank_p99_ms": 15,
            "rank_rps": 300,
            "p99_vs_floor": 3,
            "reward_to_policy_p99_ms": {"embedded": 100, "separate": 1000},
        },
    }
    out = ROOT / "bench" / "results" / "serving.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
