"""A client for the Todoist API v1, pointed at any base URL (the real API or the fake one).

- The official SDK (``todoist-api-python``) drives the endpoints it covers (``/tasks``,
  ``/tasks/completed/by_completion_date``, ``/projects``, ``/projects/archived`` through its
  paginator): its headers, request ids, cursor pagination. It always calls
  ``https://api.todoist.com/api/v1/...``, so its ``httpx.Client`` gets a transport
  (:class:`BaseUrlTransport`) that rewrites those URLs to ``OO_TODOIST__BASE_URL`` and applies
  our timeout.
- ``POST /api/v1/sync``, which the SDK lacks, is raw httpx (form-encoded).
- Rows stay raw JSON dicts: the SDK's models drop ``checked``, ``is_deleted``, ``user_id``,
  ``day_order`` and ``completed_by_uid``, and one malformed task makes the SDK fail its whole
  page; the sync validates each raw row against the contract instead and quarantines bad ones.

Faults: a 429 waits for ``Retry-After`` (the header, else ``error_extra.retry_after``) and
retries, unless the wait is longer than ``max_retry_after_s``; 5xx answers and timeouts retry
with exponential backoff and jitter (tenacity), ``max_retries`` times; 401, or 403 with
``AUTH_INVALID_TOKEN``, raises :class:`TodoistAuthError` at once (the integration needs
re-authorisation). Error messages carry the status, the API's error tag and message, and the
path, never the token: it lives in a :class:`pydantic.SecretStr` until the request is built.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictStr, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from todoist_api_python._core.endpoints import API_URL, get_api_url
from todoist_api_python.api import ResultsPaginator, TodoistAPI

from oo.settings import TodoistSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNC_RESOURCES = ("items", "projects", "user")
"""What a sync asks for: tasks, projects, and the user (for the Todoist user id webhooks use)."""


class TodoistError(Exception):
    """The Todoist API refused a request or sent something unreadable."""

    def __init__(self, message: str, status: int | None = None, tag: str | None = None) -> None:
        super().__init__(message)
        self.status, self.tag = status, tag


class TodoistAuthError(TodoistError):
    """The token was refused (401, or 403 + ``AUTH_INVALID_TOKEN``): the user must re-authorise."""


class SyncTokenRefused(TodoistError):
    """The API refused the stored ``sync_token``; a full sync is needed."""


class TodoistRateLimited(TodoistError):
    """429: wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, 429, "LIMITS_REACHED")
        self.retry_after = retry_after


class TodoistUnavailable(TodoistError):
    """A 5xx answer, a timeout or a broken connection (retried with backoff)."""


class MalformedResponse(TodoistError):
    """A response body that is not the JSON object the API documents; ``body`` keeps it."""

    def __init__(self, message: str, body: bytes) -> None:
        super().__init__(message)
        self.body = body


