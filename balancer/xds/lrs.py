"""LRS (envoy.service.load_stats.v3): proxyless clients report the calls they made, per pod.

CDS names this same server as each cluster's `lrs_server`, so every proxyless
client opens one load-reporting stream; the server asks for every cluster at
`interval_s`. Each endpoint has a locality of its own (sub_zone = endpoint id),
so a locality's report is that pod's: calls issued, succeeded, errored since
the last report, and in progress now. `LoadStore` adds them up into cumulative
per-endpoint counters, the "proxyless" source next to the proxy's own stats.

Only clusters and endpoints the balancer knows are counted: a client cannot
make the store grow with names of its own.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc.aio
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from google.protobuf import duration_pb2

from balancer.cluster import Cluster

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_INTERVAL_S = 1.0
_PRUNE_EVERY = 100  # reports


@dataclass
class ProxylessCounters:
    """Cumulative calls proxyless clients made to one endpoint; `in_progress` is a gauge."""

    issued: int = 0
    succeeded: int = 0
    errored: int = 0
    in_progress: int = 0


Key = tuple[str, str]  # (cluster, endpoint id)


class LoadStore:
    """Per-endpoint counters from every client's load reports."""

    def __init__(self, clusters: Mapping[str, Cluster]) -> None:
        self._clusters = clusters
        self._totals: dict[Key, ProxylessCounters] = {}
        # The in-progress gauge each stream last reported, per endpoint: summed on read.
        self._in_progress: dict[int, dict[Key, int]] = {}
        self._reports = 0

    def record(self, stream_id: int, request: lrs_pb2.LoadStatsRequest) -> None:
        """Adds one report's counts; every `_PRUNE_EVERY` reports, forgets removed endpoints."""
        self._reports += 1
        if self._reports % _PRUNE_EVERY == 0:
            self.prune()
        gauges = self._in_progress.setdefault(stream_id, {})
        for stats in request.cluster_stats:
            cluster = self._clusters.get(stats.cluster_name)
            if cluster is None:
                continue
            for locality in stats.upstream_locality_stats:
                endpoint_id = locality.locality.sub_zone
                if endpoint_id not in cluster.endpoints:
                    continue
                key = (cluster.name, endpoint_id)
                totals = self._totals.setdefault(key, ProxylessCounters())
                totals.issued += locality.total_issued_requests
                totals.succeeded += locality.total_successful_requests
                totals.errored += locality.total_error_requests
                gauges[key] = locality.total_requests_in_progress

    def forget_stream(self, stream_id: int) -> None:
        """A client went away: its calls in progress are no longer counted."""
        self._in_progress.pop(stream_id, None)

    def counters(self, cluster: str, endpoint_id: str) -> ProxylessCounters:
        """The endpoint's cumulative counters (zeros when no client reported it)."""
        key = (cluster, endpoint_id)
        totals = self._totals.get(key, ProxylessCounters())
        # Copied first: a metrics scrape reads from its own thread while the loop writes.
        in_progress = sum(g.get(key, 0) for g in list(self._in_progress.values()))
        return ProxylessCounters(totals.issued, totals.succeeded, totals.errored, in_progress)

    def prune(self) -> None:
        """Forgets endpoints their cluster no longer has (pods come and go: the store would
        otherwise grow with every pod name ever seen)."""
        for key in [k for k in self._totals if k[1] not in self._endpoints_of(k[0])]:
            del self._totals[key]
        for gauges in self._in_progress.values():
            for key in [k for k in gauges if k[1] not in self._endpoints_of(k[0])]:
                del gauges[key]

    def _endpoints_of(self, cluster: str) -> Mapping[str, object]:
        found = self._clusters.get(cluster)
        return {} if found is None else found.endpoints


class LrsService(lrs_pb2_grpc.LoadReportingServiceServicer):  # type: ignore[misc]
    """Asks every client for all clusters' loads every `interval_s`, into `store`."""

    def __init__(self, store: LoadStore, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._store = store
        self._interval_s = interval_s
        self._stream_ids = itertools.count(1)

    async def StreamLoadStats(
        self, request_iterator: AsyncIterator[lrs_pb2.LoadStatsRequest], context: Context
    ) -> None:
        stream_id = next(self._stream_ids)
        answered = False
        try:
            async for request in request_iterator:
                if not answered:  # the first request only says who the client is
                    answered = True
                    log.info("xds: load reports from %s (%s)", request.node.id, context.peer())
                    await context.write(self._response())
                self._store.record(stream_id, request)
        finally:
            self._store.forget_stream(stream_id)

    def _response(self) -> lrs_pb2.LoadStatsResponse:
        seconds, fraction = divmod(self._interval_s, 1)
        interval = duration_pb2.Duration(seconds=int(seconds), nanos=int(fraction * 1e9))
        return lrs_pb2.LoadStatsResponse(send_all_clusters=True, load_reporting_interval=interval)
