"""A typed HTTP client of the serving API (rank, reward, activate, and the privacy endpoints).

The deployables are independent: the app API does not import serving, it calls it over HTTP
with the bodies of :mod:`data_contracts.serving`. How those bodies travel on the wire lives in
one constant, :data:`WIRE`: each endpoint's path and the name the body is wrapped under
(BentoML 1.4 wraps a single pydantic parameter under its parameter name, ``{"request": {...}}``;
a service declared with ``input_spec`` takes the model itself, which is ``wrap=None``).

Failures are split in two so that callers can decide: :class:`ServingUnavailable` (connection
refused, timeout, 5xx: retry later) and :class:`ServingRefused` (4xx: the request is wrong and
retrying it will not help).

While serving is down, a :class:`Breaker` makes calls fail at once instead of each waiting out
its timeout: a caller's worker thread is not parked for seconds per request, so a burst of tip
requests during a serving restart cannot exhaust the app's threads and database connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from data_contracts.serving import (
    ActivateRequest,
    ForgetResponse,
    RankRequest,
    RankResponse,
    RewardRequest,
    RewardResponse,
    UserRequest,
    UserStateResponse,
)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    """Where an endpoint lives and how its body is wrapped (``None``: sent as is)."""

    path: str
    wrap: str | None = None


WIRE: dict[str, Endpoint] = {
    "rank": Endpoint("/rank"),
    "reward": Endpoint("/reward"),
    "activate": Endpoint("/activate"),
    "user_state": Endpoint("/user_state"),
    "forget": Endpoint("/forget"),
}
"""The serving API on the wire: the one place to change when the service's signature changes."""


class ServingError(Exception):
    """A call to serving did not succeed."""


class ServingUnavailable(ServingError, ConnectionError):
    """Serving could not be reached, timed out or failed (5xx): worth retrying later."""


