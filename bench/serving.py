"""Serving benchmark: ``make bench-serving`` writes ``bench/results/serving.json``.

In one run, on this machine, the load from ``wrk`` (one thread, 8 keep-alive connections, 10 s
after a 2 s warm-up; ``bench/wrk_post.lua``):

- **rank**: ``POST /rank`` against ``bentoml serve serving.service:TipService`` as it starts by
  default (one worker, the embedded learner; a registered ``@champion`` served, Feast SQLite
  online store applied), each request for one of 20 users whose 30 open Todoist tasks are the
  candidates (the Todoist pool, cached as in production; no LLM pool); latency p50 / p99 and
  throughput (requests per second of wall time);
- **floor**: the same load against a trivial BentoML endpoint (``serving.service:Echo``) that
  returns its input, sent a rank request of the same size (30 candidates), same worker count;
- **replicas**: the same two with ``OO_SERVING__WORKERS=2`` worker processes (one per core) and
  ``python -m serving.learner`` beside them (the topology past the default);
- **reward_to_policy_ms**: the time from a reward's HTTP call to the answer of a rank served
  once the policy includes the reward (``/ops/ready`` polled every 2 ms), 100 times; embedded
  (learner in the service) and, as ``reward_to_policy_separate_ms``, with the separate learner
  and the two-worker replica following its snapshots.

Goals on the 2-core machine: rank p99 <= 15 ms, >= 300 ranks/s, rank p99 <= 3x the floor's;
reward-to-policy p99 <= 100 ms embedded, <= 1 s with a separate learner. With 8 requests always
in flight the mean latency is 8 / throughput (Little's law): a p99 of 15 ms needs well over
533 requests/s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USERS, TASKS, CONCURRENCY, SECONDS, WARMUP_S, REWARD_ROUNDS, WORKERS = 20, 30, 8, 10, 2, 100, 2
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


def load(url: str, path: str, bodies: list[dict[str, Any]], tmp: Path) -> dict[str, float]:
    """``POST path`` with ``bodies`` in turn for SECONDS (after WARMUP_S of the same) from ``wrk``:
    CONCURRENCY keep-alive connections, one wrk thread. p50/p99 latency and throughput.

    wrk (C) rather than Python clients: on two cores the load generator shares the CPU with the
    server, and eight Python threads cost a fifth of a core at 200 requests/s; wrk, a few percent.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: `make bench-serving` installs it (apt-get install wrk)")
    file = tmp / f"bodies-{uuid.uuid4().hex[:8]}.jsonl"
    file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    script = ROOT / "bench" / "wrk_post.lua"

    def run(seconds: float) -> dict[str, int]:
        args = [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
        out = subprocess.run([*args, "--", str(file), path], capture_output=True, text=True, check=True).stdout
        got: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        if got["errors"]:
            raise RuntimeError(f"{path}: {got['errors']} failed requests of {got['requests']}:\n{out}")
        return got

    run(WARMUP_S)
    got = run(SECONDS)
    return {
        "p50_ms": round(got["p50_us"] / 1000, 3),
        "p99_ms": round(got["p99_us"] / 1000, 3),
        "throughput_rps": round(got["requests"] / (got["duration_us"] / 1e6), 1),
        "requests": got["requests"],
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


def start_learner(env: dict[str, str], var: Path, workers: int) -> tuple[dict[str, str], Proc]:
    """``python -m serving.learner`` started for the topology past the default, and the settings
    env of its replicas (``workers`` worker processes each), once its first snapshot is out."""
    separate_env = {
        **env,
        "OO_SERVING__LEARNER": "separate",
        "OO_SERVING__WORKERS": str(workers),
        "OO_SERVING__SNAPSHOT_EVERY_REWARDS": "1",
        "OO_SERVING__STATE_DIR": str(var / "separate"),
    }
    learner = Proc([sys.executable, "-m", "serving.learner"], separate_env, var / "learner.log")
    snapshot = var / "separate" / "snapshots" / "latest.json"
    deadline = time.monotonic() + START_DEADLINE_S
    while not snapshot.exists() and time.monotonic() < deadline:
        if learner.proc.poll() is not None:
            raise RuntimeError(f"the learner exited:\n{learner.log.read_text()[-3000:]}")
        time.sleep(0.1)
    return separate_env, learner


def rank_body(u: int) -> dict[str, Any]:
    return {"user_id": f"bench-u{u}"}


def echo_body(u: int) -> dict[str, Any]:
    return {
        "user_id": f"bench-u{u}",
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


def pair(env: dict[str, str], var: Path, name: str) -> tuple[dict[str, float], dict[str, float], str, list[Proc]]:
    """The floor (``Echo``) then rank (``TipService``), each under the same load, same settings."""
    service, url = serve("serving.service:TipService", env, var / f"{name}-serve.log")
    echo, echo_url = serve(
        "serving.service:Echo", {**env, "BENTOML_HOME": str(var / f"bentoml-echo-{name}")}, var / f"{name}-echo.log"
    )
    try:
        wait_ready(service, url)
        wait_ready(echo, echo_url)
        floor = load(echo_url, "/echo", [echo_body(u) for u in range(USERS)], var)
        rank = load(url, "/rank", [rank_body(u) for u in range(USERS)], var)
    finally:
        echo.stop()
    return rank, floor, url, [service]


def main() -> None:
    var = Path(tempfile.mkdtemp(prefix="oo-bench-serving-"))
    env = prepare(var)
    started = time.time()
    procs: list[Proc] = []
    try:
        rank, floor, url, procs = pair(env, var, "embedded")
        n_candidates = len(httpx.post(f"{url}/rank", json={"user_id": "bench-u0"}, timeout=30).json()["ranking"])
        embedded = reward_to_policy(url, "bench-u1", REWARD_ROUNDS)
        for p in procs:
            p.stop()
        procs = []
        separate_env, learner = start_learner(env, var, WORKERS)
        procs.append(learner)
        replica_rank, replica_floor, replica_url, replica = pair(separate_env, var, "replicas")
        procs += replica
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
        "replicas": {
            "workers": WORKERS,
            "rank": replica_rank,
            "floor": replica_floor,
            "ratio_rank_p99_to_floor_p99": round(replica_rank["p99_ms"] / replica_floor["p99_ms"], 2),
        },
        "setup": {
            "candidates_per_rank": n_candidates,
            "concurrency": CONCURRENCY,
            "load_generator": f"wrk, 1 thread, {CONCURRENCY} keep-alive connections, {SECONDS} s after {WARMUP_S} s",
            "users": USERS,
            "policy": "softmax champion from MLflow (tip-policy/1), rule baseline as shadow",
            "feature_store": "Feast SQLite online store",
            "default": "rank, floor: one worker, the embedded learner (the default)",
            "replicas": f"{WORKERS} workers (OO_SERVING__WORKERS), python -m serving.learner beside them; "
            f"the floor with {WORKERS} workers too",
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
