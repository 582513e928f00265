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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from balancer.discovery import Update
from balancer.endpoint import Address
from dashboard.app.history import HISTORY_WINDOW_S, service_history
from dashboard.app.live import publish_frame, service_group
from dashboard.collector.frames import FRAME_TYPE, ServiceFrame
from dashboard.collector.replicas import ReplicaFollower
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from dashboard.control import oomguard, operations, runtime
from dashboard.control.autoweigher import AutoWeighter
from dashboard.control.orphans import OrphanSweeper
from dashboard.control.reconciler import Reconciler
from platforms.base import Platform

log = logging.getLogger(__name__)


class WatchesServices(Protocol):
    """A platform that watches a Service's endpoints on a named port (Kubernetes)."""

    def watch_service(
        self, service: str, *, port: int | str | None = None, namespace: str | None = None
    ) -> AsyncIterator[Update]: ...


@dataclass(frozen=True)
class BalancerService:
    """Where the balancer replicas are found: the endpoints of `service` (``namespace/name``
    or ``name``) on `port` (a name or a number), through the platform."""

    service: str
    port: int | str = "admin"


def balancer_service() -> BalancerService | None:
    """``BALLAST_BALANCERS_SERVICE`` and ``BALLAST_BALANCERS_PORT``; None when unset."""
    found = settings.BALLAST_BALANCERS_SERVICE
    if not found:
        return None
    namespace, name = found
    return BalancerService(f"{namespace}/{name}" if namespace else name,
                           settings.BALLAST_BALANCERS_PORT)  # fmt: skip


def platform_from_settings() -> Platform | None:
    """The platform ``BALLAST_PLATFORM`` names, made now (None when unset); raises
    ImproperlyConfigured in one line when the Kubernetes API cannot be configured."""
    if settings.BALLAST_PLATFORM != "kubernetes":
        return None
    # Imported here: only a dashboard on Kubernetes needs the client.
    from platforms.kubernetes import KubernetesConfigError, KubernetesPlatform

    try:
        return KubernetesPlatform(settings.BALLAST_KUBERNETES)
    except KubernetesConfigError as err:
        raise ImproperlyConfigured(f"BALLAST_PLATFORM=kubernetes: {err}") from None


def collector_config(
    balancers: Mapping[str, str] | None = None,
    token: str | None = None,
    *,
    discovered: bool | None = None,
) -> CollectorConfig:
    """The collector's config: the replicas (`balancers`, id → admin address, and `token`,
    from ``BALLAST_BALANCERS`` and ``BALLAST_ADMIN_TOKEN`` unless given), the services of
    ``BALLAST_SERVICES`` and ``BALLAST_COLLECTOR_INTERVAL_MS``. `discovered` (by default:
    ``BALLAST_BALANCERS_SERVICE`` is set): the replicas are found, none is listed.

    Raises ImproperlyConfigured saying what is missing.
    """
    if discovered is None:
        discovered = balancers is None and settings.BALLAST_BALANCERS_SERVICE is not None
    balancers = settings.BALLAST_BALANCERS if balancers is None else balancers
    token = settings.BALLAST_ADMIN_TOKEN if token is None else token
    if not balancers and not discovered:
        raise ImproperlyConfigured(
            "BALLAST_BALANCERS is not set: name the balancers' admin APIs as id=host:port,..."
            " (on Kubernetes: BALLAST_BALANCERS_SERVICE, their admin Service)"
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
    """The collector, the reconciler that keeps the replicas at the desired state and the
    auto-weights controller, started and stopped together; while it runs, the API reaches
    them (and the platform, for restarts) through `dashboard.control.runtime`.

    Beside them, the sweeper that finishes the operations of dead dashboard processes.
    `stop()` first stops the operations this process runs (each undoes its drain while
    the replicas are still reachable), then the rest."""

    def __init__(
        self,
        config: CollectorConfig,
        platform: Platform | None = None,
        *,
        balancers: BalancerService | None = None,
        token: str | None = None,
    ) -> None:
        self.collector = dashboard_collector(config, platform)
        self.reconciler = Reconciler(
            self.collector, config.replicas, pod_gone_grace_s=settings.BALLAST_POD_GONE_GRACE_S
        )
        # Weights from the pods' CPU, for the services an operator turned it on for.
        self.autoweigher = AutoWeighter(self.collector)
        self.platform = platform
        self.sweeper: OrphanSweeper | None = None
        self.oom_guard = oomguard.OomGuard(self.collector, oomguard.config_from_settings())
        self.follower = None if balancers is None else self._follower(balancers, token)

    def _follower(self, balancers: BalancerService, token: str | None) -> ReplicaFollower:
        """Replicas from the admin Service's endpoints, named by their pods."""
        platform = self.platform
        if platform is None or not hasattr(platform, "watch_service"):
            raise ImproperlyConfigured(
                "BALLAST_BALANCERS_SERVICE needs BALLAST_PLATFORM=kubernetes: the replicas are"
                " found through the Kubernetes API"
            )
        watcher: WatchesServices = platform  # type: ignore[assignment]
        admin_token = token or settings.BALLAST_ADMIN_TOKEN or ""
        if not admin_token:
            raise ImproperlyConfigured(
                "BALLAST_ADMIN_TOKEN is not set: the balancers' admin API needs its token"
            )
        tls = settings.BALLAST_ADMIN_TLS

        def target(address: Address) -> ReplicaTarget:
            return ReplicaTarget(address.endpoint_id, address.target, admin_token, tls)

        return ReplicaFollower(
            lambda: watcher.watch_service(balancers.service, port=balancers.port),
            target,
            self.set_replicas,
        )

    def set_replicas(self, targets: Sequence[ReplicaTarget]) -> None:
        """The replicas from now on: the collector follows their streams, the reconciler
        holds them (a new one gets the desired state at its first snapshot) and the API
        pushes to them."""
        targets = tuple(targets)
        self.collector.set_replicas(targets)
        self.reconciler.set_targets(targets)
        if runtime.current().collector is self.collector:
            runtime.current().replicas = targets

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
        await self.autoweigher.start()
        self.sweeper = OrphanSweeper(self.collector, runtime.current().owner)
        await self.sweeper.start()
        await self.oom_guard.start()
        if self.follower is not None:
            await self.follower.start()

    async def stop(self) -> None:
        await self.oom_guard.stop()  # first: it must start no restart while they stop
        await operations.stop_owned()
        if self.follower is not None:
            await self.follower.stop()
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.autoweigher.stop()
        await self.reconciler.stop()
        await self.collector.stop()
        runtime.reset()


def control_plane_from_settings() -> ControlPlane:
    """The control plane as the settings describe it: the platform of ``BALLAST_PLATFORM``
    and the replicas of ``BALLAST_BALANCERS`` or, found, ``BALLAST_BALANCERS_SERVICE``.
    Raises ImproperlyConfigured in one line."""
    platform = platform_from_settings()
    return ControlPlane(collector_config(), platform, balancers=balancer_service())


def collects_here() -> bool:
    """Whether the settings name the balancers (listed or found)."""
    return bool(settings.BALLAST_BALANCERS or settings.BALLAST_BALANCERS_SERVICE)


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
