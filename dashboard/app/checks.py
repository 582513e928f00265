"""System checks for settings that load fine alone but do not fit together.

``manage.py check`` (and every management command, ``runserver`` included) runs them;
``check --deploy`` adds Django's own security checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
SQLITE_ENGINE = "django.db.backends.sqlite3"


def check_channel_layer(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ballast.E001: several dashboard processes need a channel layer they share."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND")
    if settings.BALLAST_DASHBOARD_PROCESSES > 1 and backend == IN_MEMORY_LAYER:
        return [
            Error(
                f"BALLAST_DASHBOARD_PROCESSES={settings.BALLAST_DASHBOARD_PROCESSES} "
                "with the in-memory channel layer: a frame sent in one process never "
                "reaches browsers connected to another.",
                hint="Set REDIS_URL (the Redis channel layer), or run one process.",
                id="ballast.E001",
            )
        ]
    return []


def check_debug_hosts(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ballast.W001: DEBUG pages (tracebacks, settings) reachable from other machines."""
    if not settings.DEBUG:
        return []
    exposed = [host for host in settings.ALLOWED_HOSTS if not is_loopback(host)]
    if not exposed:
        return []
    return [
        Warning(
            f"DEBUG is on and ALLOWED_HOSTS admits {', '.join(exposed)}: error pages show "
            "settings and source to whoever reaches them.",
            hint="Turn DEBUG off, or keep ALLOWED_HOSTS to localhost, 127.0.0.1 and [::1].",
            id="ballast.W001",
        )
    ]


def check_sqlite_processes(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ballast.W002: SQLite locks the whole file per write; several writers wait on it."""
    engine = settings.DATABASES.get("default", {}).get("ENGINE")
    if settings.BALLAST_DASHBOARD_PROCESSES > 1 and engine == SQLITE_ENGINE:
        return [
            Warning(
                f"BALLAST_DASHBOARD_PROCESSES={settings.BALLAST_DASHBOARD_PROCESSES} on "
                "SQLite: concurrent writes wait on one file lock ('database is locked').",
                hint="Set DATABASE_URL to a Postgres database.",
                id="ballast.W002",
            )
        ]
    return []


def check_https_proxy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ballast.W003: HTTPS on, but no way to tell an HTTPS request from a plain one.

    The dashboard serves plain HTTP itself; HTTPS comes from a TLS proxy in front. Unless
    that proxy's header is trusted, every request looks like plain HTTP, so each one is
    redirected to https:// again (a redirect loop) and the websocket Origin check expects
    http:// pages.
    """
    if settings.SECURE_SSL_REDIRECT and not settings.SECURE_PROXY_SSL_HEADER:
        return [
            Warning(
                "BALLAST_HTTPS is on but BALLAST_PROXY_SSL_HEADER is not set: every request "
                "arrives as plain HTTP from the TLS proxy and is redirected to https:// again.",
                hint="Set BALLAST_PROXY_SSL_HEADER to the header your TLS proxy sets "
                "(e.g. X-Forwarded-Proto: https).",
                id="ballast.W003",
            )
        ]
    return []


def check_plotly_installed(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """ballast.E002: the service page's charts need plotly.js, which `make install`
    copies from npm (it is not in git)."""
    from dashboard.app.assets import PLOTLY_MISSING, plotly_installed

    if plotly_installed():
        return []
    return [
        Error(
            PLOTLY_MISSING,
            hint="Node.js and npm come from your system (Debian: apt-get install nodejs npm).",
            id="ballast.E002",
        )
    ]


def is_loopback(host: str) -> bool:
    """True for names that only this machine reaches: localhost (and *.localhost),
    127.0.0.0/8 and ::1. A wildcard (``*``, ``.example.com``) is not loopback."""
    name = host.strip("[]").lower()
    if name in ("localhost", ".localhost") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
