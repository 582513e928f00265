"""The websocket Origin check: only the dashboard's own pages may open its streams.

Browsers send cookies with a websocket handshake to any site, so without this check a
page elsewhere could read a logged-in operator's live stream (cross-site websocket
hijacking). Channels' ``AllowedHostsOriginValidator`` compares the host alone; an
origin is scheme, host and port, and ``http://127.0.0.1:9999`` (another program on
the same machine) or ``http://`` for a page served over ``https://`` are other sites.

The expected origin is the one the request came to, as Django's CSRF check sees it:
the ``Host`` header (which must be one of ``ALLOWED_HOSTS``), ``https`` when the
connection is TLS or the TLS proxy's header (``SECURE_PROXY_SSL_HEADER``) says so.
``CSRF_TRUSTED_ORIGINS`` adds origins a proxy makes differ from that.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    scheme: str  # http or https
    host: str  # lower case; an IPv6 address in brackets
    port: int


def parse_origin(value: str) -> Origin | None:
    """An ``Origin`` header (``scheme://host[:port]``) as an `Origin`; None when it is not
    an http(s) origin (``null``, a mangled value)."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Origin(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme])


def expected_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin of the page that may open this websocket: the request's own scheme,
    host and port; None when its Host is missing or not one of ``ALLOWED_HOSTS``."""
    headers = _headers(scope)
    host_header = headers.get("host", "").lower()
    domain, port = split_domain_port(host_header)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if _is_secure(scope, headers) else "http"
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    host = host_header[: -len(port) - 1] if port else host_header
    return Origin(scheme, host, number)


def origin_allowed(scope: dict[str, Any]) -> bool:
    """True when the handshake's Origin is the expected origin or a trusted one."""
    origin = parse_origin(_headers(scope).get("origin", ""))
    if origin is None:
        return False
    if origin == expected_origin(scope):
        return True
    return any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)


def _trusted(origin: Origin, pattern: str) -> bool:
    """``CSRF_TRUSTED_ORIGINS`` semantics: ``https://*.example.com`` covers subdomains."""
    wildcard = "://*." in pattern
    trusted = parse_origin(pattern.replace("://*.", "://", 1))
    if trusted is None or (trusted.scheme, trusted.port) != (origin.scheme, origin.port):
        return False
    if wildcard:
        return is_same_domain(origin.host, "." + trusted.host)
    return origin.host == trusted.host


def _is_secure(scope: dict[str, Any], headers: dict[str, str]) -> bool:
    # As HttpRequest.is_secure(): the proxy's header decides when it is configured and
    # present; otherwise the connection itself.
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        header = meta_name.removeprefix("HTTP_").replace("_", "-").lower()
        if header in headers:
            return headers[header].split(",")[0].strip() == secure_value
    return scope.get("scheme") in ("wss", "https")


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    # A repeated header counts once, the last value: a handshake with two Origins
    # is odd enough that either answer is fine as long as it is one of them.
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


class SameOriginValidator:
    """ASGI middleware for websockets: the handshake goes on to `application` only from
    an allowed origin (`origin_allowed`); others are refused (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator is for websocket connections only")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
