"""Serving test set-up: a var dir per module, a champion registered in its MLflow, a Feast
registry applied, and the real service run with ``bentoml serve`` (or ``python -m
serving.learner``) in a subprocess, polled until ready under a deadline, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.policies import Policy, Softmax, default_model
from oo.settings import Settings
from tests.models.features.conftest import settings_env

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 240.0
"""A busy 2-core machine imports Feast, MLflow and BentoML slowly: the server gets this long."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_env(var: Path, **extra: str) -> dict[str, str]:
    """``OO_*`` variables of one test world under ``var`` (its own lake, event log, MLflow, Feast)."""
    return {
        "OO_PATHS__VAR_DIR": str(var),
        "OO_FEAST__PROJECT": f"t_{uuid.uuid4().hex[:10]}",
        "BENTOML_HOME": str(var / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        **extra,
    }


@contextmanager
def applied_env(env: Mapping[str, str]) -> Iterator[Settings]:
    """``env`` in this process (settings rebuilt) for the duration of the block."""
    with settings_env(**env) as settings:
        yield settings


def learnable_policy(seed: int = 0) -> Policy:
    """A policy whose state changes with every reward (the served champion in these tests)."""
    return Softmax(seed=seed, temperature=0.5, model=default_model(0.3))


def register_champion(settings: Settings, policy: Policy, alias: str = "champion") -> str:
    """Register ``policy`` as a new version of ``tip-policy`` and point ``alias`` at it."""
    import mlflow
    import mlflow.pyfunc

    from models.policies import dumps
    from models.policies.base import RIVER_VERSION
    from models.registry import PolicyPyfunc, Registry

    registry = Registry(settings)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=registry.experiment_id):
        pickled = Path(tmp) / "policy.pkl"
        pickled.write_bytes(dumps(policy))
        info = mlflow.pyfunc.log_model(
            name="policy",
            python_model=PolicyPyfunc(),
            artifacts={"policy": str(pickled)},
            pip_requirements=[f"river=={RIVER_VERSION}"],
        )
    version = str(mlflow.register_model(info.model_uri, registry.model_name).version)
    registry.client.set_registered_model_alias(registry.model_name, alias, version)
    return version


def apply_feature_store(settings: Settings) -> None:
    """Register the Feast definitions (an empty online store: every value is a contract default)."""
    from oo.feature_store import apply, get_store

    apply(get_store(settings))


class Server:
    """A subprocess (``bentoml serve`` or the learner) with its log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class Service(Server):
    """``bentoml serve serving.service:TipService`` on a free port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, target: str = "serving.service:TipService") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = str(Path(sys.executable).with_name("bentoml"))
        super().__init__([exe, "serve", target, "--host", "127.0.0.1", "--port", str(self.port)], env, log_path)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        wait_for(self._ready, START_DEADLINE_S, lambda: f"service did not become ready:\n{self.log()}", self)

    def _ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body)

    def ready(self) -> dict[str, Any]:
        got: dict[str, Any] = self.http.get("/ops/ready").json()
        return got

    def stop(self) -> None:
        self.http.close()
        super().stop()


def wait_for(
    check: Callable[[], Any], timeout: float, message: Callable[[], str] | str, server: Server | None = None
) -> Any:
    """Poll ``check`` until it returns a truthy value, under a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if server is not None and server.proc.poll() is not None:
            pytest.fail(f"process exited ({server.proc.returncode}):\n{server.log()}")
        if time.monotonic() > deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(0.05)


def candidates(n: int, prefix: str = "c", llm: int = 0) -> list[dict[str, Any]]:
    """``n`` caller-supplied task candidates (priorities 1..4) and ``llm`` LLM tips."""
    out: list[dict[str, Any]] = [
        {
            "candidate_id": f"{prefix}{i}",
            "content": f"task {i}",
            "kind": "todoist_task",
            "source": "todoist",
            "features": {"priority": float(i % 4 + 1)},
        }
        for i in range(n)
    ]
    out += [
        {
            "candidate_id": f"{prefix}-llm{j}",
            "content": f"a small step {j}",
            "kind": "llm_tip",
            "source": "tip-generator",
            "llm_model": "local/template-tip-generator",
            "prompt_version": "tips-v1",
        }
        for j in range(llm)
    ]
    return out


def seed_tasks(settings: Settings, user_id: str, n: int) -> list[str]:
    """Write ``n`` open Todoist tasks of ``user_id`` to the lake, as a sync would; their ids."""
    from datetime import UTC, datetime

    from data_contracts import TodoistTask
    from oo.lake import Lake

    at = datetime(2026, 5, 1, 8, tzinfo=UTC)
    tasks = [
        TodoistTask(
            user_id=user_id,
            id=f"{user_id}-t{i}",
            project_id="p1",
            content=f"{user_id}'s task {i}",
            priority=i % 4 + 1,
            added_at=at,
            synced_at=at,
        )
        for i in range(n)
    ]
    Lake(settings.lake_root).write("todoist_tasks", tasks)
    return [t.id for t in tasks]
