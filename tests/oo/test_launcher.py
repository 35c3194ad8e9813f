"""The launcher behind `make run`, on stand-in services (tiny HTTP servers): it waits until each is
healthy, prints one table, streams their logs with a prefix, stops every child on Ctrl-C or
SIGTERM, refuses a second instance and a busy port, and reports a service that never becomes
healthy with the last lines it printed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "launcher_standins"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Platform:
    tmp: Path
    name: str = "p"
    services: list[dict[str, object]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.tmp / f"{self.name}.out"

    def standin(self, name: str, mode: str = "ok", port: int | None = None) -> int:
        port = port or free_port()
        self.services.append(
            {
                "name": name,
                "command": [sys.executable, str(HERE / "standin.py"), name, str(port), mode, str(self.pidfile(name))],
                "url": f"http://127.0.0.1:{port}",
                "port": port,
                "health_url": f"http://127.0.0.1:{port}/healthz",
            }
        )
        return port

    def pidfile(self, name: str) -> Path:
        return self.tmp / f"{name}.pid"

    def pid(self, name: str) -> int:
        return int(self.pidfile(name).read_text())

    def start(self, **options: object) -> Platform:
        spec = {
            "services": self.services,
            "run_dir": str(self.tmp / "run"),
            "log_dir": str(self.tmp / "logs"),
            **options,
        }
        spec_path = self.tmp / f"{self.name}.json"
        spec_path.write_text(json.dumps(spec))
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "run_launcher.py"), str(spec_path)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        return self

    def text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def wait_text(self, needle: str, timeout: float = 60.0) -> None:
        try:
            wait_for(lambda: needle in self.text(), repr(needle), timeout)
        except AssertionError:
            raise AssertionError(f"{needle!r} not in the launcher's output:\n{self.text()}") from None

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[Callable[[str], Platform]]:
    made: list[Platform] = []

    def make(name: str) -> Platform:
        made.append(Platform(tmp_path, name))
        return made[-1]

    yield make
    for p in made:  # never leave a launcher (and so its children) behind
        if p.process is not None and p.process.poll() is None:
            p.process.terminate()
            p.process.wait(timeout=30)


READY = "Ctrl-C stops everything"


def test_waits_until_healthy_prints_one_table_streams_logs_and_ctrl_c_stops_every_child(platforms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = platforms("p")
    port_a = p.standin("alpha")
    port_b = p.standin("beta", mode="slow")
    p.services.append({"name": "gamma", "command": ["false"], "built": False, "why_not_built": "gamma/ is missing"})
    seeded = tmp_path / "seeded.txt"
    seed = [sys.executable, "-c", f"print('seeding now'); open({str(seeded)!r}, 'w').write('x')"]
    p.start(seed=seed, seed_marker=str(tmp_path / "marker"))
    p.wait_text(READY)
    text = p.text()
    assert seeded.exists() and "seeding now" in text and "SIMULATED history (test)" in text
    assert text.count("what runs where") == 1
    table = text[text.index("what runs where") :]
    assert f"http://127.0.0.1:{port_a}" in table and f"http://127.0.0.1:{port_b}" in table
    assert "gamma" in table and "not built" in table and "gamma/ is missing" in table
    assert table.count("healthy (pid") == 2
    pids = [p.pid("alpha"), p.pid("beta")]
    assert all(alive(pid) for pid in pids)

    httpx.get(f"http://127.0.0.1:{port_a}/hello-from-the-test", timeout=5)
    p.wait_text("alpha | alpha: request /hello-from-the-test")
    assert (tmp_path / "logs" / "alpha.log").read_text().count("request /hello-from-the-test") == 1

    p.signal(signal.SIGINT)
    assert p.wait_exit() == 0
    assert not any(alive(pid) for pid in pids)
    assert not (tmp_path / "run" / "launcher.json").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port_a}/healthz", timeout=2)


def test_a_second_launcher_says_so_and_starts_nothing_and_sigterm_stops_the_first(platforms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = platforms("first")
    port = first.standin("alpha")
    first.start()
    first.wait_text(READY)

    second = platforms("second")
    second.standin("alpha", port=port)  # the same port: it must not even try
    second.standin("delta")
    assert second.start().wait_exit() == 0
    said = second.text()
    assert "already running" in said and f"launcher pid {first.process.pid}" in said  # type: ignore[union-attr]
    assert f"alpha: http://127.0.0.1:{port}" in said
    assert not first.pidfile("delta").exists()

    pid = first.pid("alpha")
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert not alive(pid)


def test_a_service_that_never_becomes_healthy_is_reported_with_its_log_tail(platforms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = platforms("p")
    p.standin("alpha")
    p.standin("broken", mode="never")
    marker = tmp_path / "marker"
    marker.write_text("seeded earlier")
    seeded = tmp_path / "seeded-again.txt"
    p.start(
        health_timeout_s=4,
        seed=[sys.executable, "-c", f"open({str(seeded)!r}, 'w')"],
        seed_marker=str(marker),
    )
    assert p.wait_exit() == 1
    text = p.text()
    assert "broken failed" in text and "not healthy after 4 s" in text
    assert "broken | broken: cannot open config /etc/standin.conf" in text
    assert "what runs where" not in text
    assert not seeded.exists()  # seeding happens on the first start only
    assert not alive(p.pid("alpha")) and not alive(p.pid("broken"))


def test_a_service_that_exits_while_starting_is_reported_at_once(platforms) -> None:  # type: ignore[no-untyped-def]
    p = platforms("p")
    p.standin("alpha", mode="slow")
    p.standin("crash", mode="exit")
    p.start(health_timeout_s=120)
    assert p.wait_exit(timeout=60) == 1
    text = p.text()
    assert "crash failed" in text and "exited with code 3 before it was healthy" in text
    assert "crash: boom, cannot start" in text
    assert not alive(p.pid("alpha"))


def test_a_port_held_by_another_program_is_named_before_anything_starts(platforms) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        p = platforms("p")
        p.standin("alpha")
        p.standin("beta", port=port)
        assert p.start().wait_exit() == 1
    text = p.text()
    assert f"port {port} is busy" in text and "beta" in text
    assert not p.pidfile("alpha").exists()


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(platforms) -> None:  # type: ignore[no-untyped-def]
    p = platforms("p")
    p.standin("stubborn", mode="stubborn")
    p.start(stop_timeout_s=2)
    p.wait_text(READY)
    pid = p.pid("stubborn")
    p.signal(signal.SIGINT)
    assert p.wait_exit() == 0
    assert "killing" in p.text() and "stubborn: ignoring SIGTERM" in (p.tmp / "logs" / "stubborn.log").read_text()
    assert not alive(pid)


def test_ctrl_c_while_seeding_stops_the_seeding_starts_nothing_and_seeds_again_next_time(platforms, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = platforms("p")
    p.standin("alpha")
    pidfile = tmp_path / "seed.pid"
    seed = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); print('seeding slowly', flush=True); "
        "[time.sleep(0.1) for _ in range(600)]",
    ]
    marker = tmp_path / "marker"
    p.start(seed=seed, seed_marker=str(marker))
    p.wait_text("seeding slowly")
    p.signal(signal.SIGINT)
    assert p.wait_exit() == 0
    assert not alive(int(pidfile.read_text()))
    assert not marker.exists()  # not seeded: the next start seeds again
    assert not p.pidfile("alpha").exists()  # nothing was started
