"""Active health checks with the standard `grpc.health.v1.Health/Check`."""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from balancer.cluster import Cluster
from balancer.config import HealthCheckConfig
from balancer.endpoint import Endpoint

log = logging.getLogger(__name__)


class HealthChecker:
    """Checks every endpoint of a cluster each interval; thresholds turn results into states.

    `healthy_threshold` passes in a row make a PENDING or UNHEALTHY endpoint READY;
    `unhealthy_threshold` failures in a row make it UNHEALTHY. Drained endpoints
    are still checked (as HAProxy does), but their state stays the operator's.
    """

    def __init__(self, cluster: Cluster, config: HealthCheckConfig) -> None:
        self._cluster = cluster
        self._config = config
        self._passes: dict[str, int] = {}
        self._failures: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._config.interval_s)

    async def check_all(self) -> None:
        endpoints = [ep for ep in self._cluster.endpoints.values() if not ep.removed]
        results = await asyncio.gather(*(self.check(ep) for ep in endpoints))
        for ep, (ok, reason) in zip(endpoints, results, strict=True):
            self._apply(ep, ok, reason)
        known = set(self._cluster.endpoints)
        for counts in (self._passes, self._failures):
            for endpoint_id in [i for i in counts if i not in known]:
                del counts[endpoint_id]

    async def check(self, ep: Endpoint) -> tuple[bool, str]:
        """One Health/Check call; returns (passed, why) — never raises for a bad endpoint."""
        if ep.channel is None:
            return False, "no channel"
        stub = health_pb2_grpc.HealthStub(ep.channel)
        request = health_pb2.HealthCheckRequest(service=self._config.service)
        try:
            response = await stub.Check(request, timeout=self._config.timeout_s)
        except grpc.aio.AioRpcError as err:
            return False, f"health check failed: {err.code().name} {err.details() or ''}".strip()
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            return False, f"health check answered {status}"
        return True, "health check passed"

    def _apply(self, ep: Endpoint, ok: bool, reason: str) -> None:
        if not ep.address.ready:
            ok, reason = False, "discovery reports not ready"
        if ok:
            self._failures[ep.id] = 0
            self._passes[ep.id] = passes = self._passes.get(ep.id, 0) + 1
            if passes >= self._config.healthy_threshold:
                self._cluster.set_healthy(ep, reason)
        else:
            self._passes[ep.id] = 0
            self._failures[ep.id] = failures = self._failures.get(ep.id, 0) + 1
            if failures >= self._config.unhealthy_threshold:
                self._cluster.set_unhealthy(ep, reason)
