"""Balancer discovery from a platform: a cluster's endpoints are a service's pods."""

from __future__ import annotations

from collections.abc import AsyncIterator

from balancer.config import ClusterConfig
from balancer.discovery import Discovery, Update
from balancer.server import DiscoveryFactory, static_discovery
from platforms.base import Platform


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