class ServingRefused(ServingError, ValueError):
    """Serving refused the request (4xx): retrying the same request will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def wire_body(endpoint: str, body: BaseModel) -> dict[str, Any]:
    """The JSON body of ``endpoint`` carrying ``body``.

    Examples
    --------
    >>> wire_body("activate", UserRequest(user_id="u1"))
    {'user_id': 'u1'}
    """
    payload = body.model_dump(mode="json")
    wrap = WIRE[endpoint].wrap
    return {wrap: payload} if wrap else payload


def wire_bytes(endpoint: str, body: BaseModel) -> bytes:
    """:func:`wire_body` encoded, straight from the model (no intermediate dict).

    Examples
    --------
    >>> wire_bytes("activate", UserRequest(user_id="u1"))
    b'{"user_id":"u1"}'
    """
    payload = body.model_dump_json().encode()
    wrap = WIRE[endpoint].wrap
    return b'{"%s":%s}' % (wrap.encode(), payload) if wrap else payload


def unwrap_body(endpoint: str, body: Any) -> Any:
    """The inner body of a request sent as :func:`wire_body` makes it (for stand-in servers)."""
    wrap = WIRE[endpoint].wrap
    if wrap is None:
        return body
    if not isinstance(body, dict) or wrap not in body:
        raise ValueError(f"the body must be an object with a {wrap!r} field")
    return body[wrap]


class Breaker:
    """A circuit breaker: after ``failures`` unavailable answers in a row the circuit opens and
    calls fail at once for ``cooldown_s``; then one trial call at a time goes through (half open)
    until one succeeds, which closes it.

    Hand-written rather than pybreaker's: pybreaker holds its lock for the whole protected call,
    which would let one serving call through at a time across all of the app's threads; here the
    lock covers only the state, never the call.
    """

    def __init__(self, failures: int = 5, cooldown_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and cooldown_s > 0")
        self.failures, self.cooldown_s, self._clock = failures, cooldown_s, clock
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._opened_at: float | None = None
        self._trial = False
        self._trial_at = 0.0
        self._epoch = 0
        self.short_circuited = 0
        """Calls refused at once because the circuit was open (a counter for metrics and tests)."""

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if self._clock() - self._opened_at < self.cooldown_s else "half_open"

    def admit(self) -> bool:
        """Whether a call may go out now (a half-open circuit admits one trial at a time)."""
        return self.enter() is not None

    def enter(self) -> int | None:
        """Admit a call as :meth:`admit` does: the circuit's epoch to record its outcome with, or
        ``None`` when refused. The epoch changes each time the circuit opens."""
        with self._lock:
            if self._opened_at is None:
                return self._epoch
            now = self._clock()
            # a trial whose outcome never came back (its caller was cancelled) is given up after
            # one more cool-down: the circuit must not stay open for good
            trial_lost = self._trial and now - self._trial_at >= self.cooldown_s
            if now - self._opened_at >= self.cooldown_s and (not self._trial or trial_lost):
                self._trial, self._trial_at = True, now
                return self._epoch
            self.short_circuited += 1
            return None

    def record(self, ok: bool, epoch: int | None = None) -> None:
        """The outcome of an admitted call (a refusal, 4xx, counts as ok: serving answered).

        ``epoch``: what :meth:`enter` gave the call. A failure of a call admitted before the
        circuit last opened is ignored: the calls in flight when serving stopped answering fail
        one after the other for a whole timeout, and each would otherwise restart the cool-down,
        holding the circuit open long after serving is back. Any answer closes the circuit.
        """
        with self._lock:
            if ok:
                self._in_a_row, self._opened_at, self._trial = 0, None, False
                return
            if epoch is not None and epoch != self._epoch:
                return
            self._trial = False
            self._in_a_row += 1
            if self._opened_at is not None or self._in_a_row >= self.failures:
                self._opened_at = self._clock()  # (re)open: a failed trial starts a new cool-down
                self._epoch += 1


class ServingClient:
    """Calls serving at ``base_url`` with a pooled, keep-alive ``httpx.Client``.

    ``timeout_s`` bounds connecting, reading and writing of each call; no call retries by
    itself (the outbox relay and the notifier retry with backoff; a tip request fails fast), and
    ``breaker`` fails calls at once while serving is down.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.breaker = breaker or Breaker()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"ServingClient({self.base_url!r})"

    def _call(self, endpoint: str, body: BaseModel, answer: type[M]) -> M:
        epoch = _admit(self.breaker, endpoint)
        try:
            response = self._http.post(WIRE[endpoint].path, json=wire_body(endpoint, body))
        except httpx.HTTPError as exc:  # connect errors, timeouts, protocol errors
            raise _unreachable(self.breaker, endpoint, exc, epoch) from None
        return _answer(self.breaker, endpoint, response.status_code, response.content, answer, epoch)

    def rank(self, request: RankRequest) -> RankResponse:
        """One decision for ``request.user_id``."""
        return self._call("rank", request, RankResponse)

    def reward(self, request: RewardRequest) -> RewardResponse:
        """Report a reaction; the same ``reaction_id`` twice is counted once by serving."""
        return self._call("reward", request, RewardResponse)

    def activate(self, request: ActivateRequest) -> None:
        """Say that the user saw a deferred decision's tip."""
        self._call("activate", request, _Ignored)

    def user_state(self, user_id: str) -> UserStateResponse:
        """What serving holds about ``user_id``."""
        return self._call("user_state", UserRequest(user_id=user_id), UserStateResponse)

    def forget(self, user_id: str) -> ForgetResponse:
        """Remove ``user_id`` from serving's state (decisions, rewards, learner state)."""
        return self._call("forget", UserRequest(user_id=user_id), ForgetResponse)


