"""Start a set of services as child processes, wait until each is healthy, show where they run,
stream their logs, and stop every one of them on Ctrl-C or SIGTERM.

This is the machinery behind ``make run`` (:mod:`oo.platform` says *which* services); it knows
nothing of oO. Each child runs in its own session (``setsid``), so a terminal's Ctrl-C reaches
only the launcher, which then stops each child's whole process group: SIGTERM, a bounded wait,
then SIGKILL, and the same for any descendant that left its group (BentoML's worker does).

A second launcher finds the first through its pid file and says so instead of failing on busy
ports; a port held by some other program is named before anything starts.

Why not honcho or supervisord: neither waits on HTTP health before reporting, prints a table of
what runs where, or refuses a second instance; the process handling here is psutil plus the
standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from rich.text import Text

TAIL_LINES = 30
"""Lines of a child's output kept for the report of a failure."""

STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")


@dataclass
class Service:
    """One process to run: how to start it, how to tell it is healthy, how to show it.

    No ``health_url``: healthy once ``port`` accepts connections (or at once without a port).
    ``any_http_status``: any HTTP answer is healthy (a server that wants a token). ``late_notes``
    are computed when the table is printed (a password the service generated at start).
    """

    name: str
    command: list[str]
    url: str = ""
    port: int | None = None
    health_url: str | None = None
    any_http_status: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    built: bool = True
    why_not_built: str = ""
    external: str = ""
    notes: list[str] = field(default_factory=list)
    late_notes: Callable[[], list[str]] | None = None
    after_healthy: list[list[str]] = field(default_factory=list)

    @property
    def to_start(self) -> bool:
        """Whether the launcher starts it (built, and not provided from outside)."""
        return self.built and not self.external


@dataclass
class Running:
    """A started service: its process, its output and its log file."""

    service: Service
    process: subprocess.Popen[bytes]
    log_path: Path
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    healthy: bool = False
    reader: threading.Thread | None = None


