"""What the README walkthrough's Airflow and MLflow steps do by hand, through their REST APIs: sign
in to Airflow with the admin login ``make run`` prints (``POST /auth/token`` gives a JWT), trigger a
DAG and wait for its run (``/api/v2``), and list an MLflow experiment's runs (``/api/2.0/mlflow``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

FINISHED = frozenset({"success", "failed"})


@dataclass
class Airflow:
    """Airflow 3's REST API at ``url``, signed in as ``username``."""

    url: str
    username: str
    password: str
    token: str = ""

    def _client(self) -> httpx.Client:
        if not self.token:
            r = httpx.post(
                f"{self.url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
            )
            r.raise_for_status()
            self.token = str(r.json()["access_token"])
        return httpx.Client(
            base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def trigger(self, dag_id: str) -> str:
        """Trigger ``dag_id`` now (what the UI's Trigger button does); the new run's id."""
        with self._client() as client:
            r = client.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
            r.raise_for_status()
            return str(r.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first."""
        with self._client() as client:
            r = client.get(f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})
            r.raise_for_status()
            return list(r.json()["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Each task of a run and its state (what the grid view shows)."""
        with self._client() as client:
            r = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
            r.raise_for_status()
            return {t["task_id"]: t["state"] for t in r.json()["task_instances"]}

    def wait_for_run(self, dag_id: str, timeout_s: float, run_id: str | None = None, after: str = "") -> dict[str, Any]:
        """The run ``run_id`` of ``dag_id`` (else its first run queued after ``after``, an ISO
        time) once it finished; raises ``AssertionError`` with its tasks' states when it failed or
        did not finish within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            candidates = [
                r for r in self.runs(dag_id) if (r["dag_run_id"] == run_id if run_id else r["queued_at"] > after)
            ]
            if candidates:
                seen = candidates[0]
                if seen["state"] in FINISHED:
                    break
            time.sleep(2)
        else:
            where = f"run {seen['dag_run_id']} is {seen['state']}" if seen else "no run"
            raise AssertionError(f"{dag_id}: {where} after {timeout_s:g} s")
        if seen["state"] != "success":
            states = self.task_states(dag_id, seen["dag_run_id"])
            raise AssertionError(f"{dag_id} run {seen['dag_run_id']} {seen['state']}: tasks {states}")
        return seen


def mlflow_runs(url: str, experiment: str) -> list[dict[str, Any]]:
    """The runs of MLflow experiment ``experiment`` on the tracking server at ``url`` (none when the
    experiment does not exist yet)."""
    with httpx.Client(base_url=f"{url}/api/2.0/mlflow", timeout=30) as client:
        r = client.get("/experiments/get-by-name", params={"experiment_name": experiment})
        if r.status_code == 404:
            return []
        r.raise_for_status()
        experiment_id = r.json()["experiment"]["experiment_id"]
        r = client.post("/runs/search", json={"experiment_ids": [experiment_id], "max_results": 1000})
        r.raise_for_status()
        return list(r.json().get("runs", []))
