"""``make bench-ingest``: sync 1,000 users x 200 tasks from the fake Todoist API into the lake.

Measured in one run, on the same machine:

- **sync**: ``oo.integrations.todoist.sync.sync_users`` over every user: the fake API v1 on a loopback port
  (another process), the client, raw JSON kept, pydantic + Great Expectations validation, lake
  writes (atomic, idempotent), the cursor saved per user. Users are validated and written in
  chunks of ``--chunk`` (the DAG syncs one user per mapped task).
- **limit**: the same JSON bodies (fetched again, untimed) parsed and turned into the same Parquet
  datasets (tasks, projects, completions, raw payloads) with no API and no validation: json, the
  same field mapping, ``pyarrow.Table.from_pylist`` with the contract's schema, zstd Parquet,
  fsync.

The machine is shared, so limit and sync runs alternate (``--rounds``, each sync on a fresh
database and lake) and the best run of each is compared; every run's time is in the JSON.
Writes ``bench/results/ingest.json``: ``{"tasks_per_s", "limit_tasks_per_s", "ratio", ...}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(users: int, tasks: int, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "oo.cli", "fake-todoist", "--port", str(port), "--users", str(users)]
    cmd += ["--tasks", str(tasks), "--seed", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/__fake/users", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the fake Todoist server did not come up")


def typed(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """The row's values as Arrow takes them: RFC 3339 text to datetimes, ``YYYY-MM-DD`` to dates."""
    out = {}
    for f in schema:
        v = row.get(f.name)
        if isinstance(v, str) and pa.types.is_timestamp(f.type):
            v = datetime.fromisoformat(v)
        elif isinstance(v, dict) and pa.types.is_struct(f.type):
            v = {
                c.name: date.fromisoformat(v[c.name]) if pa.types.is_date32(c.type) and v.get(c.name) else v.get(c.name)
                for c in f.type
            }
        out[f.name] = v
    return out


def limit_run(bodies: list[tuple[str, bytes, list[bytes]]], out: Path, chunk: int, synced_at: datetime) -> float:
    """Parse the same JSON and write the same Parquet datasets; no API, no validation."""
    from data_contracts import TodoistCompletion, TodoistProject, TodoistRawPayload, TodoistTask
    from data_contracts.arrow import arrow_schema
    from oo.integrations.todoist.sync import completion_row, project_row, raw_text, task_row

    schemas = {
        "todoist_tasks": arrow_schema(TodoistTask),
        "todoist_projects": arrow_schema(TodoistProject),
        "todoist_completions": arrow_schema(TodoistCompletion),
        "todoist_raw": arrow_schema(TodoistRawPayload),
    }
    start = time.perf_counter()
    for n in range(0, len(bodies), chunk):
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in schemas}
        for user_id, sync_body, completed_bodies in bodies[n : n + chunk]:
            body = json.loads(sync_body)
            done = [row for page in completed_bodies for row in json.loads(page)["items"]]
            stamp = {"user_id": user_id, "synced_at": synced_at, "schema_version": 1}
            for resource, objects in (("items", body["items"]), ("projects", body["projects"]), ("completed", done)):
                for obj in objects:
                    text = raw_text(obj)
                    rows["todoist_raw"].append(
                        {
                            **stamp,
                            "resource": resource,
                            "object_id": obj.get("id"),
                            "payload_hash": hashlib.sha256(text.encode()).hexdigest(),
                            "payload": text,
                        }
                    )
            rows["todoist_tasks"] += [{**task_row(i, False), **stamp} for i in body["items"]]
            rows["todoist_projects"] += [{**project_row(p, False), **stamp} for p in body["projects"]]
            rows["todoist_completions"] += [{**completion_row(c), **stamp} for c in done]
        for dataset, schema in schemas.items():
            table = pa.Table.from_pylist([typed(r, schema) for r in rows[dataset]], schema=schema)
            path = out / dataset / f"part-{n}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as sink:
                pq.write_table(table, sink, compression="zstd")
                sink.flush()
                os.fsync(sink.fileno())
    return time.perf_counter() - start


def warm_up(split: Any) -> None:
    from data_contracts import TodoistCompletion, TodoistProject, TodoistTask

    now = datetime.now(UTC)
    rows = {
        TodoistTask: {"user_id": "u", "id": "t", "project_id": "p", "content": "c", "priority": 1, "added_at": now,
                      "synced_at": now},
        TodoistProject: {"user_id": "u", "id": "p", "name": "n", "synced_at": now},
        TodoistCompletion: {"user_id": "u", "task_id": "t", "completed_at": now},
    }  # fmt: skip
    for model, row in rows.items():
        assert split(model, [row], dataset="warm-up").counts == {"valid": 1, "quarantined": 0}