class AsyncServingClient:
    """The same calls for an event loop: a request that waits for serving holds no worker thread
    (the app's tip route). Shares ``breaker`` with the :class:`ServingClient` it is made beside,
    so both see the one serving's health. Create and close it on the loop that uses it.

    Over aiohttp, not httpx: this is the app's hot path, and aiohttp's client (its HTTP parser
    in C, no anyio layer) costs about a quarter of the CPU of ``httpx.AsyncClient`` per call
    (0.23 against 0.83 ms on the 2-core build machine, a rank against the stand-in). Timeouts
    mean what they mean for :class:`ServingClient`: ``timeout_s`` bounds getting a connection
    (from the pool or a new one) and each read. Idle connections are closed by the client after
    ``keepalive_s``, before serving's own keep-alive timeout (uvicorn's 5 s), so that a request
    is never written to a connection serving is closing."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 2.0,
        breaker: Breaker | None = None,
        keepalive_s: float = 4.0,
        max_connections: int = 64,
    ) -> None:
        import aiohttp

        self.base_url = base_url.rstrip("/")
        self.breaker = breaker or Breaker()
        self.timeout_s, self.max_connections = timeout_s, max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
        self._http = aiohttp.ClientSession(
            self.base_url,
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive_s),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # serving sets none; no per-call cookie work
            raise_for_status=False,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.close()

    def __repr__(self) -> str:
        return f"AsyncServingClient({self.base_url!r})"

    async def _call(self, endpoint: str, body: BaseModel, answer: type[M]) -> M:
        # the app's own limit first: waiting for one of its connections says nothing of serving's
        # health, so it is not recorded with the breaker (it once opened the circuit under load)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ServingUnavailable(
                f"serving {endpoint}: {self.max_connections} calls already in flight for {self.timeout_s:g} s"
            ) from None
        try:
            epoch = _admit(self.breaker, endpoint)
            try:
                async with self._http.post(
                    WIRE[endpoint].path, data=wire_bytes(endpoint, body), headers=JSON
                ) as response:
                    status, content = response.status, await response.read()
            except self._errors as exc:  # connect errors, timeouts, a connection closed mid-answer
                raise _unreachable(self.breaker, endpoint, exc, epoch) from None
        finally:
            self._slots.release()
        return _answer(self.breaker, endpoint, status, content, answer, epoch)

    async def rank(self, request: RankRequest) -> RankResponse:
        """One decision for ``request.user_id``."""
        return await self._call("rank", request, RankResponse)

    async def reward(self, request: RewardRequest) -> RewardResponse:
        """Report a reaction; the same ``reaction_id`` twice is counted once by serving."""
        return await self._call("reward", request, RewardResponse)

    async def activate(self, request: ActivateRequest) -> None:
        """Say that the user saw a deferred decision's tip."""
        await self._call("activate", request, _Ignored)


JSON = {"Content-Type": "application/json"}


def _admit(breaker: Breaker, endpoint: str) -> int:
    epoch = breaker.enter()
    if epoch is None:
        raise ServingUnavailable(f"serving {endpoint}: circuit open (serving failed {breaker.failures} times in a row)")
    return epoch


def _unreachable(breaker: Breaker, endpoint: str, exc: BaseException, epoch: int) -> ServingUnavailable:
    breaker.record(ok=False, epoch=epoch)
    return ServingUnavailable(f"serving {endpoint}: {type(exc).__name__}")


def _answer(breaker: Breaker, endpoint: str, status: int, content: bytes, answer: type[M], epoch: int) -> M:
    """Serving's answer, parsed; its status recorded with the breaker (4xx counts as answered)."""
    breaker.record(ok=status < 500, epoch=epoch)
    if status >= 500:
        raise ServingUnavailable(f"serving {endpoint}: HTTP {status}")
    if status >= 400:
        raise ServingRefused(f"serving {endpoint}: HTTP {status}", status)
    try:
        return answer.model_validate_json(content)
    except ValidationError as exc:
        raise ServingUnavailable(f"serving {endpoint}: malformed answer ({exc.error_count()} errors)") from None


class _Ignored(BaseModel):
    """An answer whose content does not matter (any JSON object)."""

    model_config = {"extra": "allow"}
