"""The platform's real processes on loopback, each on a free port, that a test can kill and restart.

:class:`Stack` starts the FAKE Todoist API (``python -m oo.cli fake-todoist``), the separate
learner (``python -m serving.learner``), serving (``bentoml serve serving.service:TipService``
with ``OO_SERVING__LEARNER=separate``) and the app API with its outbox relay (``uvicorn --factory
app_api.main:create_app``), all on one var dir, as the launcher would. :meth:`Stack.kill` is a
crash: SIGKILL to the process and every descendant (BentoML's worker too), no shutdown hook runs.
Airflow and MLflow are not started: nothing on the request path needs them (serving falls back to
its own policy when MLflow has no ``@champion``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from oo.runtime import tool_homes
from oo.settings import BusSettings, DBSettings, FeastSettings, PathsSettings, RedisSettings, Settings, TodoistSettings

ROOT = Path(__file__).resolve().parents[3]
"""The checkout the processes run from."""


class StackError(RuntimeError):
    """A process did not start or did not become healthy (with the end of its log)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """The venv's executable ``name`` (next to this Python), else ``name`` from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Proc:
    """One child process: started in its own session, output appended to ``log_path``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    healthy: Callable[[], bool]
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        """Start (again): a new process with the same command line."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1} of {self.name} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        """The current process's id, while one was started."""
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        """Whether the current process runs."""
        return self.process is not None and self.process.poll() is None

    def _tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def kill(self) -> None:
        """A crash: SIGKILL to the process, its group and every descendant; reaped."""
        if self.process is None:
            return
        tree = self._tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(tree, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the group and descendants, then SIGKILL after ``timeout_s``."""
        if self.process is None:
            return
        tree = self._tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=timeout_s)
        if alive or self.alive():
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def tail(self, lines: int = 25) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds until healthy; :class:`StackError` with its log's end if it exits or times out."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if self.healthy():
                return time.monotonic() - start
            time.sleep(0.1)
        raise StackError(f"{self.name} not healthy after {timeout_s:g} s:\n{self.tail()}")


def _http_ok(url: str, any_status: bool = False) -> Callable[[], bool]:
    def check() -> bool:
        try:
            response = httpx.get(url, timeout=1.0)
        except httpx.HTTPError:
            return False
        return any_status or response.status_code == 200

    return check


@dataclass
class Stack:
    """The platform on loopback under ``var_dir``. ``env`` adds settings for every process (the
    stores past one machine: ``OO_DB__URL``, ``OO_BUS__NATS_URL``, ``OO_REDIS__URL`` ...)."""

    var_dir: Path
    todoist_users: int = 20
    tasks_per_user: int = 20
    env: dict[str, str] = field(default_factory=dict)
    health_timeout_s: float = 180.0
    seed: int = 0
    todoist_port: int = field(default_factory=free_port)
    serving_port: int = field(default_factory=free_port)
    app_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def todoist_url(self) -> str:
        """The fake Todoist API's base URL."""
        return f"http://127.0.0.1:{self.todoist_port}/api/v1/"

    @property
    def fake_admin_url(self) -> str:
        """The fake's admin endpoints (users, evolve, faults)."""
        return f"http://127.0.0.1:{self.todoist_port}/__fake/"

    @property
    def serving_url(self) -> str:
        """Serving's base URL."""
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def app_url(self) -> str:
        """The app API's base URL."""
        return f"http://127.0.0.1:{self.app_port}"

    def child_env(self) -> dict[str, str]:
        """What every process gets: one var dir, the ports, a quick relay and learner checkpoints."""
        var = self.var_dir.resolve()
        return {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "OO_LOG_FORMAT": "json",
            "OO_PATHS__VAR_DIR": str(var),
            **tool_homes(var),
            "OO_TODOIST__BASE_URL": self.todoist_url,
            "OO_APP__SERVING_URL": self.serving_url,
            "OO_SERVING__LEARNER": "separate",
            # a crashed learner resumes from its checkpoint and replays the log after it
            "OO_SERVING__CHECKPOINT_EVERY_S": "1",
            "OO_SERVING__SNAPSHOT_EVERY_S": "1",
            # the relay retries an outage every few seconds at most, so it drains soon after a restart
            "OO_APP__RELAY_INTERVAL_S": "0.5",
            "OO_APP__RELAY_BACKOFF_INITIAL_S": "0.25",
            "OO_APP__RELAY_BACKOFF_MAX_S": "2",
            **self.env,
        }

    def settings(self) -> Settings:
        """Settings of this stack for code run in the caller's process (syncs, ingest, checks):
        the same var dir and stores; a Todoist client that gives up on a user quickly."""
        env = self.env
        return Settings(
            paths=PathsSettings(var_dir=self.var_dir.resolve()),
            db=DBSettings(url=env.get("OO_DB__URL")),
            todoist=TodoistSettings(
                base_url=self.todoist_url,
                max_retries=2,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
                max_retry_after_s=5.0,
            ),
            bus=BusSettings(
                nats_url=env.get("OO_BUS__NATS_URL"),
                stream=env.get("OO_BUS__STREAM", "OO_EVENTS"),
                subject_prefix=env.get("OO_BUS__SUBJECT_PREFIX", "oo"),
            ),
            redis=RedisSettings(url=env.get("OO_REDIS__URL")),
            feast=FeastSettings(project=env.get("OO_FEAST__PROJECT", "oo")),
        )

    def _build(self) -> None:
        env = self.child_env()
        logs = self.var_dir / "logs" / "e2e"
        snapshot = self.settings().snapshot_dir / "latest.json"
        self.procs = {
            "todoist": Proc(
                "todoist",
                [
                    sys.executable,
                    "-m",
                    "oo.cli",
                    "fake-todoist",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.todoist_port),
                    "--users",
                    str(self.todoist_users),
                    "--tasks",
                    str(self.tasks_per_user),
                    "--seed",
                    str(self.seed),
                ],
                env,
                logs / "todoist.log",
                _http_ok(self.todoist_url + "projects", any_status=True),
            ),  # fmt: skip
            "learner": Proc(
                "learner",
                [sys.executable, "-m", "serving.learner"],
                env,
                logs / "learner.log",
                snapshot.exists,
            ),
            "serving": Proc(
                "serving",
                [
                    tool("bentoml"),
                    "serve",
                    "serving.service:TipService",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.serving_port),
                ],
                env,
                logs / "serving.log",
                _http_ok(self.serving_url + "/readyz"),
            ),  # fmt: skip
            "app-api": Proc(
                "app-api",
                [
                    tool("uvicorn"),
                    "--factory",
                    "app_api.main:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.app_port),
                    "--no-access-log",
                ],
                env,
                logs / "app-api.log",
                _http_ok(self.app_url + "/healthz"),
            ),  # fmt: skip
        }

    def start(self) -> dict[str, float]:
        """Start every process (the learner before serving, so it sees every decision); seconds
        each took to become healthy."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        took: dict[str, float] = {}
        started = time.monotonic()
        self.apply_feature_repo()
        took["feast_apply"] = time.monotonic() - started
        try:
            for name in ("todoist", "learner"):
                self.procs[name].start()
                took[name] = self.procs[name].wait_healthy(self.health_timeout_s)
            for name in ("serving", "app-api"):  # the two slow starters boot side by side
                self.procs[name].start()
            for name in ("serving", "app-api"):
                took[name] = self.procs[name].wait_healthy(self.health_timeout_s)
        except BaseException:
            self.close()
            raise
        return took

    def apply_feature_repo(self) -> None:
        """``feast apply`` of ``feature_repo/`` on this stack's online store (SQLite, or Redis under
        ``OO_REDIS__URL``), so that serving reads features and pushes reaction counters."""
        script = "from oo.runtime import configure; configure(); from oo.feature_store import apply; apply()"
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, **self.child_env()},
            capture_output=True,
            text=True,
            timeout=self.health_timeout_s,
        )
        if done.returncode != 0:
            raise StackError(f"feast apply failed:\n{done.stderr[-2000:]}")

    def kill(self, name: str) -> None:
        """Crash ``name`` (SIGKILL to its whole tree)."""
        self.procs[name].kill()

    def restart(self, name: str) -> None:
        """Start ``name`` again (after :meth:`kill`), without waiting for it."""
        self.procs[name].start()

    def close(self) -> None:
        """Stop every process (the app first, so its relay stops before serving goes)."""
        for name in ("app-api", "serving", "learner", "todoist"):
            if name in self.procs:
                self.procs[name].stop()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
