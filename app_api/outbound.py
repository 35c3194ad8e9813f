"""Where the app may send a request on a user's say-so: outside local mode, a user's webhook URL
must be https and reach a public host, never a loopback, private, link-local or reserved address,
so that a profile cannot aim the notifier at the app's own network (server-side request forgery).

The profile refuses such a URL when it is saved (an address written in the URL, or ``localhost``);
the notifier checks again before each delivery, on the addresses the host resolves to then. A
host that resolves to a public address when checked and to another one a moment later (DNS
rebinding) is not caught: that needs the connection pinned to the checked address, which httpx
does not offer; the notifier does not follow redirects either (httpx's default).
"""

from __future__ import annotations

import ipaddress
import socket

import httpx

LOCAL_NAMES = ("localhost", "localhost.localdomain")


class NotPublic(ValueError):
    """The URL is not one the app sends users' data to (not https, or not a public address)."""


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _refuse_unless_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    mapped = getattr(address, "ipv4_mapped", None)
    if not (mapped or address).is_global:
        raise NotPublic("webhook_url must reach a public address")


def check_written(url: str) -> None:
    """Refuse ``url`` when it is not https, or names a non-public address or a local name itself
    (no DNS lookup).

    >>> for url in ("http://hooks.example.org/", "https://10.0.0.7/", "https://[::ffff:127.0.0.1]/",
    ...             "https://localhost./", "https://hooks.example.org/oo", "https://8.8.8.8/"):
    ...     try:
    ...         check_written(url)
    ...         print("ok", url)
    ...     except NotPublic as exc:
    ...         print(exc)
    webhook_url must be https
    webhook_url must reach a public address
    webhook_url must reach a public address
    webhook_url must reach a public address
    ok https://hooks.example.org/oo
    ok https://8.8.8.8/
    """
    _checked(url)


def _checked(url: str) -> httpx.URL:
    parsed = httpx.URL(url)
    if parsed.scheme != "https":
        raise NotPublic("webhook_url must be https")
    host = (parsed.host or "").rstrip(".").lower()
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        raise NotPublic("webhook_url must reach a public address")
    address = _address(host)
    if address is not None:
        _refuse_unless_global(address)
    return parsed


def check_resolved(url: str) -> None:
    """Refuse ``url`` when :func:`check_written` does, or when its host resolves to any non-public
    address (or does not resolve)."""
    parsed = _checked(url)
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise NotPublic(f"the webhook's host does not resolve ({exc.strerror})") from None
    for info in infos:
        address = _address(str(info[4][0]))
        if address is None:
            raise NotPublic("the webhook's host resolved to something that is not an address")
        _refuse_unless_global(address)


__all__ = ["NotPublic", "check_resolved", "check_written"]