class SyncAnswer(BaseModel):
    """The shape of a ``POST /sync`` answer, as far as the sync reads it; other keys pass through.

    A list the request asked for (``items``, ``projects``) must be there: an answer without it
    says nothing about those objects, and must never be read as "there are none". A full sync's
    ``full_sync_date_utc`` must carry its zone.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    sync_token: StrictStr = Field(min_length=1)
    full_sync: StrictBool | None = None
    full_sync_date_utc: AwareDatetime | None = None
    items: list[Any] | None = None
    projects: list[Any] | None = None
    user: dict[str, Any] | None = None

    @classmethod
    def read(cls, body: Any, resource_types: tuple[str, ...]) -> SyncAnswer:
        """``body`` checked against the shape, for a request of ``resource_types``.

        Raises :class:`ValueError` naming every part that is missing or of the wrong type.
        """
        if not isinstance(body, dict):
            raise ValueError(f"expected a JSON object, got {type(body).__name__}")
        try:
            answer = cls.model_validate(body)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
            raise ValueError("; ".join(parts)) from None
        missing = [r for r in ("items", "projects") if r in resource_types and body.get(r) is None]
        if missing:
            raise ValueError(f"no {' and no '.join(missing)} list in the answer")
        return answer


class BaseUrlTransport(httpx.BaseTransport):
    """Rewrites the SDK's hard-coded ``https://api.todoist.com/api/v1/`` to ``base_url`` and sets
    one timeout on every request (the SDK passes its own 60 s read timeout)."""

    def __init__(
        self, base_url: str, timeout: float, inner: httpx.BaseTransport | None = None, *, owns_inner: bool = True
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = httpx.Timeout(timeout)
        self._inner = inner or shared_transport()
        self._owns_inner = owns_inner and inner is not None
        self._sdk_root = API_URL.rstrip("/") + "/"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url.startswith(self._sdk_root):
            request.url = httpx.URL(self.base_url + url[len(self._sdk_root) :])
            request.headers["Host"] = request.url.netloc.decode("ascii")
        request.extensions["timeout"] = self.timeout.as_dict()
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._owns_inner:
            self._inner.close()


_SHARED: httpx.HTTPTransport | None = None


def shared_transport() -> httpx.HTTPTransport:
    """One pooled HTTP transport for every user's client in this process: connections are kept
    alive across users and the TLS context is built once (about 30 ms each otherwise). Tokens
    are per request (headers), never per connection."""
    global _SHARED
    if _SHARED is None:
        _SHARED = httpx.HTTPTransport(retries=0, limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
    return _SHARED


def _retry_after(response: httpx.Response, body: dict[str, Any]) -> float:
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass  # an HTTP date: fall back to the body
    extra = body.get("error_extra") or {}
    value = extra.get("retry_after") if isinstance(extra, dict) else None
    return float(value) if isinstance(value, int | float) else 1.0


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def classify(response: httpx.Response, *, sync_token: str | None = None) -> TodoistError:
    """The error for a non-2xx ``response`` (never mentions the token)."""
    body = _error_body(response)
    tag = body.get("error_tag") if isinstance(body.get("error_tag"), str) else None
    text = f"HTTP {response.status_code} {tag or ''} from {response.request.url.path}: {body.get('error', '')}".strip()
    status = response.status_code
    if status == 429:
        return TodoistRateLimited(text, _retry_after(response, body))
    if status == 401 or (status == 403 and (tag == "AUTH_INVALID_TOKEN" or body.get("error_code") == 401)):
        return TodoistAuthError(text, status, tag)
    if status >= 500:
        return TodoistUnavailable(text, status, tag)
    if status == 400 and sync_token not in (None, "*"):
        return SyncTokenRefused(text, status, tag)
    return TodoistError(text, status, tag)


class TodoistClient:
    """One user's Todoist API v1 client.

    Parameters
    ----------
    token
        The user's OAuth token (from the vault).
    settings
        Base URL, timeout, retry bounds.
    transport
        The HTTP transport under the base-URL rewrite (tests may pass ``httpx.MockTransport``).
    sleep
        How to wait between retries (tests pass a recorder).
    """

    def __init__(
        self,
        token: SecretStr,
        settings: TodoistSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._token = token
        self._sleep = sleep
        rewrite = BaseUrlTransport(settings.base_url, settings.timeout_s, transport, owns_inner=False)
        self._http = httpx.Client(transport=rewrite)
        self._sdk = TodoistAPI(token.get_secret_value(), client=self._http)
        self.requests = 0
        self.waited_s = 0.0

    def __enter__(self) -> TodoistClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"TodoistClient(base_url={self.settings.base_url!r}, token=**********)"

    # -- retries ----------------------------------------------------------------------------------
    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, TodoistRateLimited):
            return exc.retry_after <= self.settings.max_retry_after_s
        return isinstance(exc, TodoistUnavailable)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TodoistRateLimited):
            wait = exc.retry_after
        else:
            wait = wait_exponential_jitter(
                initial=self.settings.backoff_initial_s,
                max=self.settings.backoff_max_s,
                jitter=self.settings.backoff_initial_s,
            )(state)
        self.waited_s += wait
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("todoist: attempt %d failed (%s); retrying", state.attempt_number, exc)

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn`` with HTTP errors classified and transient ones retried."""

        def attempt() -> T:
            self.requests += 1
            try:
                return fn()
            except httpx.HTTPStatusError as exc:
                raise classify(exc.response) from None
            except httpx.TimeoutException as exc:
                raise TodoistUnavailable(f"timeout: {type(exc).__name__} on {exc.request.url.path}") from None
            except httpx.TransportError as exc:
                raise TodoistUnavailable(f"connection failed: {type(exc).__name__}") from None
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # the SDK reading a page
                raise MalformedResponse(f"unreadable response: {type(exc).__name__}: {exc}", b"") from None

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_retries + 1),
            retry=retry_if_exception(self._retryable),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    # -- /sync (raw httpx) ------------------------------------------------------------------------
    def sync(self, sync_token: str = "*", resource_types: tuple[str, ...] = SYNC_RESOURCES) -> dict[str, Any]:
        """``POST /sync``: a full sync with ``"*"``, else the changes since ``sync_token``.

        The answer is checked against :class:`SyncAnswer` (``full_sync_date_utc`` comes back
        parsed). Raises :class:`SyncTokenRefused` when the API refuses the token and
        :class:`MalformedResponse` (keeping the body) when the answer has the wrong shape.
        """
        url = self.settings.base_url.rstrip("/") + "/sync"
        form = {"sync_token": sync_token, "resource_types": json.dumps(list(resource_types))}

        def post() -> dict[str, Any]:
            headers = {
                "Authorization": f"Bearer {self._token.get_secret_value()}",
                "X-Request-Id": str(uuid.uuid4()),
            }
            response = self._http.post(url, data=form, headers=headers)
            if response.status_code >= 400:
                raise classify(response, sync_token=sync_token)
            try:
                body = response.json()
            except ValueError as exc:
                raise MalformedResponse(f"/sync answered malformed JSON ({exc})", response.content) from None
            try:
                answer = SyncAnswer.read(body, resource_types)
            except ValueError as exc:
                raise MalformedResponse(f"/sync answered the wrong shape ({exc})", response.content) from None
            return {**body, "full_sync_date_utc": answer.full_sync_date_utc}

        return self._call(post)

    # -- SDK-covered endpoints --------------------------------------------------------------------
    def _pages(self, path: str, field: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Raw pages from the SDK's cursor paginator, each page fetched with retries.

        A failed page leaves the paginator's cursor where it was, so a retry refetches that page.
        """
        pages: ResultsPaginator[dict[str, Any]] = ResultsPaginator(
            self._http,
            get_api_url(path),
            field,
            lambda row: row,
            self._token.get_secret_value(),
            lambda: str(uuid.uuid4()),
            params,
        )
        while True:
            try:
                page = self._call(lambda: next(pages))
            except StopIteration:
                return
            yield page

    def tasks(self) -> list[dict[str, Any]]:
        """Every active task (``GET /tasks``), deduplicated by id (pages can repeat items)."""
        out: dict[str, dict[str, Any]] = {}
        for page in self._pages("tasks", "results", {"limit": self.settings.page_limit}):
            for row in page:
                out[str(row.get("id")) if isinstance(row, dict) else repr(row)] = row
        return list(out.values())

    def completed(self, since: datetime, until: datetime) -> list[Any]:
        """Tasks completed in ``[since, until]`` (``GET /tasks/completed/by_completion_date``).

        The window must be at most 3 months; see :func:`oo.integrations.todoist.sync.completion_windows`.
        """
        from todoist_api_python._core.utils import format_datetime

        params = {"since": format_datetime(since), "until": format_datetime(until), "limit": self.settings.page_limit}
        return [row for page in self._pages("tasks/completed/by_completion_date", "items", params) for row in page]

    def archived_projects(self) -> list[Any]:
        """Archived projects (``GET /projects/archived``; full syncs leave them out)."""
        return [
            row
            for page in self._pages("projects/archived", "results", {"limit": self.settings.page_limit})
            for row in page
        ]

    def sdk(self) -> TodoistAPI:
        """The SDK client on the same base URL, for its typed models (e.g. ``get_projects()``)."""
        return self._sdk
