"""Request rates the pods report themselves, from their Prometheus /metrics.

The balancer sees only the calls it carries. Clients that bypass it (through
the L4 Service) are visible only at the pods, which count every call they
handle in `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`
(go-grpc-prometheus names; demo/workload/metrics.py). Two consecutive scrapes
of a pod give its requests per second from all clients, and its errors per
second (every code but OK).

The rate math is rates.py's: each scrape becomes a `rates.Sample` with one
"endpoint" per method (its counts by code), and a `RateTracker` per pod turns
consecutive samples into rates. So the rules are the balancer's: no figure
from the first scrape; a series new since the last scrape, or one whose count
went down (the pod restarted), counts from zero; a new pod start time (the
platform's `started_at_s`) counts every series from that start. Rates are
taken per series, then summed, so one method's reset cannot hide in another's
growth.

Parsing is pure (`pod_sample`, `pod_rates`); `PodScraper` does the fetching,
concurrently across pods, and keeps each pod's last figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from dashboard.collector.rates import (
    EndpointCounters,
    EndpointKey,
    EndpointRates,
    RateTracker,
    Sample,
)
from platforms.base import PodFacts

log = logging.getLogger(__name__)

HANDLED = "grpc_server_handled_total"
# Probes, not traffic: the platform's readiness checks and the balancer's health checks
# would otherwise add a steady few calls per second to every pod, and the collector's own
# channelz reads (pinning/) would count as calls that bypass Ballast.
NOT_TRAFFIC = frozenset({"grpc.health.v1.Health", "grpc.channelz.v1.Channelz"})
SCRAPE_TIMEOUT_S = 1.0

# Pods are scraped directly: an http_proxy in the environment is meant for the outside world.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Fetch = Callable[[str, float], Awaitable[str]]
WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PodRates:
    """What a pod says it handled over the interval between two scrapes, from every client."""

    rps: float
    errors_per_s: float  # every grpc_code but OK
    # Calls per second by "service/method" (the methods it exports, idle ones at 0): a
    # breakdown of `rps`, left out of comparisons.
    rps_by_method: Mapping[str, float] = field(default_factory=dict, compare=False)


def handled_by_method(text: str) -> dict[str, dict[str, int]]:
    """`grpc_server_handled_total` of an exposition: "service/method" → code → count,
    health checks left out.

    Raises ValueError for text that is not the Prometheus text format.
    """
    out: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == HANDLED and s.labels.get("grpc_service") not in NOT_TRAFFIC:
                method = f"{s.labels.get('grpc_service', '')}/{s.labels.get('grpc_method', '')}"
                code = s.labels.get("grpc_code", "")
                by_code = out.setdefault(method, {})
                by_code[code] = by_code.get(code, 0) + round(s.value)
    return out


def pod_sample(pod: str, text: str, taken_at_unix_ms: int, started_at_s: float | None) -> Sample:
    """One scrape of `pod` as a rates.Sample: one endpoint (pod, "service/method") per method.

    The fields only a balancer knows (state, weights, bytes, latency) are zero.
    `started_at_s` is the platform's start time of the pod (None when unknown).
    """
    endpoints = {
        (pod, method): _counters(pod, method, by_code)
        for method, by_code in handled_by_method(text).items()
    }
    started_ms = 0 if started_at_s is None else round(started_at_s * 1000)
    return Sample(pod, taken_at_unix_ms, started_ms, (), endpoints)


def _counters(pod: str, method: str, by_code: Mapping[str, int]) -> EndpointCounters:
    return EndpointCounters(
        cluster=pod,
        endpoint_id=method,
        pod_name=pod,
        state="UNSPECIFIED",
        weight=0,
        effective_weight=0.0,
        in_flight=0,
        requests_by_code=by_code,
        bytes_received=0,
        bytes_sent=0,
        latency_counts=(),
    )


def pod_rates(per_method: Mapping[EndpointKey, EndpointRates]) -> PodRates:
    """The pod's figures: its methods' rates added up."""
    return PodRates(
        rps=sum(r.rps for r in per_method.values()),
        errors_per_s=sum(r.errors_per_s for r in per_method.values()),
        rps_by_method={method: r.rps for (_, method), r in per_method.items()},
    )


async def fetch_metrics(address: str, timeout_s: float) -> str:
    """GETs http://<address>/metrics in a worker thread; raises what urllib raises."""
    return await asyncio.to_thread(_get, f"http://{address}/metrics", timeout_s)


def _get(url: str, timeout_s: float) -> str:
    with _DIRECT.open(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode()


class PodScraper:
    """Scrapes pods' /metrics and keeps each pod's last `PodRates`.

    A pod has a figure once two scrapes of it succeeded, and only if it
    exports `grpc_server_handled_total`. A failed scrape takes its figure away
    (logged once until it answers again) but keeps the last good scrape as the
    baseline; a pod no longer listed is forgotten.
    """

    def __init__(
        self,
        fetch: Fetch = fetch_metrics,
        *,
        clock: WallClock = time.time,
        timeout_s: float = SCRAPE_TIMEOUT_S,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._timeout_s = timeout_s
        self._trackers: dict[str, RateTracker] = {}
        self._rates: dict[str, PodRates] = {}
        self._failing: set[str] = set()

    @property
    def rates(self) -> dict[str, PodRates]:
        """Pod name → its last figures; a pod without any is absent."""
        return dict(self._rates)

    async def scrape(self, pods: Iterable[PodFacts]) -> None:
        """Scrapes every pod with a metrics address at once; never raises for a pod."""
        targets = {p.name: p for p in pods if p.metrics_address}
        for gone in (self._trackers.keys() | self._failing) - targets.keys():
            self.forget(gone)
        await asyncio.gather(*(self._scrape_one(p) for p in targets.values()))

    async def _scrape_one(self, pod: PodFacts) -> None:
        assert pod.metrics_address is not None
        try:
            text = await self._fetch(pod.metrics_address, self._timeout_s)
            sample = pod_sample(pod.name, text, int(self._clock() * 1000), pod.started_at_s)
        except Exception as err:  # a pod's answer must never stop the collector
            self.failed(pod, err)
            return
        self.observe(pod.name, sample)

    def observe(self, pod: str, sample: Sample) -> PodRates | None:
        """Takes one scrape of `pod`; returns its figures, None when there are none yet."""
        if pod in self._failing:
            self._failing.discard(pod)
            log.info("pod %s: /metrics answers again", pod)
        per_method = self._trackers.setdefault(pod, RateTracker()).observe(sample)
        if per_method:
            self._rates[pod] = pod_rates(per_method)
        elif per_method is not None:  # it exports no grpc_server_handled_total: no figure
            self._rates.pop(pod, None)
        return self._rates.get(pod)

    def failed(self, pod: PodFacts, err: Exception) -> None:
        """A scrape of `pod` failed: it has no figures until one succeeds."""
        self._rates.pop(pod.name, None)
        if pod.name in self._failing:
            log.debug("pod %s: scraping %s failed again: %r", pod.name, pod.metrics_address, err)
            return
        self._failing.add(pod.name)
        log.info(
            "pod %s: scraping http://%s/metrics failed (%r); no pod rates until it answers",
            pod.name,
            pod.metrics_address,
            err,
        )

    def forget(self, pod: str) -> None:
        self._trackers.pop(pod, None)
        self._rates.pop(pod, None)
        self._failing.discard(pod)
