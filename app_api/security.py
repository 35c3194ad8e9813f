"""Passwords (argon2 through pwdlib) and short-lived access tokens (PyJWT, HS256 by default).

An access token carries ``sub`` (the user id), ``iat``, ``exp``, ``iss``, a random ``jti`` and
``typ: access``; decoding requires all of them and checks signature, issuer and expiry against
the caller's clock. Refresh tokens are not JWTs: see :mod:`app_api.refresh`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import lru_cache

import jwt
from pwdlib import PasswordHash

from oo.settings import AuthSettings


class InvalidToken(ValueError):
    """An access token that is malformed, forged, expired or of the wrong kind."""


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHash:
    """pwdlib's recommended hasher (argon2id with its default parameters)."""
    return PasswordHash.recommended()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return password_hasher().hash("a password nobody has")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return password_hasher().hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Whether ``password`` matches ``hashed``; for a user without a password (``None``) a dummy
    hash is checked so that the answer takes as long as for a real one."""
    if hashed is None:
        password_hasher().verify(password, _dummy_hash())
        return False
    return password_hasher().verify(password, hashed)


def create_access_token(user_id: str, settings: AuthSettings, now: datetime) -> tuple[str, int]:
    """A signed access token for ``user_id`` and its lifetime in seconds."""
    claims = {
        "sub": user_id,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.access_ttl_s)).timestamp()),
        "iss": settings.issuer,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    token = jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=settings.algorithm)
    return token, settings.access_ttl_s


@lru_cache(maxsize=8192)
def _verified(token: str, key: str, algorithm: str, issuer: str) -> tuple[str, int, int]:
    """``(sub, exp, iat)`` of a token whose signature, issuer, claims and kind are valid.

    Cached by the token's exact text with the key that verified it: the same bytes verify the
    same way every time, so a client's repeated requests pay for the signature check once. Only
    successes are cached (an exception is never), and expiry is checked on every call, against
    the caller's clock, by :func:`decode_access_token`."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            # times are checked by the caller against the app's clock (``now``), not the library's
            options={"require": ["sub", "iat", "exp", "iss", "typ"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid access token ({type(exc).__name__})") from None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise InvalidToken("invalid access token (not an access token)")
    if not isinstance(claims["exp"], int) or not isinstance(claims["iat"], int):
        raise InvalidToken("invalid access token (exp or iat is not an integer)")
    return str(claims["sub"]), claims["exp"], claims["iat"]


def decode_access_token(token: str, settings: AuthSettings, now: datetime) -> str:
    """The user id of a valid access token; :class:`InvalidToken` otherwise."""
    sub, exp, iat = _verified(token, settings.secret_key.get_secret_value(), settings.algorithm, settings.issuer)
    if exp <= now.timestamp():
        raise InvalidToken("the access token has expired")
    if iat > now.timestamp() + 1:
        raise InvalidToken("invalid access token (issued in the future)")
    return sub
