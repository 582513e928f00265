"""The collector as the dashboard runs it: its config from the settings, its frames out to
the channel layer and into the page history.

Both ways of running it use this: embedded in the dashboard process (`python -m
dashboard`, `make demo`) and alone (`manage.py runcollector`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dashboard.app.history import HISTORY_WINDOW_S, service_history
from dashboard.app.live import publish_frame
from dashboard.collector.frames import ServiceFrame
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from platforms.base import Platform


def collector_config(
    balancers: Mapping[str, str] | None = None, token: str | None = None
) -> CollectorConfig:
    """The collector's config: the replicas (`balancers`, id → admin address, and `token`,
    from ``BALLAST_BALANCERS`` and ``BALLAST_ADMIN_TOKEN`` unless given), the services of
    ``BALLAST_SERVICES`` and ``BALLAST_COLLECTOR_INTERVAL_MS``.

    Raises ImproperlyConfigured saying what is missing.
    """
    balancers = settings.BALLAST_BALANCERS if balancers is None else balancers
    token = settings.BALLAST_ADMIN_TOKEN if token is None else token
    if not balancers:
        raise ImproperlyConfigured(
            "BALLAST_BALANCERS is not set: name the balancers' admin APIs as id=host:port,..."
        )
    if not token:
        raise ImproperlyConfigured(
            "BALLAST_ADMIN_TOKEN is not set: the balancers' admin API needs its token"
        )
    if not settings.BALLAST_SERVICES:
        raise ImproperlyConfigured("BALLAST_SERVICES is not set: name the services to show")
    try:
        return CollectorConfig(
            replicas=_replicas(balancers, token),
            # Each service is the balancer cluster and the platform deployment of its name.
            services={name: ServiceTarget(name, name) for name in settings.BALLAST_SERVICES},
            interval_s=settings.BALLAST_COLLECTOR_INTERVAL_MS / 1000,
            history_window_s=HISTORY_WINDOW_S,
        )
    except ValueError as err:
        raise ImproperlyConfigured(str(err)) from None


def _replicas(balancers: Mapping[str, str], token: str) -> Sequence[ReplicaTarget]:
    return [ReplicaTarget(rid, address, token) for rid, address in balancers.items()]


async def publish(frame: ServiceFrame) -> None:
    """Sends a frame to the browsers watching its service, through the channel layer."""
    await publish_frame(get_channel_layer(), frame)


def dashboard_collector(config: CollectorConfig, platform: Platform | None = None) -> Collector:
    """A collector that publishes to the channel layer and keeps its frames in this
    process's page history (what a service page paints first)."""
    return Collector(config, publish, platform=platform, history=service_history())