class Stop(Exception):
    """Raised by the launcher's waiting loops once a signal asked it to stop."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Launcher:
    """Runs ``services`` until stopped; :meth:`up` returns the process's exit code.

    ``run_dir`` holds the pid file, ``log_dir`` one log file per service. ``seed`` is a command
    run once before anything starts, while ``seed_marker`` does not exist (it is created when the
    command succeeds); ``seed_note`` says what it does.
    """

    def __init__(
        self,
        services: Sequence[Service],
        run_dir: Path,
        log_dir: Path,
        console: Console | None = None,
        health_timeout_s: float = 240.0,
        stop_timeout_s: float = 15.0,
        seed: list[str] | None = None,
        seed_marker: Path | None = None,
        seed_note: str = "",
        seed_env: dict[str, str] | None = None,
        title: str = "services",
    ) -> None:
        self.services = list(services)
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.console = console or wide_console()
        self.health_timeout_s = health_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.seed = seed
        self.seed_marker = seed_marker
        self.seed_note = seed_note
        self.seed_env = {"PYTHONUNBUFFERED": "1", **(seed_env or {})}
        self.title = title
        self.pid_file = run_dir / "launcher.json"
        self.running: list[Running] = []
        self._live = threading.Event()
        self._stop = threading.Event()
        self._print_lock = threading.Lock()

    # -- the one entry point -------------------------------------------------------------------
    def up(self) -> int:
        """Start, wait, report, stream; stop everything on a signal. 0 when stopped by a signal."""
        other = self.running_instance()
        if other is not None:
            self._say_already_running(other)
            return 0
        busy = [s for s in self.services if s.to_start and s.port and port_in_use(_host_of(s), s.port)]
        if busy:
            for s in busy:
                self.console.print(
                    f"[red]port {s.port} is busy[/]: another program (not an oO launcher) listens where "
                    f"{s.name} would run ({s.url}); stop it or move {s.name} to another port."
                )
            return 1
        if not self._claim_pid_file():
            self._say_already_running(self.running_instance() or {})
            return 0
        previous = self._install_signal_handlers()
        try:
            self._seed_if_fresh()
            self._start_all()
            failed = self._wait_healthy()
            if failed:
                self._report_unhealthy(failed)
                return 1
            self._after_healthy()
            self.console.print(self.table())
            self.console.print("[dim]Logs follow, prefixed by service. Ctrl-C stops everything.[/]")
            self._live.set()
            return self._watch()
        except Stop:
            self.console.print("stopping ...")
            return 0
        finally:
            self._live.clear()
            self.stop_all()
            self._restore_signal_handlers(previous)
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    @contextlib.contextmanager
    def started(self) -> Iterator[list[Running]]:
        """Start every service, wait until each is healthy, and stop them all on leaving: for a
        caller that drives the services itself (``oo simulate``), with no pid file, no signal
        handlers and no log streaming (each service's output still goes to its log file).
        Raises ``RuntimeError`` naming the services that were not healthy in time."""
        try:
            self._start_all()
            failed = self._wait_healthy()
            if failed:
                self._report_unhealthy(failed)
                raise RuntimeError("not healthy: " + ", ".join(f"{r.service.name} ({why})" for r, why in failed))
            yield list(self.running)
        finally:
            self.stop_all()

    # -- a second instance ---------------------------------------------------------------------
    def running_instance(self) -> dict[str, Any] | None:
        """What the pid file says of a live launcher, or ``None`` (a stale file is removed)."""
        try:
            info: dict[str, Any] = json.loads(self.pid_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if pid_alive(int(info.get("pid", -1))):
            return info
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return None

    def _claim_pid_file(self) -> bool:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "services": {s.name: s.url for s in self.services if s.to_start},
        }
        try:
            fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another launcher won the race
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        return True

    def _say_already_running(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"[yellow]{self.title} already running[/] (launcher pid {info.get('pid', '?')}, "
            f"since {info.get('started_at', '?')}); nothing started. Stop it with Ctrl-C in its "
            f"terminal or `kill {info.get('pid', '<pid>')}`."
        )
        for name, url in info.get("services", {}).items():
            self.console.print(f"  {name}: {url}")

    # -- signals -------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum: int, frame: FrameType | None) -> None:
            # only note it: the waiting loops see it within half a second and stop in order,
            # so a signal never lands between starting a child and recording it
            self._stop.set()

        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # -- seeding -------------------------------------------------------------------------------
    def _seed_if_fresh(self) -> None:
        if not self.seed or self.seed_marker is None or self.seed_marker.exists():
            return
        self.console.print(f"[bold]First start: seeding[/] {self.seed_note}")
        seeding = self._spawn(Service(name="seed", command=self.seed, env=self.seed_env), live=True)
        code = self._wait_exit(seeding)
        if code != 0:
            raise SystemExit(f"seeding failed (exit {code}); see {seeding.log_path}")
        self.seed_marker.parent.mkdir(parents=True, exist_ok=True)
        self.seed_marker.write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")

    def _wait_exit(self, run: Running) -> int:
        while True:
            code = run.process.poll()
            if code is not None:
                if run.reader is not None:
                    run.reader.join(timeout=5)
                self.running.remove(run)
                return code
            if self._stop.wait(0.2):
                raise Stop("signal")

    # -- starting ------------------------------------------------------------------------------
    def _start_all(self) -> None:
        for service in self.services:
            if self._stop.is_set():
                raise Stop("signal")
            if service.to_start:
                self._spawn(service, live=False)

    def _spawn(self, service: Service, live: bool) -> Running:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{service.name}.log"
        run = self._popen(service, log_path)
        style = STYLES[len(self.running) % len(STYLES)]
        run.reader = threading.Thread(target=self._pump, args=(run, style, live), daemon=True, name=service.name)
        run.reader.start()
        return run

    def _popen(self, service: Service, log_path: Path) -> Running:
        process = subprocess.Popen(
            service.command,
            cwd=service.cwd,
            env={**os.environ, **service.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches only us, we stop the group
        )
        run = Running(service=service, process=process, log_path=log_path)
        self.running.append(run)
        return run

    def _pump(self, run: Running, style: str, always_live: bool) -> None:
        """Copy a child's output to its log file, its tail and (once live) the console."""
        assert run.process.stdout is not None
        width = max(len(s.name) for s in [*self.services, run.service])
        with open(run.log_path, "ab") as log:
            for raw in iter(run.process.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip()
                run.tail.append(line)
                if always_live or self._live.is_set():
                    with self._print_lock:
                        self.console.print(
                            Text.assemble((f"{run.service.name:>{width}} | ", style), line),
                            soft_wrap=True,
                            highlight=False,
                        )

    # -- health --------------------------------------------------------------------------------
    def _wait_healthy(self) -> list[tuple[Running, str]]:
        """Poll every started service until healthy; the ones that are not by the deadline (or
        exited), with why."""
        deadline = time.monotonic() + self.health_timeout_s
        pending = [r for r in self.running if not r.healthy]
        failed: list[tuple[Running, str]] = []
        with httpx.Client(timeout=2.0) as client, self.console.status("waiting for services") as status:
            while pending:
                for run in list(pending):
                    code = run.process.poll()
                    if code is not None:
                        failed.append((run, f"exited with code {code} before it was healthy"))
                        pending.remove(run)
                    elif self._is_healthy(client, run.service):
                        run.healthy = True
                        pending.remove(run)
                        self.console.print(f"[green]healthy[/] {run.service.name} {run.service.url}")
                if not pending:
                    break
                if time.monotonic() > deadline:
                    failed += [(r, f"not healthy after {self.health_timeout_s:g} s") for r in pending]
                    break
                status.update("waiting for " + ", ".join(r.service.name for r in pending))
                if self._stop.wait(0.5):
                    raise Stop("signal")
        return failed

    @staticmethod
    def _is_healthy(client: httpx.Client, service: Service) -> bool:
        if service.health_url is None:
            return service.port is None or port_in_use(_host_of(service), service.port)
        try:
            response = client.get(service.health_url)
        except httpx.HTTPError:
            return False
        return service.any_http_status or response.status_code == 200

    def _report_unhealthy(self, failed: list[tuple[Running, str]]) -> None:
        for run, why in failed:
            self.console.print(f"[red]{run.service.name} failed[/]: {why}; last lines of {run.log_path}:")
            if run.reader is not None and run.process.poll() is not None:
                run.reader.join(timeout=2)
            for line in list(run.tail)[-15:] or ["(no output)"]:
                self.console.print(Text(f"  {run.service.name} | {line}"), highlight=False)
        self.console.print("stopping everything that was started.")

    def _after_healthy(self) -> None:
        for run in self.running:
            for command in run.service.after_healthy:
                result = subprocess.run(
                    command, env={**os.environ, **run.service.env}, capture_output=True, text=True, timeout=120
                )
                if result.returncode != 0:
                    self.console.print(
                        f"[yellow]{run.service.name}: `{' '.join(command)}` failed[/]: {result.stderr.strip()[-300:]}"
                    )

    # -- the report ----------------------------------------------------------------------------
    def table(self) -> Table:
        """What runs where."""
        table = Table(title=f"{self.title}: what runs where")
        table.add_column("service", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("where", overflow="fold")  # a URL is never cut short
        table.add_column("notes", overflow="fold")
        by_name = {r.service.name: r for r in self.running}
        for s in self.services:
            if not s.built:
                state, where = "[yellow]not built[/]", s.why_not_built
            elif s.external:
                state, where = "[blue]external[/]", s.external
            else:
                run = by_name.get(s.name)
                state = f"[green]healthy[/] (pid {run.process.pid})" if run else "[red]not started[/]"
                where = s.url
            notes = [*s.notes, *(s.late_notes() if s.late_notes and s.to_start else [])]
            table.add_row(s.name, state, where, "\n".join(notes))
        return table

    # -- running -------------------------------------------------------------------------------
    def _watch(self) -> int:
        """Until a signal (0) or until a service exits by itself (1: everything is stopped)."""
        while True:
            if self._stop.wait(0.5):
                raise Stop("signal")
            for run in self.running:
                code = run.process.poll()
                if code is not None:
                    if run.reader is not None:
                        run.reader.join(timeout=2)
                    self.console.print(
                        f"[red]{run.service.name} exited with code {code}[/]; stopping everything "
                        f"(its log: {run.log_path})"
                    )
                    return 1

    # -- stopping ------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """SIGTERM every started process group (and stray descendants), wait, then SIGKILL."""
        if not self.running:
            return
        procs = {}
        for run in self.running:
            for proc in _tree(run.process.pid):
                procs[proc.pid] = proc
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, signal.SIGTERM)
        for proc in procs.values():  # descendants that left the group
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(list(procs.values()), timeout=self.stop_timeout_s)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                self.console.print(f"[yellow]killing[/] pid {proc.pid} ({proc.name()}): still running")
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        for run in self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=5)
            if run.reader is not None:
                run.reader.join(timeout=2)
        self.running.clear()


def wide_console() -> Console:
    """A console as wide as the terminal, or 160 columns when the output is not one (a log file
    or a pipe would otherwise get 80, and tables of URLs would wrap)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _tree(pid: int) -> Iterator[psutil.Process]:
    """``pid`` and all its descendants (those alive now)."""
    try:
        root = psutil.Process(pid)
        yield root
        yield from root.children(recursive=True)
    except psutil.Error:
        return


def _host_of(service: Service) -> str:
    if not service.url:
        return "127.0.0.1"
    return httpx.URL(service.url).host or "127.0.0.1"
