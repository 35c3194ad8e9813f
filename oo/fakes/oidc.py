"""A fake OpenID Connect provider (Google-shaped) for tests and the demo: discovery, JWKS, and
the authorization-code flow with PKCE (S256) and state, issuing RS256-signed ID tokens.

It has no login page: :meth:`FakeOidc.login_as` sets who is "signed in at Google", and
``/authorize`` redirects straight back with a one-time code, as the real consent screen would
after the user agreed. ``/token`` checks the client credentials, the redirect URI and the PKCE
verifier against the challenge, like a real provider; a code is used once.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    sub: str
    email: str
    email_verified: bool


@dataclass
class FakeOidc:
    """The provider's state: its signing key, clients, the signed-in person, pending codes."""

    issuer: str = "http://127.0.0.1"
    clients: dict[str, str] = field(default_factory=lambda: {"fake-google-client": "fake-google-secret"})
    clock: Callable[[], float] = time.time
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "fake-1", "use": "sig", "alg": "RS256"})
    )
    person: tuple[str, str, bool] | None = None
    _codes: dict[str, _Grant] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def login_as(self, sub: str, email: str, email_verified: bool = True) -> None:
        """Who the next ``/authorize`` signs in."""
        self.person = (sub, email, email_verified)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet([self.key]).as_dict(private=False))

    def authorize(self, q: dict[str, str]) -> tuple[int, str | dict[str, str]]:
        """A redirect URL with a code (or an error body)."""
        required = ("client_id", "redirect_uri", "response_type", "state", "code_challenge")
        if any(not q.get(k) for k in required) or q["response_type"] != "code":
            return 400, {"error": "invalid_request"}
        if q["client_id"] not in self.clients:
            return 400, {"error": "unauthorized_client"}
        if q.get("code_challenge_method") != "S256":
            return 400, {"error": "invalid_request", "error_description": "PKCE S256 is required"}
        if self.person is None:
            return 400, {"error": "login_required"}
        code = secrets.token_urlsafe(24)
        sub, email, verified = self.person
        with self.lock:
            self._codes[code] = _Grant(
                q["client_id"], q["redirect_uri"], q["code_challenge"], q.get("nonce"), sub, email, verified
            )
        return 302, f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if self.clients.get(client_id) != secret:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or challenge != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(self.clock())
        claims = {
            "iss": self.issuer, "aud": client_id, "sub": grant.sub, "email": grant.email,
            "email_verified": grant.email_verified, "iat": now, "exp": now + 3600,
        }  # fmt: skip
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return 200, {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
        }


def create_app(world: FakeOidc) -> Starlette:
    """The provider's HTTP endpoints."""

    async def discovery(request: Request) -> Response:
        return JSONResponse(world.discovery())

    async def jwks(request: Request) -> Response:
        return JSONResponse(world.jwks())

    async def authorize(request: Request) -> Response:
        status, answer = world.authorize(dict(request.query_params))
        if status == 302 and isinstance(answer, str):
            return RedirectResponse(answer, status_code=302)
        return JSONResponse(answer, status_code=status)

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        basic = None
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            from urllib.parse import unquote

            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            basic = (unquote(user), unquote(pw))
        status, body = world.token(form, basic)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
        ]
    )


@contextmanager
def serve_in_thread(world: FakeOidc, host: str = "127.0.0.1") -> Iterator[FakeOidc]:
    """Run the provider on a free loopback port; its ``issuer`` becomes that address."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    world.issuer = f"http://{host}:{port}"
    server = uvicorn.Server(
        uvicorn.Config(create_app(world), host=host, port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="fake-oidc", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake OIDC provider did not start")
        time.sleep(0.01)
    try:
        yield world
    finally:
        server.should_exit = True
        thread.join(timeout=10)
