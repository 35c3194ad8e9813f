"""A fake Todoist API v1 that speaks the real protocol, for tests, the demo and the benchmark.

Start it with ``make fake-todoist`` (or ``python -m oo.cli fake-todoist``) and point the client
at it with ``OO_TODOIST__BASE_URL=http://127.0.0.1:8765/api/v1/``.

What it serves (paths, parameters, shapes and errors as documented for API v1):

- ``POST /api/v1/sync``: form-encoded (JSON bodies are accepted too), ``sync_token`` (``*`` for a
  full sync) and ``resource_types`` (a JSON array; ``all`` and ``-`` exclusions work). A full sync
  returns active data only; an incremental sync returns every object changed since the token,
  deleted ones as ``is_deleted: true``, completed ones as ``checked: true``. Tokens are opaque,
  per user, and refused (400) when forged or expired (:meth:`FakeTodoist.expire_tokens`).
- ``GET /api/v1/tasks``: active tasks, cursor pagination (``limit`` <= 200, ``next_cursor``).
- ``GET /api/v1/tasks/completed/by_completion_date``: ``since``/``until`` (a window of at most
  3 months), ``{"items": [...], "next_cursor"}``; a recurring task appears once per completion.
- ``GET /api/v1/projects`` and ``GET /api/v1/projects/archived``: cursor pagination.
- Errors are JSON: ``{"error", "error_code", "error_extra", "error_tag", "http_code"}``.

Faults are injected per user (:meth:`FakeTodoist.inject`): 429 with ``Retry-After`` (header,
body or both), 5xx, slow answers, and revoked tokens (401, or 403 + ``AUTH_INVALID_TOKEN`` as
seen on Sync v9). Users are synthetic and seeded: the same seed gives the same users, tokens,
ids and tasks, and :meth:`FakeTodoist.evolve` changes them over time (added, edited, completed,
recurring completions, uncompleted, deleted, projects archived) from the same seed.

Admin endpoints under ``/__fake/`` (not part of the API) list the users and their tokens,
evolve the world and inject faults, so a server in another process can be driven too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

WORDS = (
    "call email write read plan buy book clean fix review pay water walk cook sort file send "
    "draft check prepare renew return tidy update visit order practise stretch"
).split()
OBJECTS = (
    "mum dentist report taxes garden invoice car groceries slides budget plants bike kitchen "
    "passport library newsletter doctor flat insurance guitar"
).split()
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_COMPLETED_WINDOW = timedelta(days=92)
"""The longest ``since``..``until`` window ``by_completion_date`` accepts (3 months)."""


def _iso(t: datetime, micro: bool = False) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Clock:
    """The fake's notion of now: real time, or a manual clock tests move forward."""

    def __init__(self, start: datetime | None = None) -> None:
        self._t = start

    def now(self) -> datetime:
        return self._t if self._t is not None else datetime.now(UTC)

    def advance(self, **delta: float) -> datetime:
        """Move a manual clock forward (``advance(hours=1)``)."""
        if self._t is None:
            raise RuntimeError("a real-time clock cannot be advanced")
        self._t = self._t + timedelta(**delta)
        return self._t


@dataclass
class Fault:
    """A fault injected into one user's next ``times`` API requests (``times=-1``: every one).

    ``garbage`` answers 200 with a truncated JSON body.
    """

    kind: Literal["429", "5xx", "slow", "revoked", "garbage"]
    times: int = 1
    retry_after: float = 1.0
    retry_after_in: Literal["header", "body", "both"] = "both"
    status: int = 503
    delay_s: float = 0.5
    revoked_status: Literal[401, 403] = 403


@dataclass
class FakeUser:
    """One synthetic Todoist account."""

    todoist_id: str
    token: str
    full_name: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    item_rev: dict[str, int] = field(default_factory=dict)
    project_rev: dict[str, int] = field(default_factory=dict)
    completions: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 1
    min_token_seq: int = 0
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0
    junk_items: list[Any] = field(default_factory=list)
    """Raw values appended to every sync's ``items`` (bad input for tests: any JSON value)."""
    sync_patch: dict[str, Any] = field(default_factory=dict)
    """Keys set on every ``/sync`` answer (a wrong shape for tests, e.g. ``{"items": 5}``)."""
    sync_drop: set[str] = field(default_factory=set)
    """Keys removed from every ``/sync`` answer (e.g. ``{"items"}``)."""