def fetch_bodies(base: str, accounts: list[dict[str, Any]], now: datetime) -> list[tuple[str, bytes, list[bytes]]]:
    """The JSON the sync reads, fetched once for the limit (untimed)."""
    bodies = []
    with httpx.Client(timeout=60) as http:
        for a in accounts:
            auth = {"Authorization": f"Bearer {a['token']}"}
            form = {"sync_token": "*", "resource_types": json.dumps(["items", "projects", "user"])}
            body = http.post(f"{base}/api/v1/sync", data=form, headers=auth).content
            params = {
                "since": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "until": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "limit": 200,
            }
            done = http.get(f"{base}/api/v1/tasks/completed/by_completion_date", params=params, headers=auth)
            bodies.append((a["todoist_id"], body, [done.content]))
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="users fetched at once")
    parser.add_argument("--rounds", type=int, default=3, help="alternating limit/sync rounds; best of each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="oo-bench-ingest-"))
    os.environ["OO_PATHS__VAR_DIR"] = str(var)
    from oo.runtime import configure

    configure(var_dir=var, log_level="WARNING")
    from cryptography.fernet import Fernet

    from data_contracts.validation import split
    from oo.db import engine_for, migrate
    from oo.integrations.todoist.sync import connect_user, sync_users
    from oo.lake import Lake
    from oo.settings import Settings
    from oo.vault import Vault

    port = free_port()
    say(f"seeding the fake Todoist API with {args.users} users x {args.tasks} tasks ...")
    server = start_fake(args.users, args.tasks, port)
    sync_runs: list[float] = []
    limit_runs: list[float] = []
    try:
        base = f"http://127.0.0.1:{port}"
        httpx.post(f"{base}/__fake/evolve", params={"steps": 2}, timeout=60)  # some completions, edits
        accounts = httpx.get(f"{base}/__fake/users", timeout=60).json()
        settings = Settings(
            todoist={"base_url": f"{base}/api/v1/", "history_days": 30, "concurrency": args.concurrency},
            vault={"keys": [Fernet.generate_key().decode()]},
        )
        vault = Vault(settings.vault.keys)
        warm_up(split)  # import Great Expectations and build the suites (untimed: once per process)
        now = datetime.now(UTC)
        bodies = fetch_bodies(base, accounts, now)
        ids = [a["todoist_id"] for a in accounts]
        # the machine is shared: limit and sync alternate, each on a fresh database and lake,
        # and the best run of each is compared
        for k in range(args.rounds):
            say(f"round {k + 1}: limit (the same JSON -> the same Parquet, no API, no validation) ...")
            limit_runs.append(limit_run(bodies, var / f"limit-{k}", args.chunk, now))
            say(f"round {k + 1}: sync (fake API -> client -> validation -> lake) ...")
            db_url = f"sqlite:///{var / f'app-{k}.db'}"
            migrate(db_url)
            engine, lake = engine_for(db_url), Lake(var / f"lake-{k}")
            for a in accounts:
                connect_user(engine, vault, a["todoist_id"], SecretStr(a["token"]))
            start = time.perf_counter()
            results = sync_users(ids, engine=engine, lake=lake, vault=vault, settings=settings, chunk=args.chunk)
            sync_runs.append(time.perf_counter() - start)
            ok = sum(r.status == "ok" for r in results)
            n_tasks = lake.read("todoist_tasks").num_rows
            quarantined = sum(r.quarantined for r in results)
            say(f"  limit {limit_runs[-1]:.2f} s, sync {sync_runs[-1]:.2f} s ({ok} users ok, {n_tasks} tasks)")
    finally:
        server.terminate()
        server.wait(timeout=30)

    tasks_per_s = n_tasks / min(sync_runs)
    limit_tasks_per_s = n_tasks / min(limit_runs)
    result = {
        "tasks_per_s": round(tasks_per_s, 1),
        "limit_tasks_per_s": round(limit_tasks_per_s, 1),
        "ratio": round(tasks_per_s / limit_tasks_per_s, 3),
        "users": args.users,
        "users_ok": ok,
        "tasks": n_tasks,
        "quarantined": quarantined,
        "sync_s": [round(x, 2) for x in sync_runs],
        "limit_s": [round(x, 2) for x in limit_runs],
        "statistic": f"best of {args.rounds} alternating rounds",
        "chunk_users": args.chunk,
        "concurrency": args.concurrency,
        "measured_at": now.isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    say(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
