"""One user's events in NATS JetStream: read them (for an export) and delete them (for an erasure).

The ``OO_EVENTS`` stream keeps events after its consumers acknowledge them (limits retention),
and its dead-letter stream keeps the raw body of every message that could not be processed, so
both hold users' ids. Both streams are scanned message by message up to their last sequence at
the start (``get_msg`` with ``next``: no consumer is created, no consumer's position moves), and
each of the user's messages is deleted by sequence with JetStream's default *secure* delete (the
server overwrites it). Durable consumers skip deleted sequences, so the ``events_ingest`` and
learner consumers neither lose nor re-read anyone else's events. Idempotent: a second erasure
finds nothing.

A message is the user's when its JSON has ``user_id`` equal to the user's id, at the top or in a
JSON document held in one of its string fields (a dead letter's ``raw`` body; a malformed body
is matched by the quoted id, ``"<id>"``, appearing in it).

The in-process bus keeps nothing past its process, so only NATS needs this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from oo.bus import NatsBus

log = logging.getLogger(__name__)


def _owners(value: Any, depth: int = 0) -> set[str]:
    """Every ``user_id`` in a JSON value (and in JSON documents held in its strings, one level)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("user_id"), str):
            found.add(value["user_id"])
        for item in value.values():
            found |= _owners(item, depth)
    elif isinstance(value, list):
        for item in value:
            found |= _owners(item, depth)
    elif isinstance(value, str) and depth == 0 and value[:1] in "{[":
        try:
            found |= _owners(json.loads(value), depth + 1)
        except ValueError:
            pass
    return found


def is_users(data: bytes, user_id: str) -> bool:
    """Whether a message body belongs to ``user_id``.

    Examples
    --------
    >>> is_users(b'{"user_id": "u1", "reaction": "done"}', "u1"), is_users(b'{"user_id": "u10"}', "u1")
    (True, False)
    >>> is_users(b'{"topic": "rewards", "raw": "{\\\\"user_id\\\\": \\\\"u1\\\\"}"}', "u1")
    True
    >>> is_users(b'{"user_id": "u1" garbage', "u1")
    True
    """
    try:
        return user_id in _owners(json.loads(data))
    except ValueError:
        return json.dumps(user_id).encode() in data


async def _scan(js: Any, stream: str) -> AsyncIterator[tuple[int, str, bytes]]:
    """(sequence, subject, body) of each message stored in ``stream`` now."""
    from nats.js.errors import NotFoundError

    info = await js.stream_info(stream)
    seq, last = max(1, info.state.first_seq), info.state.last_seq
    while seq <= last:
        try:
            msg = await js.get_msg(stream, seq, subject=">", next=True)  # the next stored, any subject
        except NotFoundError:
            return
        if msg.seq > last:
            return
        yield msg.seq, msg.subject, msg.data or b""
        seq = msg.seq + 1


def _streams(bus: NatsBus) -> tuple[str, str]:
    return bus.stream, f"{bus.stream}_DLQ"


async def read_user(bus: NatsBus, user_id: str) -> dict[str, list[Any]]:
    """The user's messages per subject (parsed JSON, or text when malformed)."""
    js = await bus._jetstream()
    out: dict[str, list[Any]] = {}
    for stream in _streams(bus):
        async for _, subject, data in _scan(js, stream):
            if is_users(data, user_id):
                try:
                    item: Any = json.loads(data)
                except ValueError:
                    item = data.decode(errors="replace")
                out.setdefault(subject, []).append(item)
    return out


async def erase_user(bus: NatsBus, user_id: str) -> int:
    """Securely delete the user's messages from the event and dead-letter streams; how many."""
    if not user_id:
        raise ValueError("an empty user id would match nothing reliably")
    js = await bus._jetstream()
    deleted = 0
    for stream in _streams(bus):
        mine = [seq async for seq, _, data in _scan(js, stream) if is_users(data, user_id)]
        for seq in mine:
            await js.delete_msg(stream, seq)
        deleted += len(mine)
    log.info("bus: %d messages erased", deleted)
    return deleted
