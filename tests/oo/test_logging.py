"""Structured logs: one JSON object per line with the same keys from structlog and from the
standard library, the decision id bound where a decision is handled, a console for people."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from oo.logging import HANDLER_NAME, bound_decision, configure_logging, get_logger, wants_json


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def own_root() -> Iterator[None]:
    """Give configure_logging an empty root logger (pytest's capture handlers set aside)."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.handlers = []
    yield
    configure_logging("INFO", "json", io.StringIO())  # structlog back to our processors
    root.handlers = saved
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_and_stdlib_lines_are_json_with_the_same_keys(own_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out, force=True)
    get_logger("oo.test").info("ranked", candidates=3)
    logging.getLogger("some.library").warning("retrying %s in %d s", "redis", 2)
    logging.getLogger("some.library").debug("below the level")
    first, second = lines(out)
    assert first["event"] == "ranked" and first["candidates"] == 3 and first["level"] == "info"
    assert first["logger"] == "oo.test"
    assert second["event"] == "retrying redis in 2 s" and second["level"] == "warning"
    assert second["logger"] == "some.library"
    assert {"timestamp", "level", "logger", "event"} <= first.keys() & second.keys()
    assert str(first["timestamp"]).endswith("Z")


def test_a_bound_decision_id_is_on_every_line_inside_and_only_there(own_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out, force=True)
    decision = uuid.uuid4()
    with bound_decision(decision, user_id="u1"):
        get_logger("oo.serving").info("decided")
        logging.getLogger("oo.bus").info("reward joined")
    logging.getLogger("oo.bus").info("after")
    inside_a, inside_b, after = lines(out)
    assert inside_a["decision_id"] == inside_b["decision_id"] == str(decision)
    assert inside_a["user_id"] == "u1"
    assert "decision_id" not in after


def test_exceptions_are_rendered_into_the_json_line(own_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out, force=True)
    try:
        raise ValueError("bad candidate")
    except ValueError:
        logging.getLogger("oo.x").exception("failed")
    (line,) = lines(out)
    assert "ValueError: bad candidate" in str(line["exception"])


def test_auto_is_console_on_a_terminal_and_json_elsewhere(own_root: None) -> None:
    assert wants_json("auto", io.StringIO()) and not wants_json("auto", Tty())
    assert not wants_json("console", io.StringIO()) and wants_json("json", Tty())
    out = Tty()
    configure_logging("INFO", "auto", out, force=True)
    logging.getLogger("oo.x").info("hello people")
    text = out.getvalue()
    assert "hello people" in text and not text.lstrip().startswith("{")


def test_a_second_call_replaces_the_handler_instead_of_doubling_lines(own_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", first, force=True)
    configure_logging("INFO", "json", second, force=True)
    logging.getLogger("oo.x").info("once")
    assert first.getvalue() == "" and len(lines(second)) == 1
    assert [h.get_name() for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1


def test_a_root_logger_owned_by_someone_else_is_left_alone(own_root: None) -> None:
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    before = list(root.handlers)
    configure_logging("INFO", "json", io.StringIO())
    assert root.handlers == before and HANDLER_NAME not in [h.get_name() for h in root.handlers]


def test_the_bus_binds_the_decision_id_while_its_handler_runs(own_root: None) -> None:
    import asyncio
    from datetime import UTC, datetime

    from data_contracts import RewardEvent
    from oo.bus import InProcessBus

    out = io.StringIO()
    configure_logging("INFO", "json", out, force=True)
    event = RewardEvent(
        event_id=uuid.uuid4(),
        decision_id=uuid.uuid4(),
        user_id="u1",
        reaction="done",
        reward=1.0,
        occurred_at=datetime.now(UTC),
    )

    async def handler(record: RewardEvent) -> None:
        logging.getLogger("oo.learner").info("learned")

    async def go() -> None:
        bus = InProcessBus()
        await bus.publish("rewards", event)
        await bus.consume("rewards", RewardEvent, handler, consumer="t", max_messages=1)

    asyncio.run(go())
    learned = [line for line in lines(out) if line["event"] == "learned"]
    assert learned and learned[0]["decision_id"] == str(event.decision_id)
