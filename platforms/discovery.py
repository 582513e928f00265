"""Balancer discovery from a platform: a cluster's endpoints are a service's pods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from balancer.config import ClusterConfig
from balancer.discovery import Discovery, Update
from balancer.server import DiscoveryFactory, static_discovery
from platforms.base import Platform

if TYPE_CHECKING:
    from platforms.kubernetes import KubernetesPlatform, KubernetesSettings


class PlatformDiscovery:
    """The pods of `service` on `platform`, with their names and readiness."""

    def __init__(self, platform: Platform, service: str) -> None:
        self._platform = platform
        self._service = service

    def watch(self) -> AsyncIterator[Update]:
        return self._platform.watch_endpoints(self._service)


def discovery_from(platform: Platform) -> DiscoveryFactory:
    """A Balancer discovery factory: kind `platform` from `platform`, `static` as usual."""

    def discovery(config: ClusterConfig) -> Discovery:
        service = config.discovery.service
        if config.discovery.kind == "platform" and service is not None:
            return PlatformDiscovery(platform, service)
        return static_discovery(config)

    return discovery


class KubernetesDiscovery:
    """A cluster's endpoints from its Service's EndpointSlices (`discovery.kind = "kubernetes"`)."""

    def __init__(self, platform: KubernetesPlatform, config: ClusterConfig) -> None:
        self._platform = platform
        self._discovery = config.discovery

    def watch(self) -> AsyncIterator[Update]:
        d = self._discovery
        assert d.service is not None  # DiscoveryConfig checks it for kind "kubernetes"
        return self._platform.watch_service(d.service, port=d.port, namespace=d.namespace)


def kubernetes_discovery(settings: KubernetesSettings) -> DiscoveryFactory:
    """A Balancer discovery factory: kind `kubernetes` through one platform made from
    `settings` on first use (raises KubernetesConfigError then, naming the cause);
    `static` as usual."""
    # Imported here: only a balancer with Kubernetes discovery needs the client.
    from platforms.kubernetes import KubernetesPlatform

    made: list[KubernetesPlatform] = []

    def discovery(config: ClusterConfig) -> Discovery:
        if config.discovery.kind != "kubernetes":
            return static_discovery(config)
        if not made:
            made.append(KubernetesPlatform(settings))
        return KubernetesDiscovery(made[0], config)

    return discovery
