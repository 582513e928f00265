"""Checks at start that turn a missing dependency into one clear line, not a traceback."""

from __future__ import annotations

import asyncio

from dashboard.env import one_line, redact_url

REDIS_TIMEOUT_S = 5.0


class Unreachable(Exception):
    """A service the dashboard needs does not answer; the message says which and what to do."""


def redis_unreachable(url: str, err: BaseException) -> Unreachable:
    """The one-line error for a Redis at ``url`` (from ``REDIS_URL``) that failed with ``err``."""
    reason = one_line(err).rstrip(".") or type(err).__name__
    return Unreachable(
        f"Redis at {redact_url(url)} (REDIS_URL) is unreachable: {reason}."
        " Start it, fix REDIS_URL, or unset REDIS_URL to run one process with the"
        " in-memory channel layer"
    )


async def check_redis(url: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
    """Raises `Unreachable` unless the Redis at ``url`` answers a PING within ``timeout_s``."""
    import redis.asyncio
    from redis.exceptions import RedisError

    client = redis.asyncio.from_url(url, socket_connect_timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as err:
        raise redis_unreachable(url, err) from None
    finally:
        await client.aclose()


def channel_layer_redis_url() -> str | None:
    """The Redis URL of the configured channel layer; None for the in-memory layer."""
    from django.conf import settings

    layer = settings.CHANNEL_LAYERS.get("default", {})
    if layer.get("BACKEND") != "channels_redis.core.RedisChannelLayer":
        return None
    hosts = layer.get("CONFIG", {}).get("hosts") or []
    return hosts[0] if hosts and isinstance(hosts[0], str) else None
