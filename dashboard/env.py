"""Settings from the environment: small readers that fail loudly, and the builders of
the settings that depend on a URL.

Every reader takes the environment as an argument (``os.environ`` by default), so tests
pass a plain dict. A bad value raises ``ImproperlyConfigured`` naming the variable and
the value, at start, rather than misbehaving later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from balancer.tls import ClientTls, check_ca, check_key_pair

if TYPE_CHECKING:
    from platforms.kubernetes import KubernetesSettings

Environ = Mapping[str, str]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def one_line(err: BaseException) -> str:
    """An error's message on one line (Django's own messages may span several)."""
    return " ".join(str(err).split())


def envstr(name: str, default: str, environ: Environ = os.environ) -> str:
    """The value of NAME, stripped; ``default`` when unset or blank."""
    value = environ.get(name, "").strip()
    return value or default


def envbool(name: str, default: bool, environ: Environ = os.environ) -> bool:
    """NAME as a boolean (1/true/yes/on, 0/false/no/off); ``default`` when unset or blank."""
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use true or false")


def envint(
    name: str,
    default: int,
    environ: Environ = os.environ,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """NAME as an integer within [minimum, maximum]; ``default`` when unset or blank."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r}: must be at most {maximum}")
    return value


def envlist(
    name: str,
    default: str,
    environ: Environ = os.environ,
    *,
    pattern: re.Pattern[str] | None = None,
) -> list[str]:
    """NAME as a comma-separated list (blank items dropped); each item must match
    ``pattern`` when one is given."""
    items = [item.strip() for item in envstr(name, default, environ).split(",")]
    items = [item for item in items if item]
    for item in items:
        if pattern is not None and not pattern.fullmatch(item):
            raise ImproperlyConfigured(f"{name}: item {item!r} does not match {pattern.pattern!r}")
    return items


def envmap(
    name: str,
    default: str,
    environ: Environ = os.environ,
    *,
    key: re.Pattern[str] | None = None,
) -> dict[str, str]:
    """NAME as comma-separated ``key=value`` items, in order; each key must match ``key``
    when one is given, and appear once."""
    pairs: dict[str, str] = {}
    for item in envlist(name, default, environ):
        k, sep, v = (part.strip() for part in item.partition("="))
        if not sep or not k or not v:
            raise ImproperlyConfigured(f"{name}: item {item!r} is not key=value")
        if key is not None and not key.fullmatch(k):
            raise ImproperlyConfigured(f"{name}: key {k!r} does not match {key.pattern!r}")
        if k in pairs:
            raise ImproperlyConfigured(f"{name}: key {k!r} appears twice")
        pairs[k] = v
    return pairs


