"""The serving client fails fast while serving is down (its circuit breaker), and recovers."""

from __future__ import annotations

import threading

import httpx
import pytest

from data_contracts.serving import RankRequest
from oo.serving_client import Breaker, ServingClient, ServingRefused, ServingUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_admits_one_trial_after_the_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown_s=2.0, clock=clock)
    for _ in range(2):
        assert breaker.admit()
        breaker.record(ok=False)
    assert breaker.state == "closed"
    assert breaker.admit()
    breaker.record(ok=False)
    assert breaker.state == "open" and not breaker.admit()
    clock.now += 2.0
    assert breaker.state == "half_open"
    assert breaker.admit() and not breaker.admit()  # one trial at a time
    breaker.record(ok=False)  # the trial failed: a new cool-down
    assert breaker.state == "open" and not breaker.admit()
    clock.now += 2.0
    assert breaker.admit()
    breaker.record(ok=True)
    assert breaker.state == "closed" and breaker.admit() and breaker.admit()
    assert breaker.short_circuited == 3


def test_a_trial_whose_outcome_never_comes_back_does_not_keep_the_circuit_open() -> None:
    """A half-open trial's caller was cancelled (no outcome recorded): after one more cool-down
    another trial goes out, and its success closes the circuit."""
    clock = Clock()
    breaker = Breaker(failures=1, cooldown_s=2.0, clock=clock)
    assert breaker.admit()
    breaker.record(ok=False)
    clock.now += 2.0
    assert breaker.admit()  # the trial, never recorded
    clock.now += 1.0
    assert not breaker.admit()
    clock.now += 1.0
    assert breaker.admit()
    breaker.record(ok=True)
    assert breaker.state == "closed"


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    breaker = Breaker(failures=2, cooldown_s=1.0, clock=Clock())
    for ok in (False, True, False, True, False):
        assert breaker.admit()
        breaker.record(ok=ok)
    assert breaker.state == "closed"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failures"):
        Breaker(failures=0)
    with pytest.raises(ValueError, match="cooldown"):
        Breaker(cooldown_s=0)


def test_a_client_stops_calling_a_failing_serving_until_the_cool_down_then_recovers() -> None:
    clock = Clock()
    calls: list[int] = []
    healthy = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if not healthy.is_set():
            return httpx.Response(503, json={"error": "starting"})
        return httpx.Response(400, json={"error": "refused, but answered"})

    client = ServingClient(
        "http://serving.test", transport=httpx.MockTransport(handler), breaker=Breaker(3, 5.0, clock)
    )
    request = RankRequest(user_id="u1")
    for _ in range(3):
        with pytest.raises(ServingUnavailable, match="HTTP 503"):
            client.rank(request)
    for _ in range(10):  # open: refused at once, serving not called
        with pytest.raises(ServingUnavailable, match="circuit open"):
            client.rank(request)
    assert len(calls) == 3
    healthy.set()
    clock.now += 5.0
    with pytest.raises(ServingRefused):  # the trial reaches serving; a 4xx is an answer
        client.rank(request)
    assert client.breaker.state == "closed" and len(calls) == 4
    client.close()


def test_failures_of_calls_admitted_before_the_circuit_opened_do_not_hold_it_open() -> None:
    """Calls in flight when serving stops answering fail one after the other for a whole timeout;
    they do not restart the cool-down, so the first trial goes out one cool-down after the opening.
    The trial's own failure does restart it."""
    clock = Clock()
    breaker = Breaker(failures=2, cooldown_s=2.0, clock=clock)
    in_flight = [breaker.enter() for _ in range(6)]
    for epoch in in_flight[:2]:
        breaker.record(ok=False, epoch=epoch)
    assert breaker.state == "open"
    clock.now += 1.5
    for epoch in in_flight[2:]:  # their timeouts, after the opening
        breaker.record(ok=False, epoch=epoch)
    clock.now += 0.5
    assert breaker.state == "half_open"
    trial = breaker.enter()
    assert trial is not None and breaker.enter() is None
    breaker.record(ok=False, epoch=trial)
    assert breaker.state == "open"
    clock.now += 2.0
    late = breaker.enter()
    breaker.record(ok=False, epoch=in_flight[0])  # a stale failure does not take the trial's turn
    assert breaker.enter() is None
    breaker.record(ok=True, epoch=late)
    assert breaker.state == "closed"


def test_the_apps_own_connection_limit_fails_fast_without_counting_against_serving() -> None:
    """Every connection of the app's async client busy for ``timeout_s``: the next call fails
    (503 to the user) without reaching serving and without moving the breaker."""
    import asyncio

    from oo.serving_client import AsyncServingClient

    async def scenario() -> None:
        client = AsyncServingClient("http://127.0.0.1:9", timeout_s=0.05, max_connections=2, breaker=Breaker(1, 5.0))
        try:
            for _ in range(2):
                await client._slots.acquire()  # two calls in flight
            for _ in range(3):
                with pytest.raises(ServingUnavailable, match="2 calls already in flight"):
                    await client.rank(RankRequest(user_id="u1"))
            assert client.breaker.state == "closed"
            client._slots.release()
            with pytest.raises(ServingUnavailable, match="ClientConnectorError|ClientOSError"):
                await client.rank(RankRequest(user_id="u1"))  # a slot: the call goes out (nothing listens)
            assert client.breaker.state == "open"
        finally:
            await client.aclose()

    asyncio.run(scenario())
