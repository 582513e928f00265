"""The collector as the dashboard runs it: its config from the settings, its frames out to
the channel layer and into the page history.

Both ways of running it use this: embedded in the dashboard process (`python -m
dashboard`, `make demo`) and alone (`manage.py runcollector`), when `FrameFollower`
fills each dashboard process's page history from the channel layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dashboard.app.history import HISTORY_WINDOW_S, service_history
from dashboard.app.live import publish_frame, service_group
from dashboard.collector.frames import FRAME_TYPE, ServiceFrame
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from dashboard.control import operations, runtime
from dashboard.control.orphans import OrphanSweeper
from dashboard.control.reconciler import Reconciler
from platforms.base import Platform

log = logging.getLogger(__name__)


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
    tls = settings.BALLAST_ADMIN_TLS
    return [ReplicaTarget(rid, address, token, tls) for rid, address in balancers.items()]


async def publish(frame: ServiceFrame) -> None:
    """Sends a frame to the browsers watching its service, through the channel layer."""
    await publish_frame(get_channel_layer(), frame)


def dashboard_collector(config: CollectorConfig, platform: Platform | None = None) -> Collector:
    """A collector that publishes to the channel layer and keeps its frames in this
    process's page history (what a service page paints first)."""
    return Collector(config, publish, platform=platform, history=service_history())


class ControlPlane:
    """The collector and the reconciler that keeps the replicas at the desired state,
    started and stopped together; while it runs, the API reaches them (and the
    platform, for restarts) through `dashboard.control.runtime`.

    Beside them, the sweeper that finishes the operations of dead dashboard processes.
    `stop()` first stops the operations this process runs (each undoes its drain while
    the replicas are still reachable), then the rest."""

    def __init__(self, config: CollectorConfig, platform: Platform | None = None) -> None:
        self.collector = dashboard_collector(config, platform)
        self.reconciler = Reconciler(self.collector, config.replicas)
        self.platform = platform
        self.sweeper: OrphanSweeper | None = None

    async def start(self) -> None:
        runtime.install(
            loop=asyncio.get_running_loop(),
            replicas=tuple(self.collector.config.replicas),
            collector=self.collector,
            platform=self.platform,
            reconciler=self.reconciler,
        )
        await self.collector.start()
        await self.reconciler.start()
        self.sweeper = OrphanSweeper(self.collector, runtime.current().owner)
        await self.sweeper.start()

    async def stop(self) -> None:
        await operations.stop_owned()
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.reconciler.stop()
        await self.collector.stop()
        runtime.reset()


class FrameFollower:
    """Keeps this process's page history filled when the collector runs elsewhere
    (``manage.py runcollector``): it joins every service's group on the channel layer
    and appends the frames that arrive, so pages and websocket backfills here have
    the last 15 minutes too. `start()`, then `stop()`."""

    # Channel layers forget group members after a day (channels-redis' group_expiry);
    # joining again every hour keeps the membership.
    REJOIN_S = 3600.0

    def __init__(self, services: Sequence[str]) -> None:
        self.services = list(services)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await self._join(layer, channel)
        self._task = asyncio.create_task(self._follow(layer, channel), name="frame follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _join(self, layer: Any, channel: str) -> None:
        for service in self.services:
            await layer.group_add(service_group(service), channel)

    async def _follow(self, layer: Any, channel: str) -> None:
        history = service_history()
        loop = asyncio.get_running_loop()
        joined_at = loop.time()
        failing: str | None = None  # said once while the layer stays away
        while True:
            try:
                message = await layer.receive(channel)
                if message.get("type") == FRAME_TYPE and message.get("service") in self.services:
                    history.append_encoded(message["service"], message["t"], message["json"])
                if loop.time() - joined_at > self.REJOIN_S:
                    await self._join(layer, channel)
                    joined_at = loop.time()
                if failing is not None:
                    log.warning("following the frames works again")
                    failing = None
            except asyncio.CancelledError:
                raise
            except Exception as err:  # Redis away for a moment: keep following
                error = f"{type(err).__name__}: {err}"
                if error != failing:
                    log.warning("following the frames failed (%s); retrying every 1 s", error)
                failing = error
                await asyncio.sleep(1.0)