def address_error(address: str) -> str | None:
    """Why ``address`` is not ``host:port`` (an IPv6 host in brackets, a port in
    1..65535); None when it is."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return "not host:port (e.g. 10.0.0.2:9901)"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return "an IPv6 address needs brackets, as in [::1]:9901"
    return None


def envaddresses(
    name: str,
    default: str,
    environ: Environ = os.environ,
    *,
    key: re.Pattern[str] | None = None,
) -> dict[str, str]:
    """NAME as comma-separated ``id=host:port`` items (see `envmap`), every address checked."""
    pairs = envmap(name, default, environ, key=key)
    for k, address in pairs.items():
        error = address_error(address)
        if error:
            raise ImproperlyConfigured(f"{name}: {k}={address!r}: {error}")
    return pairs


_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def envheader(name: str, environ: Environ = os.environ) -> str | None:
    """NAME as the ``request.META`` key of an HTTP header: ``X-Forwarded-Proto`` and
    ``HTTP_X_FORWARDED_PROTO`` both give ``HTTP_X_FORWARDED_PROTO``; None when unset."""
    raw = envstr(name, "", environ)
    if not raw:
        return None
    if not _HEADER_NAME.fullmatch(raw):
        raise ImproperlyConfigured(f"{name}={raw!r}: not a header name (e.g. X-Forwarded-Proto)")
    key = raw.upper().replace("-", "_")
    return key if key.startswith("HTTP_") else f"HTTP_{key}"


def envsecret(name: str, environ: Environ = os.environ) -> str | None:
    """The value of NAME, or the contents of the file named by NAME_FILE (stripped).

    Returns None when neither is set. Setting both is an error: which one wins
    would be a guess. An unreadable or empty file is an error too.
    """
    path = environ.get(f"{name}_FILE", "").strip()
    if not path:
        return environ.get(name, "").strip() or None
    if environ.get(name, "").strip():
        raise ImproperlyConfigured(f"{name} and {name}_FILE are both set: set one")
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ImproperlyConfigured(f"{name}_FILE={path!r}: {err.strerror}") from None
    if not value:
        raise ImproperlyConfigured(f"{name}_FILE={path!r}: the file is empty")
    return value


def envtls(prefix: str, environ: Environ = os.environ) -> ClientTls | None:
    """How to reach a TLS server, from ``<prefix>_CA_FILE``, ``<prefix>_CERT_FILE`` +
    ``<prefix>_KEY_FILE`` (a client certificate, for mTLS) and ``<prefix>_SERVER_NAME``
    (the name the server's certificate carries, when not the address's host).

    None (plaintext) when none is set. The files are checked now: a missing or unreadable
    file, or a key that does not match its certificate, names the variable.
    """
    keys = ("ca_file", "cert_file", "key_file", "server_name")
    names = {k: f"{prefix}_{k.upper()}" for k in keys}
    values = {k: environ.get(name, "").strip() or None for k, name in names.items()}
    if not any(values.values()):
        return None
    cert, key = values["cert_file"], values["key_file"]
    if (cert is None) != (key is None):
        raise ImproperlyConfigured(
            f"{names['cert_file']} and {names['key_file']} go together: set both for a"
            " client certificate, or neither"
        )
    try:
        if values["ca_file"] is not None:
            check_ca(names["ca_file"], values["ca_file"])
        if cert is not None and key is not None:
            check_key_pair(cert, key, cert_name=names["cert_file"], key_name=names["key_file"])
        return ClientTls(**values)
    except ValueError as err:
        raise ImproperlyConfigured(str(err)) from None


def database_settings(url: str | None, sqlite_path: Path) -> dict[str, Any]:
    """The ``default`` database: from a ``DATABASE_URL`` (postgres://…) when given,
    else SQLite at ``sqlite_path``."""
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            # Writers take the lock when their transaction begins and wait for each other
            # (up to 20 s) instead of failing at once with "database is locked" when a read
            # turns into a write: the dashboard's requests, operations and collector write
            # from several threads.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
            # Tests use a file beside it, not Django's shared-cache in-memory database, whose
            # table locks fail a concurrent writer at once instead of making it wait.
            "TEST": {"NAME": str(sqlite_path.with_name(f"{sqlite_path.stem}-test.sqlite3"))},
        }
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in _DATABASE_SCHEMES:
        # Never echo the URL: it may hold a password.
        raise ImproperlyConfigured(
            f"DATABASE_URL: scheme {scheme!r} is not one of {', '.join(sorted(_DATABASE_SCHEMES))}"
            " (e.g. postgres://user:password@host:5432/ballast; unset it for SQLite)"
        )
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
    except ValueError as err:
        raise ImproperlyConfigured(f"DATABASE_URL: {err}") from None
    return config


# The databases the dashboard is tested on: Postgres (``ballast[postgres]``) and SQLite.
_DATABASE_SCHEMES = frozenset({"postgres", "postgresql", "pgsql", "sqlite"})


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def channel_layer_settings(redis_url: str | None) -> dict[str, Any]:
    """The ``default`` channel layer: Redis when ``REDIS_URL`` is given, else in memory
    (one process only: groups do not cross processes)."""
    if not redis_url:
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    try:
        parts = urlsplit(redis_url)
        parts.port  # noqa: B018 -- parses the port: ValueError when it is not a number
    except ValueError as err:
        raise ImproperlyConfigured(
            f"REDIS_URL: not a URL ({err}); e.g. redis://host:6379/0"
        ) from None
    scheme = parts.scheme
    if scheme not in _REDIS_SCHEMES:
        # Never echo the URL: it may hold a password.
        raise ImproperlyConfigured(
            f"REDIS_URL: scheme {scheme!r} is not one of {', '.join(sorted(_REDIS_SCHEMES))}"
        )
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [redis_url]},
    }


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@h:6379`` → ``redis://:***@h:6379``),
    for messages; unchanged when it has none or does not parse."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


PLATFORMS = ("kubernetes",)


def envplatform(environ: Environ = os.environ) -> str | None:
    """``BALLAST_PLATFORM``: the platform the control plane restarts and lists pods on
    (``kubernetes``); None when unset (no platform: frames have no pod facts)."""
    value = envstr("BALLAST_PLATFORM", "", environ).lower()
    if not value or value == "none":
        return None
    if value not in PLATFORMS:
        raise ImproperlyConfigured(
            f"BALLAST_PLATFORM={value!r}: use {' or '.join(PLATFORMS)}, or unset it for none"
        )
    return value


def envkubernetes(environ: Environ = os.environ) -> KubernetesSettings:
    """The Kubernetes platform's `KubernetesSettings` from ``BALLAST_KUBECONFIG`` (a
    kubeconfig file; else ``KUBECONFIG``, else ~/.kube/config, and in a pod — when
    ``KUBERNETES_SERVICE_HOST`` is set — its service account), ``BALLAST_KUBE_CONTEXT``
    (else the current context) and ``BALLAST_KUBE_NAMESPACE`` (else the context's,
    in a pod its own). A kubeconfig that is named but missing names the variable."""
    # Imported here: only a dashboard on Kubernetes needs the client.
    from platforms.kubernetes import KubernetesConfigError, KubernetesSettings

    kubeconfig = envstr("BALLAST_KUBECONFIG", "", environ) or None
    if kubeconfig is not None and not Path(kubeconfig).expanduser().is_file():
        raise ImproperlyConfigured(
            f"BALLAST_KUBECONFIG={kubeconfig!r}: no such file; name a kubeconfig file, or unset"
            " it (KUBECONFIG, ~/.kube/config, or the pod's service account in a cluster)"
        )
    try:
        settings: KubernetesSettings = KubernetesSettings.from_environment(
            environ,
            kubeconfig=str(Path(kubeconfig).expanduser()) if kubeconfig else None,
            context=envstr("BALLAST_KUBE_CONTEXT", "", environ) or None,
            namespace=envstr("BALLAST_KUBE_NAMESPACE", "", environ) or None,
        )
        return settings
    except KubernetesConfigError as err:
        raise ImproperlyConfigured(f"BALLAST_PLATFORM=kubernetes: {err}") from None


_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def envservice(name: str, environ: Environ = os.environ) -> tuple[str, str] | None:
    """NAME as a Kubernetes Service, ``namespace/name`` or ``name`` → (namespace or "",
    name); None when unset."""
    raw = envstr(name, "", environ)
    if not raw:
        return None
    namespace, sep, service = raw.rpartition("/")
    parts = [namespace, service] if sep else [service]
    if not all(_K8S_NAME.fullmatch(p) for p in parts):
        raise ImproperlyConfigured(
            f"{name}={raw!r}: not a Service as 'name' or 'namespace/name'"
            " (e.g. ballast/ballast-balancer-admin)"
        )
    return namespace, service


def envport(name: str, default: str, environ: Environ = os.environ) -> int | str:
    """NAME as a port: a number (1..65535) or a port's name (``admin``)."""
    raw = envstr(name, default, environ)
    if raw.isdigit():
        if not 1 <= int(raw) <= 65535:
            raise ImproperlyConfigured(f"{name}={raw!r}: a port number is 1 to 65535")
        return int(raw)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?", raw):
        raise ImproperlyConfigured(f"{name}={raw!r}: not a port number or a port's name")
    return raw
