"""The `ballast.admin.v1.Admin` service: snapshots, a stream of them, and the operator's controls.

Bad requests end with a status an operator can act on: NOT_FOUND for an
unknown cluster or endpoint (the message lists the ones that exist),
INVALID_ARGUMENT for a value out of range (the message gives the range).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import grpc.aio

from balancer.admin import messages
from balancer.admin.snapshot import Reader
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.cluster import Cluster, UnknownEndpoint
from balancer.endpoint import Endpoint, IllegalTransition

if TYPE_CHECKING:
    from balancer.server import Balancer

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

# Faster than this, snapshots would cost more than the traffic they describe.
MIN_WATCH_INTERVAL_MS = 100


class UnknownCluster(KeyError):
    """No cluster with that name in the balancer."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Missing(ValueError):
    """A required request field is empty."""


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, balancer: Balancer, reader: Reader) -> None:
        self._balancer = balancer
        self._reader = reader

    # --- reading ----------------------------------------------------------------------------

    async def ListClusters(
        self, request: admin_pb2.ListClustersRequest, context: Context
    ) -> admin_pb2.ListClustersResponse:
        view = self._reader.balancer()
        return admin_pb2.ListClustersResponse(
            clusters=[messages.cluster_info(c) for c in view.clusters]
        )

    async def GetSnapshot(
        self, request: admin_pb2.GetSnapshotRequest, context: Context
    ) -> admin_pb2.Snapshot:
        clusters = await self._run(context, lambda: self._clusters(request.clusters))
        return messages.snapshot_message(self._reader.balancer(clusters))

    async def WatchSnapshots(
        self, request: admin_pb2.WatchSnapshotsRequest, context: Context
    ) -> AsyncIterator[admin_pb2.Snapshot]:
        """A snapshot now, then one per interval, on a fixed schedule (no drift).

        A slow reader gets fewer snapshots, not a burst: `yield` waits for the
        transport, and ticks missed meanwhile are skipped.
        """
        if request.interval_ms < MIN_WATCH_INTERVAL_MS:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_ms {request.interval_ms} is too short:"
                f" use at least {MIN_WATCH_INTERVAL_MS} (ms)",
            )
        clusters = await self._run(context, lambda: self._clusters(request.clusters))
        interval_s = request.interval_ms / 1000
        loop = asyncio.get_running_loop()
        due_s = loop.time()
        while True:
            yield messages.snapshot_message(self._reader.balancer(clusters))
            now_s = loop.time()
            due_s += interval_s
            if due_s < now_s:  # the reader was slow: go on with the next tick still ahead
                due_s += ((now_s - due_s) // interval_s + 1) * interval_s
            await asyncio.sleep(due_s - now_s)

    # --- operator controls ------------------------------------------------------------------

    async def SetWeight(
        self, request: admin_pb2.SetWeightRequest, context: Context
    ) -> admin_pb2.EndpointSnapshot:
        def change(cluster: Cluster, endpoint_id: str) -> Endpoint:
            return cluster.set_weight(endpoint_id, request.weight)

        return await self._change_endpoint(context, request.cluster, request.endpoint_id, change)

    async def Drain(
        self, request: admin_pb2.DrainRequest, context: Context
    ) -> admin_pb2.EndpointSnapshot:
        timeout_s = request.timeout_ms / 1000 if request.timeout_ms else None

        def change(cluster: Cluster, endpoint_id: str) -> Endpoint:
            return cluster.drain(endpoint_id, timeout_s)

        return await self._change_endpoint(context, request.cluster, request.endpoint_id, change)

    async def Undrain(
        self, request: admin_pb2.UndrainRequest, context: Context
    ) -> admin_pb2.EndpointSnapshot:
        return await self._change_endpoint(
            context, request.cluster, request.endpoint_id, Cluster.undrain
        )

    async def SetPolicy(
        self, request: admin_pb2.SetPolicyRequest, context: Context
    ) -> admin_pb2.ClusterSnapshot:
        def change() -> Cluster:
            cluster = self._cluster(request.cluster)
            cluster.set_policy(request.policy)
            return cluster

        cluster = await self._run(context, change)
        return messages.cluster_message(self._reader.cluster(cluster))

    # --- helpers ----------------------------------------------------------------------------

    async def _change_endpoint(
        self,
        context: Context,
        cluster_name: str,
        endpoint_id: str,
        change: Callable[[Cluster, str], Endpoint],
    ) -> admin_pb2.EndpointSnapshot:
        def run() -> Endpoint:
            cluster = self._cluster(cluster_name)
            if not endpoint_id:
                known = ", ".join(sorted(cluster.endpoints)) or "none"
                raise _Missing(f"endpoint_id is required (endpoints of {cluster_name!r}: {known})")
            return change(cluster, endpoint_id)

        ep = await self._run(context, run)
        return messages.endpoint_message(self._reader.endpoint(ep))

    async def _run(self, context: Context, work: Callable[[], T]) -> T:
        """Runs `work`, turning the errors of a bad request into the call's status."""
        try:
            return work()
        except (UnknownCluster, UnknownEndpoint) as err:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(err))
        except IllegalTransition as err:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:  # check_weight, set_policy, _Missing
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))

    def _cluster(self, name: str) -> Cluster:
        """The cluster named `name`; raises naming the clusters that exist."""
        clusters = self._balancer.clusters
        cluster = clusters.get(name)
        if cluster is not None:
            return cluster
        known = ", ".join(sorted(clusters)) or "none"
        if not name:
            raise _Missing(f"cluster is required (clusters: {known})")
        raise UnknownCluster(f"no cluster named {name!r} (clusters: {known})")

    def _clusters(self, names: Sequence[str]) -> list[Cluster] | None:
        """The clusters named, in that order; None (every cluster) when `names` is empty."""
        if not names:
            return None
        return [self._cluster(name) for name in dict.fromkeys(names)]


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("abort raises")