class ApiError(Exception):
    """An API error answered in the documented JSON shape."""

    def __init__(self, status: int, error: str, code: int, tag: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.code, self.tag, self.extra = status, error, code, tag, extra or {}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {
            "error": self.error,
            "error_code": self.code,
            "error_extra": {"event_id": uuid.uuid4().hex, **self.extra},
            "error_tag": self.tag,
            "http_code": self.status,
        }
        return JSONResponse(body, status_code=self.status, headers=headers)


def _invalid(argument: str, message: str = "Invalid argument value") -> ApiError:
    return ApiError(400, message, 20, "INVALID_ARGUMENT_VALUE", {"argument": argument})


class FakeTodoist:
    """The fake's world: seeded users whose tasks change, and the faults to inject.

    Examples
    --------
    >>> world = FakeTodoist.seeded(seed=7, users=2, tasks_per_user=3)
    >>> [len(u.items) for u in world.users]
    [3, 3]
    >>> FakeTodoist.seeded(seed=7, users=2, tasks_per_user=3).users[0].token == world.users[0].token
    True
    """

    def __init__(
        self,
        seed: int = 0,
        clock: Clock | None = None,
        secret: str = "fake-todoist",
        client_id: str = "dev-client-id",
        client_secret: str = "dev-client-secret",
    ) -> None:
        self.seed = seed
        self.client_id = client_id
        self.client_secret = client_secret
        self._codes: dict[str, FakeUser] = {}
        self.revoked: list[str] = []
        self.clock = clock or Clock()
        self._secret = secret
        self._rng = random.Random(seed)
        self._by_token: dict[str, FakeUser] = {}
        self._by_id: dict[str, FakeUser] = {}
        self.lock = threading.RLock()
        self.steps = 0

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def seeded(
        cls,
        seed: int = 0,
        users: int = 3,
        tasks_per_user: int = 20,
        clock: Clock | None = None,
        projects_per_user: int = 3,
    ) -> FakeTodoist:
        """A world of ``users`` synthetic users with ``tasks_per_user`` active tasks each."""
        world = cls(seed=seed, clock=clock)
        for _ in range(users):
            user = world.add_user()
            inbox = world.add_project(user, "Inbox", inbox=True)
            projects = [inbox] + [
                world.add_project(user, world._rng.choice(["Home", "Work", "Errands", "Health", "Study"]))
                for _ in range(projects_per_user - 1)
            ]
            for _ in range(tasks_per_user):
                world.add_task(user, project_id=world._rng.choice(projects)["id"])
        return world

    def _id(self, rng: random.Random | None = None) -> str:
        r = rng or self._rng
        return "".join(r.choice(_ALPHABET) for _ in range(16))

    @property
    def users(self) -> list[FakeUser]:
        """Every user, in creation order."""
        return list(self._by_id.values())

    def user(self, todoist_id: str) -> FakeUser:
        """The user with Todoist id ``todoist_id``."""
        return self._by_id[todoist_id]

    def add_user(self, full_name: str | None = None) -> FakeUser:
        """A new user with a fresh token (``fake-<hex>``, never a real Todoist token)."""
        with self.lock:
            uid = str(self._rng.randrange(10**7, 10**8))
            token = "fake-" + "".join(self._rng.choice("0123456789abcdef") for _ in range(40))
            user = FakeUser(todoist_id=uid, token=token, full_name=full_name or f"Synthetic User {uid}")
            self._by_id[uid] = user
            self._by_token[token] = user
            return user

    def _touch_item(self, user: FakeUser, item: dict[str, Any]) -> None:
        user.seq += 1
        user.item_rev[item["id"]] = user.seq
        item["updated_at"] = _iso(self.clock.now())

    def _touch_project(self, user: FakeUser, project: dict[str, Any]) -> None:
        user.seq += 1
        user.project_rev[project["id"]] = user.seq
        project["updated_at"] = _iso(self.clock.now())

    def add_project(self, user: FakeUser, name: str, inbox: bool = False) -> dict[str, Any]:
        """A new project of ``user``."""
        with self.lock:
            now = _iso(self.clock.now())
            project = {
                "id": self._id(),
                "name": name,
                "color": self._rng.choice(["charcoal", "blue", "red", "green", "grape"]),
                "parent_id": None,
                "child_order": len(user.projects),
                "is_archived": False,
                "is_deleted": False,
                "is_favorite": False,
                "is_frozen": False,
                "inbox_project": inbox,
                "view_style": "list",
                "is_collapsed": False,
                "shared": False,
                "can_assign_tasks": False,
                "description": "",
                "created_at": now,
                "updated_at": now,
                "workspace_id": None,
                "folder_id": None,
            }
            user.projects[str(project["id"])] = project
            self._touch_project(user, project)
            return project

    def add_task(self, user: FakeUser, project_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """A new active task of ``user`` (random content unless given)."""
        with self.lock:
            r = self._rng
            now = self.clock.now()
            if project_id is None:
                project_id = next(iter(user.projects))
            due: dict[str, Any] | None = None
            roll = r.random()
            if roll < 0.25:
                due = {
                    "date": (now.date() + timedelta(days=r.randrange(-2, 10))).isoformat(),
                    "timezone": None,
                    "string": "some day",
                    "lang": "en",
                    "is_recurring": False,
                }
            elif roll < 0.4:
                due = {
                    "date": (now.date() + timedelta(days=1)).isoformat(),
                    "timezone": None,
                    "string": "every day",
                    "lang": "en",
                    "is_recurring": True,
                }
            elif roll < 0.5:
                at = (now + timedelta(hours=r.randrange(1, 72))).replace(minute=0, second=0, microsecond=0)
                due = {
                    "date": _iso(at),
                    "timezone": "Europe/Paris",
                    "string": "at",
                    "lang": "en",
                    "is_recurring": False,
                }
            item: dict[str, Any] = {
                "id": self._id(),
                "user_id": user.todoist_id,
                "project_id": project_id,
                "section_id": None,
                "parent_id": None,
                "content": f"{r.choice(WORDS).capitalize()} {r.choice(OBJECTS)}",
                "description": r.choice(["", "", "see notes", "before noon"]),
                "labels": r.sample(["home", "work", "quick", "errand", "phone"], k=r.randrange(0, 3)),
                "priority": r.choice([1, 1, 1, 2, 3, 4]),
                "due": due,
                "deadline": {"date": (now.date() + timedelta(days=14)).isoformat(), "lang": "en"}
                if r.random() < 0.1
                else None,
                "duration": {"amount": r.choice([5, 15, 30]), "unit": "minute"} if r.random() < 0.2 else None,
                "child_order": len(user.items),
                "day_order": -1,
                "is_collapsed": False,
                "added_by_uid": user.todoist_id,
                "assigned_by_uid": None,
                "responsible_uid": None,
                "checked": False,
                "is_deleted": False,
                "added_at": _iso(now, micro=True),
                "updated_at": _iso(now),
                "completed_at": None,
                "completed_by_uid": None,
                "note_count": 0,
            }
            item.update(fields)
            user.items[item["id"]] = item
            self._touch_item(user, item)
            return item

    # -- changes ----------------------------------------------------------------------------------
    def edit_task(self, user: FakeUser, task_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a task."""
        with self.lock:
            item = user.items[task_id]
            item.update(fields)
            self._touch_item(user, item)
            return item

    def complete_task(self, user: FakeUser, task_id: str) -> dict[str, Any]:
        """Close a task: a recurring one moves to its next date, any other one is checked."""
        with self.lock:
            item = user.items[task_id]
            now = self.clock.now()
            done = {**item, "checked": True, "completed_at": _iso(now, micro=True), "completed_by_uid": user.todoist_id}
            user.completions.append(done)
            due = item.get("due")
            if due and due.get("is_recurring"):
                nxt = date.fromisoformat(due["date"][:10]) + timedelta(days=1)
                item["due"] = {**due, "date": max(nxt, now.date() + timedelta(days=1)).isoformat()}
            else:
                item.update(checked=True, completed_at=done["completed_at"], completed_by_uid=user.todoist_id)
            self._touch_item(user, item)
            return item

    def uncomplete_task(self, user: FakeUser, task_id: str) -> dict[str, Any]:
        """Reopen a checked task (its completion leaves the completed list)."""
        with self.lock:
            item = user.items[task_id]
            item.update(checked=False, completed_at=None, completed_by_uid=None)
            user.completions = [
                c for c in user.completions if not (c["id"] == task_id and not (c.get("due") or {}).get("is_recurring"))
            ]
            self._touch_item(user, item)
            return item

    def delete_task(self, user: FakeUser, task_id: str) -> None:
        """Delete a task (and its subtasks)."""
        with self.lock:
            for item in list(user.items.values()):
                if item["id"] == task_id or item.get("parent_id") == task_id:
                    item["is_deleted"] = True
                    self._touch_item(user, item)

    def archive_project(self, user: FakeUser, project_id: str) -> dict[str, Any]:
        """Archive a project: it leaves full syncs and ``/projects``, and shows in ``/projects/archived``."""
        with self.lock:
            project = user.projects[project_id]
            project["is_archived"] = True
            self._touch_project(user, project)
            return project

    def delete_project(self, user: FakeUser, project_id: str) -> None:
        """Delete a project and, in cascade, its tasks."""
        with self.lock:
            project = user.projects[project_id]
            project["is_deleted"] = True
            self._touch_project(user, project)
            for item in user.items.values():
                if item["project_id"] == project_id and not item["is_deleted"]:
                    item["is_deleted"] = True
                    self._touch_item(user, item)

    def expire_tokens(self, user: FakeUser) -> None:
        """Refuse every sync token issued to ``user`` so far (the client must full-sync)."""
        with self.lock:
            user.seq += 1  # tokens issued from now on carry this sequence number or later
            user.min_token_seq = user.seq

    def revoke(self, user: FakeUser, status: Literal[401, 403] = 403) -> None:
        """Revoke ``user``'s token for good."""
        self.inject(user, Fault("revoked", times=-1, revoked_status=status))

    def authorization_code(self, user: FakeUser) -> str:
        """A one-time OAuth code for ``user`` (what Todoist's consent screen would redirect with)."""
        with self.lock:
            code = "code-" + "".join(self._rng.choice("0123456789abcdef") for _ in range(24))
            self._codes[code] = user
            return code

    def exchange(self, client_id: str, client_secret: str, code: str) -> str:
        """The token of a code (used once); ValueError naming Todoist's error otherwise."""
        with self.lock:
            if (client_id, client_secret) != (self.client_id, self.client_secret):
                raise ValueError("incorrect_application_credentials")
            user = self._codes.pop(code, None)
            if user is None:
                raise ValueError("bad_authorization_code")
            return user.token

    def revoke_token(self, client_id: str, client_secret: str, token: str) -> bool:
        """Revoke ``token`` (``DELETE /api/v1/access_tokens``); False for bad app credentials."""
        with self.lock:
            if (client_id, client_secret) != (self.client_id, self.client_secret):
                return False
            if self._by_token.pop(token, None) is not None:
                self.revoked.append(token)
            return True

    def inject(self, user: FakeUser, fault: Fault) -> None:
        """Answer ``user``'s next requests with ``fault``."""
        with self.lock:
            user.faults.append(fault)

    def evolve(self, steps: int = 1) -> None:
        """Let every user change their tasks, deterministically from the seed and the step."""
        with self.lock:
            for _ in range(steps):
                self.steps += 1
                for user in self.users:
                    self._evolve_user(user, random.Random(f"{self.seed}:{user.todoist_id}:{self.steps}"))

    def _evolve_user(self, user: FakeUser, r: random.Random) -> None:
        live = [i for i in user.items.values() if not i["is_deleted"] and not i["checked"]]
        projects = [p for p in user.projects.values() if not p["is_archived"] and not p["is_deleted"]]
        for _ in range(r.randrange(1, 4)):
            self.add_task(user, project_id=r.choice(projects)["id"])
        for item in r.sample(live, k=min(len(live), r.randrange(0, 3))):
            action = r.choice(["edit", "complete", "complete", "delete"])
            if action == "edit":
                self.edit_task(user, item["id"], content=item["content"] + " (edited)", priority=r.randrange(1, 5))
            elif action == "complete":
                self.complete_task(user, item["id"])
            else:
                self.delete_task(user, item["id"])
        checked = [i for i in user.items.values() if i["checked"] and not i["is_deleted"]]
        if checked and r.random() < 0.2:
            self.uncomplete_task(user, r.choice(checked)["id"])
        if len(projects) > 2 and r.random() < 0.05:
            self.archive_project(user, r.choice([p for p in projects if not p["inbox_project"]])["id"])

    # -- reading ----------------------------------------------------------------------------------
    def _token(self, user: FakeUser, seq: int) -> str:
        mac = hashlib.sha256(f"{self._secret}:{user.todoist_id}:{seq}".encode()).hexdigest()[:20]
        return f"{seq}:{mac}"

    def _seq_of(self, user: FakeUser, token: str) -> int:
        seq_text, _, _ = token.partition(":")
        if not seq_text.isdigit() or self._token(user, int(seq_text)) != token:
            raise _invalid("sync_token", "Invalid sync token")
        seq = int(seq_text)
        if seq < user.min_token_seq or seq > user.seq:
            raise _invalid("sync_token", "Sync token expired")
        return seq

    def _archived(self, user: FakeUser, project_id: str) -> bool:
        p = user.projects.get(project_id)
        return p is None or p["is_archived"] or p["is_deleted"]

    def active_items(self, user: FakeUser) -> list[dict[str, Any]]:
        """Tasks a full sync and ``/tasks`` return: not deleted, not checked, project active."""
        return [
            i
            for i in user.items.values()
            if not i["is_deleted"] and not i["checked"] and not self._archived(user, i["project_id"])
        ]

    def sync(self, user: FakeUser, token: str, resource_types: list[str]) -> dict[str, Any]:
        """The answer to ``POST /sync``."""
        with self.lock:
            wanted = _resource_types(resource_types)
            full = token == "*"
            since = 0 if full else self._seq_of(user, token)
            out: dict[str, Any] = {
                "sync_token": self._token(user, user.seq),
                "full_sync": full,
                "full_sync_date_utc": _iso(self.clock.now()) if full else None,
            }
            if "items" in wanted:
                if full:
                    items = self.active_items(user)
                else:
                    items = [user.items[i] for i, rev in user.item_rev.items() if rev > since]
                out["items"] = [dict(i) for i in items] + list(user.junk_items)
            if "projects" in wanted:
                if full:
                    projects = [p for p in user.projects.values() if not p["is_archived"] and not p["is_deleted"]]
                else:
                    projects = [user.projects[p] for p, rev in user.project_rev.items() if rev > since]
                out["projects"] = [dict(p) for p in projects]
            if "user" in wanted:
                out["user"] = {"id": user.todoist_id, "full_name": user.full_name, "tz_info": {"timezone": "UTC"}}
            out.update(user.sync_patch)
            for key in user.sync_drop:
                out.pop(key, None)
            return out

    def completed(self, user: FakeUser, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Completion records in ``[since, until]``, oldest first."""
        with self.lock:
            rows = [c for c in user.completions if since <= _parse_iso(c["completed_at"]) <= until]
            return sorted((dict(c) for c in rows), key=lambda c: (c["completed_at"], c["id"]))

    def rest_project(self, p: dict[str, Any]) -> dict[str, Any]:
        """A project in the REST shape of ``/projects``."""
        return {
            **{k: v for k, v in p.items() if k not in {"inbox_project", "shared", "child_order", "is_deleted"}},
            "is_inbox_project": p["inbox_project"],
            "is_shared": p["shared"],
            "order": p["child_order"],
        }

    # -- faults -----------------------------------------------------------------------------------
    def take_fault(self, user: FakeUser) -> Fault | None:
        """The fault that applies to this request, if any (one use consumed)."""
        with self.lock:
            user.requests += 1
            while user.faults:
                fault = user.faults[0]
                if fault.times == 0:
                    user.faults.pop(0)
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
            return None


def _resource_types(raw: list[str]) -> set[str]:
    known = {"items", "projects", "labels", "sections", "notes", "filters", "reminders", "user", "completed_info"}
    wanted: set[str] = set()
    for name in raw:
        if name == "all":
            wanted |= known
        elif not name.startswith("-"):
            wanted.add(name)
    for name in raw:
        if name.startswith("-"):
            wanted.discard(name[1:])
    return wanted


def _page(rows: list[dict[str, Any]], request: Request, key: str, signature: str) -> dict[str, Any]:
    """One page of ``rows`` following an opaque cursor bound to the parameter set."""
    limit_text = request.query_params.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 200:
        raise _invalid("limit")
    limit = int(limit_text)
    offset = 0
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            sig, _, off = base64.urlsafe_b64decode(cursor.encode()).decode().rpartition("|")
            offset = int(off)
        except ValueError:
            raise _invalid("cursor") from None
        if sig != signature:
            raise _invalid("cursor")
    chunk = rows[offset : offset + limit]
    nxt = offset + limit
    next_cursor = base64.urlsafe_b64encode(f"{signature}|{nxt}".encode()).decode() if nxt < len(rows) else None
    return {key: chunk, "next_cursor": next_cursor}


def create_app(world: FakeTodoist) -> Starlette:
    """The ASGI app serving ``world`` under ``/api/v1``."""

    async def authed(request: Request) -> FakeUser:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        user = world._by_token.get(token)
        if user is None:
            raise ApiError(401, "Unauthorized", 401, "AUTH_INVALID_TOKEN")
        fault = world.take_fault(user)
        if fault is None:
            return user
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return user
        if fault.kind == "revoked":
            raise ApiError(fault.revoked_status, "Invalid token", 401, "AUTH_INVALID_TOKEN")
        if fault.kind == "garbage":
            raise _Garbage()
        if fault.kind == "5xx":
            raise ApiError(fault.status, "Service unavailable", 500, "SERVICE_UNAVAILABLE")
        extra = {"retry_after": fault.retry_after} if fault.retry_after_in in ("body", "both") else {}
        raise _RateLimited(extra, fault)

    def handler(fn: Callable[[Request, FakeUser], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                user = await authed(request)
                body = await fn(request, user)
                return JSONResponse(body)
            except _Garbage:
                return Response(b'{"sync_token": "1:abc", "items": [{"id": "x", "con', media_type="application/json")
            except _RateLimited as limited:
                headers = (
                    {"Retry-After": str(int(limited.fault.retry_after))}
                    if limited.fault.retry_after_in in ("header", "both")
                    else None
                )
                return limited.response(headers)
            except ApiError as exc:
                return exc.response()

        return endpoint

    async def sync(request: Request, user: FakeUser) -> dict[str, Any]:
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                form = json.loads(raw or b"{}")
            except ValueError:
                raise _invalid("body", "Invalid JSON body") from None
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        token = form.get("sync_token")
        if not token:
            raise ApiError(400, "Required argument is missing", 19, "ARGUMENT_MISSING", {"argument": "sync_token"})
        types = form.get("resource_types", '["all"]')
        try:
            resource_types = json.loads(types) if isinstance(types, str) else types
        except ValueError:
            raise _invalid("resource_types") from None
        if not isinstance(resource_types, list):
            raise _invalid("resource_types")
        return world.sync(user, token, resource_types)

    async def tasks(request: Request, user: FakeUser) -> dict[str, Any]:
        with world.lock:
            rows = [dict(i) for i in world.active_items(user)]
        project = request.query_params.get("project_id")
        if project:
            rows = [r for r in rows if r["project_id"] == project]
        ids = request.query_params.get("ids")
        if ids:
            wanted = set(ids.split(","))
            rows = [r for r in rows if r["id"] in wanted]
        return _page(rows, request, "results", f"tasks:{user.todoist_id}:{project}:{ids}")

    async def completed(request: Request, user: FakeUser) -> dict[str, Any]:
        try:
            since = _parse_iso(request.query_params["since"])
            until = _parse_iso(request.query_params["until"])
        except KeyError as missing:
            extra = {"argument": str(missing)}
            raise ApiError(400, "Required argument is missing", 19, "ARGUMENT_MISSING", extra) from None
        except ValueError:
            raise _invalid("since") from None
        if until < since or until - since > MAX_COMPLETED_WINDOW:
            raise _invalid("until", "The date range must not exceed 3 months")
        rows = world.completed(user, since, until)
        return _page(rows, request, "items", f"completed:{user.todoist_id}:{_iso(since)}:{_iso(until)}")

    async def projects(request: Request, user: FakeUser) -> dict[str, Any]:
        with world.lock:
            rows = [
                world.rest_project(p) for p in user.projects.values() if not p["is_archived"] and not p["is_deleted"]
            ]
        return _page(rows, request, "results", f"projects:{user.todoist_id}")

    async def archived(request: Request, user: FakeUser) -> dict[str, Any]:
        with world.lock:
            rows = [world.rest_project(p) for p in user.projects.values() if p["is_archived"] and not p["is_deleted"]]
        return _page(rows, request, "results", f"archived:{user.todoist_id}")

    async def oauth_token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            token = world.exchange(form.get("client_id", ""), form.get("client_secret", ""), form.get("code", ""))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"access_token": token, "token_type": "Bearer"})

    async def revoke(request: Request) -> Response:
        q = request.query_params
        if not world.revoke_token(q.get("client_id", ""), q.get("client_secret", ""), q.get("access_token", "")):
            return ApiError(401, "Invalid client credentials", 401, "AUTH_INVALID_CLIENT").response()
        return Response(status_code=204)

    async def admin_users(request: Request) -> Response:
        return JSONResponse(
            [{"todoist_id": u.todoist_id, "token": u.token, "tasks": len(u.items)} for u in world.users]
        )

    async def admin_evolve(request: Request) -> Response:
        world.evolve(int(request.query_params.get("steps", "1")))
        return JSONResponse({"steps": world.steps})

    async def admin_fault(request: Request) -> Response:
        body = await request.json()
        user = world.user(body.pop("todoist_id"))
        world.inject(user, Fault(**body))
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/api/v1/sync", handler(sync), methods=["POST"]),
            Route("/api/v1/tasks", handler(tasks), methods=["GET"]),
            Route("/api/v1/tasks/completed/by_completion_date", handler(completed), methods=["GET"]),
            Route("/api/v1/projects", handler(projects), methods=["GET"]),
            Route("/api/v1/projects/archived", handler(archived), methods=["GET"]),
            Route("/oauth/access_token", oauth_token, methods=["POST"]),
            Route("/api/v1/access_tokens", revoke, methods=["DELETE"]),
            Route("/__fake/users", admin_users, methods=["GET"]),
            Route("/__fake/evolve", admin_evolve, methods=["POST"]),
            Route("/__fake/faults", admin_fault, methods=["POST"]),
        ]
    )


class _Garbage(Exception):
    pass


class _RateLimited(ApiError):
    def __init__(self, extra: dict[str, Any], fault: Fault) -> None:
        super().__init__(429, "Too many requests. Limits reached. Try again later", 35, "LIMITS_REACHED", extra)
        self.fault = fault


@contextmanager
def serve_in_thread(world: FakeTodoist, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the fake on a loopback port in a background thread; yield its API base URL."""
    import uvicorn

    config = uvicorn.Config(create_app(world), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-todoist", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake Todoist server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/api/v1/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main(host: str = "127.0.0.1", port: int = 8765, users: int = 3, tasks: int = 20, seed: int = 0) -> None:
    """Serve a seeded world until interrupted (``make fake-todoist``)."""
    import uvicorn

    world = FakeTodoist.seeded(seed=seed, users=users, tasks_per_user=tasks)
    print(f"fake Todoist API v1 at http://{host}:{port}/api/v1/ ({users} users x {tasks} tasks, seed {seed})")  # noqa: T201
    for u in world.users[:10]:
        print(f"  user {u.todoist_id} token {u.token}")  # noqa: T201
    uvicorn.run(create_app(world), host=host, port=port, log_level="warning")
