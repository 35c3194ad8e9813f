"""One user's events in the append-only event log: read them (for an export) and redact them (for
an erasure), without moving any other byte.

Readers of the log keep byte-offset watermarks: the ``events_ingest`` DAG in its ``.offset``
files, serving's learner in its checkpoint. Rewriting a file without the user's lines would
shift every later offset (a reader would skip or re-read other users' events), and rotating
segments would need every reader to learn a new addressing. So an erasure **redacts in place**:
each of the user's lines is overwritten with as many spaces, its newline kept. Every offset stays
valid; :meth:`oo.events_ingest.EventLog.read` skips blank lines, so a reader past the line has
nothing to undo and a reader before it never sees it.

Concurrency: the redaction holds the same exclusive ``flock`` the appenders take (so no line is
half-appended while it scans), overwrites with ``pwrite`` and fsyncs. Readers take no lock; a
per-topic *redaction generation* (odd while a redaction runs) makes the read a seqlock: a read
that overlapped a redaction is done again under a shared lock, so no reader sees a torn line
(:meth:`EventLog.read`). A crash mid-redaction leaves the generation odd: readers then take
the shared lock every time, correctly, until the erasure is run again (it is idempotent).

Lines are the user's when their JSON ``user_id`` is the user's (every topic's contract carries
it); a line that is not valid JSON but contains the id is redacted too (better a lost malformed
line than a kept identifier). Redact the log *before* deleting the user's lake rows: a line not yet
ingested would otherwise reach the lake after its deletion. One window remains: an ingest batch
that read a line just before its redaction and writes the lake just after the lake's erasure;
running the (idempotent) erasure again closes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from oo.events_ingest import TOPICS, EventLog

log = logging.getLogger(__name__)


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) of each complete line from ``handle``'s position 0,
    streamed (a log may be larger than memory)."""
    handle.seek(0)
    offset = 0
    for line in handle:
        if not line.endswith(b"\n"):  # a line still being written: not an event yet
            return
        yield offset, line[:-1]
        offset += len(line)


def _owner(line: bytes, user_id: str, needle: bytes) -> tuple[bool, Any]:
    """Whether ``line`` belongs to ``user_id``, and its parsed record (``None`` when malformed)."""
    if not line.strip():
        return False, None
    try:
        record = json.loads(line)
    except ValueError:
        return needle in line, None
    if not isinstance(record, dict):
        return needle in line, None
    return record.get("user_id") == user_id, record


def read_user(events: EventLog, user_id: str) -> dict[str, list[Any]]:
    """The user's events per topic (malformed lines that mention the user, as text)."""
    needle = user_id.encode()
    out: dict[str, list[Any]] = {}
    for topic in TOPICS:
        path = events.path(topic)
        if not path.exists():
            continue
        rows = []
        with open(path, "rb") as handle:
            for _, line in _lines(handle):
                mine, record = _owner(line, user_id, needle)
                if mine:
                    rows.append(record if record is not None else line.decode(errors="replace"))
        if rows:
            out[topic] = rows
    return out


def redact_user(events: EventLog, user_id: str) -> dict[str, int]:
    """Overwrite each of the user's lines with spaces, in place; the lines redacted per topic."""
    if not user_id:
        raise ValueError("an empty user id would match nothing reliably")
    needle = user_id.encode()
    counts: dict[str, int] = {}
    for topic in TOPICS:
        path = events.path(topic)
        if not path.exists():
            continue
        with open(path, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                counts[topic] = _redact_locked(events, topic, handle, user_id, needle)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    log.info("event log: redacted %s", counts)
    return counts


def _redact_locked(events: EventLog, topic: str, handle: BinaryIO, user_id: str, needle: bytes) -> int:
    hits = [(offset, len(line)) for offset, line in _lines(handle) if _owner(line, user_id, needle)[0]]
    generation = events.generation(topic)
    if not hits and generation % 2 == 0:
        return 0
    started = generation + 1 if generation % 2 == 0 else generation  # odd: a redaction runs
    events.set_generation(topic, started)
    fd = handle.fileno()
    for offset, length in hits:
        os.pwrite(fd, b" " * length, offset)
    os.fsync(fd)
    events.set_generation(topic, started + 1)
    return len(hits)
