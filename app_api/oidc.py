"""Sign-in with Google behind an OpenID Connect boundary: Authlib's OAuth 2.0 client runs the
authorization-code flow with PKCE (S256), ``state`` and ``nonce``; the ID token is verified with
joserfc (Authlib's JOSE library) against the provider's JWKS: signature, issuer, audience,
nonce, expiry. Which provider is configuration (``OO_AUTH__GOOGLE_*``): tests and the demo point
it at ``oo.fakes.oidc``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from oo.settings import AuthSettings


class SignInFailed(ValueError):
    """The provider refused, or its answer did not verify."""


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    email: str | None
    email_verified: bool


@dataclass(frozen=True)
class Started:
    """A sign-in to redirect to, and what to keep until the callback."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class OidcProvider:
    """One provider, its metadata and keys fetched on first use (and keys again on an unknown kid)."""

    def __init__(self, settings: AuthSettings, http: httpx.Client) -> None:
        if not settings.google_client_id:
            raise SignInFailed("Google sign-in is not configured")
        self.settings = settings
        self.client_id: str = settings.google_client_id
        self.http = http
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def _get(self, url: str) -> dict[str, Any]:
        try:
            r = self.http.get(url)
            r.raise_for_status()
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInFailed(f"the identity provider did not answer ({type(exc).__name__})") from None
        if not isinstance(body, dict):
            raise SignInFailed("the identity provider answered something else than JSON")
        return body

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = self._get(self.settings.google_metadata_url)
        return self._metadata

    def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            self._keys = KeySet.import_key_set(self._get(self.metadata["jwks_uri"]))  # type: ignore[arg-type]
        return self._keys

    def _client(self) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self.settings.google_client_secret.get_secret_value(),
            scope="openid email profile",
            redirect_uri=self.settings.google_redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",
            timeout=10.0,
        )

    def start(self) -> Started:
        """The provider's authorization URL with a fresh state, nonce and PKCE verifier."""
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        with self._client() as client:
            url, _ = client.create_authorization_url(
                self.metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return Started(url=url, state=state, nonce=nonce, code_verifier=verifier)

    def finish(self, code: str, code_verifier: str, nonce: str, now: datetime) -> Identity:
        """Exchange ``code`` and verify the ID token; :class:`SignInFailed` otherwise."""
        try:
            with self._client() as client:
                token = client.fetch_token(self.metadata["token_endpoint"], code=code, code_verifier=code_verifier)
        except (OAuthError, OAuth2Error, httpx.HTTPError) as exc:
            raise SignInFailed(f"the identity provider refused the code ({type(exc).__name__})") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("the identity provider sent no ID token")
        try:
            try:
                decoded = jwt.decode(id_token, self.keys(), algorithms=["RS256", "ES256"])
            except JoseError:
                decoded = jwt.decode(id_token, self.keys(refresh=True), algorithms=["RS256", "ES256"])
            registry = jwt.JWTClaimsRegistry(
                now=int(now.timestamp()),
                leeway=60,
                iss={"essential": True, "value": self.metadata["issuer"]},
                aud={"essential": True, "value": self.client_id},
                nonce={"essential": True, "value": nonce},
                sub={"essential": True},
                exp={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise SignInFailed(f"the ID token did not verify ({type(exc).__name__})") from None
        claims = decoded.claims
        return Identity(
            subject=str(claims["sub"]), email=claims.get("email"), email_verified=claims.get("email_verified") is True
        )
