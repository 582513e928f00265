"""Pod-reported rates: the exposition of a real workload registry, and real /metrics servers."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import generate_latest

from balancer.metrics_http import MetricsServer
from dashboard.collector.scrape import PodRates, PodScraper, handled_by_method, pod_sample
from demo.v1 import workload_pb2 as pb
from demo.workload.behaviour import Misbehaviour
from demo.workload.knobs import Knobs
from demo.workload.metrics import workload_registry
from platforms.base import PodFacts
from tests.support.inventory import dead_port

INVENTORY = "ballast.demo.v1.Inventory"
T0_S = 1_700_000_000.0
STARTED_S = T0_S - 600

KNOWN = f"""\
# HELP grpc_server_started_total Total number of RPCs started on the server.
# TYPE grpc_server_started_total counter
grpc_server_started_total{{grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 14.0
# HELP grpc_server_handled_total Total number of RPCs completed on the server.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{{grpc_code="OK",grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 9.0
grpc_server_handled_total{{grpc_code="UNAVAILABLE",grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 3.0
grpc_server_handled_total{{grpc_code="OK",grpc_method="WatchItems",grpc_service="{INVENTORY}",grpc_type="SERVER_STREAM"}} 2.0
grpc_server_handled_total{{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="UNARY"}} 7.0
# HELP grpc_server_handled_created Total number of RPCs completed on the server.
# TYPE grpc_server_handled_created gauge
grpc_server_handled_created{{grpc_code="OK",grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 1.7e+09
# HELP grpc_server_handling_seconds Histogram of response latency (seconds).
# TYPE grpc_server_handling_seconds histogram
grpc_server_handling_seconds_bucket{{grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY",le="+Inf"}} 12.0
grpc_server_handling_seconds_count{{grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 12.0
grpc_server_handling_seconds_sum{{grpc_method="GetItem",grpc_service="{INVENTORY}",grpc_type="UNARY"}} 0.2
"""  # noqa: E501


class WorkloadMetrics:
    """The demo workload's own metric registry (every series created at zero, as a pod does)."""

    def __init__(self) -> None:
        misbehaviour = Misbehaviour(Knobs(), rng=random.Random(1))
        self.registry, self._metrics = workload_registry("pod", misbehaviour)
        self._metrics.initialize(pb.DESCRIPTOR)

    def handle(self, method: str, code: str, n: int) -> None:
        kind = "SERVER_STREAM" if method == "WatchItems" else "UNARY"
        self._metrics.handled.labels(kind, INVENTORY, method, code).inc(n)

    def text(self) -> str:
        return str(generate_latest(self.registry).decode())


def at_ms(s: float) -> int:
    return round(s * 1000)


def observe(
    scraper: PodScraper, pod: WorkloadMetrics, t_s: float, started_s: float = STARTED_S
) -> PodRates | None:
    return scraper.observe("pod-a", pod_sample("pod-a", pod.text(), at_ms(t_s), started_s))


def test_it_reads_handled_calls_per_method_and_code_leaving_health_checks_out() -> None:
    assert handled_by_method(KNOWN) == {
        f"{INVENTORY}/GetItem": {"OK": 9, "UNAVAILABLE": 3},
        f"{INVENTORY}/WatchItems": {"OK": 2},
    }


def test_it_refuses_text_that_is_not_the_exposition_format() -> None:
    with pytest.raises(ValueError):
        handled_by_method("<html>502 Bad Gateway</html>")


def test_it_has_no_figure_from_the_first_scrape() -> None:
    pod = WorkloadMetrics()
    pod.handle("GetItem", "OK", 500)
    assert observe(PodScraper(), pod, T0_S) is None


def test_it_counts_every_call_and_the_non_ok_ones_per_second() -> None:
    scraper, pod = PodScraper(), WorkloadMetrics()
    pod.handle("GetItem", "OK", 1000)
    observe(scraper, pod, T0_S)
    pod.handle("GetItem", "OK", 30)
    pod.handle("GetItem", "UNAVAILABLE", 6)
    pod.handle("GetItem", "DEADLINE_EXCEEDED", 4)
    pod.handle("WatchItems", "OK", 10)
    assert observe(scraper, pod, T0_S + 2) == PodRates(rps=25.0, errors_per_s=5.0)
    assert scraper.rates == {"pod-a": PodRates(rps=25.0, errors_per_s=5.0)}


def test_it_counts_a_series_that_went_down_from_zero() -> None:
    scraper, pod = PodScraper(), WorkloadMetrics()
    pod.handle("GetItem", "OK", 1000)
    pod.handle("WatchItems", "OK", 10)
    observe(scraper, pod, T0_S)
    # The counters began again at zero (the platform's start time did not change):
    # GetItem went down, so it counts from zero; WatchItems, as in Prometheus's
    # rate(), only shows as grown by 4.
    again = WorkloadMetrics()
    again.handle("GetItem", "OK", 8)
    again.handle("WatchItems", "OK", 14)
    assert observe(scraper, again, T0_S + 2) == PodRates(rps=6.0, errors_per_s=0.0)


def test_it_counts_from_the_pods_new_start_time_after_a_restart() -> None:
    scraper, pod = PodScraper(), WorkloadMetrics()
    pod.handle("GetItem", "OK", 10)
    observe(scraper, pod, T0_S)
    again = WorkloadMetrics()
    again.handle("GetItem", "OK", 50)
    again.handle("GetItem", "INTERNAL", 10)
    # Up for half a second of the 2 s between the scrapes.
    assert observe(scraper, again, T0_S + 2, started_s=T0_S + 1.5) == PodRates(120.0, 20.0)


def test_it_keeps_the_last_figure_for_a_repeated_scrape() -> None:
    scraper, pod = PodScraper(), WorkloadMetrics()
    observe(scraper, pod, T0_S)
    pod.handle("GetItem", "OK", 10)
    assert observe(scraper, pod, T0_S + 1) == PodRates(10.0, 0.0)
    assert observe(scraper, pod, T0_S + 1) == PodRates(10.0, 0.0)


def test_it_has_no_figure_for_a_pod_without_grpc_server_metrics() -> None:
    scraper = PodScraper()
    text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
    for t_s in (T0_S, T0_S + 1):
        assert scraper.observe("pod-x", pod_sample("pod-x", text, at_ms(t_s), None)) is None
    assert scraper.rates == {}


# ---- against real /metrics servers -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_s = T0_S

    def __call__(self) -> float:
        return self.now_s


Serve = Callable[[WorkloadMetrics], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serves a registry on a real /metrics server on port 0; returns host:port."""
    servers: list[MetricsServer] = []

    async def start(pod: WorkloadMetrics, port: int = 0) -> str:
        server = MetricsServer(pod.registry, "127.0.0.1", port)
        servers.append(server)
        return f"127.0.0.1:{server.start()}"

    yield start
    for server in servers:
        await asyncio.to_thread(server.stop)  # it blocks up to half a second


def facts(name: str, metrics_address: str | None) -> PodFacts:
    return PodFacts(
        name, "inventory", None, "Running", True, 0, STARTED_S, metrics_address=metrics_address
    )


async def test_it_scrapes_pods_as_they_come_and_forgets_those_gone(serve: Serve) -> None:
    a, b = WorkloadMetrics(), WorkloadMetrics()
    pod_a, pod_b = facts("pod-a", await serve(a)), facts("pod-b", await serve(b))
    clock = Clock()
    scraper = PodScraper(clock=clock)
    await scraper.scrape([pod_a, facts("no-metrics", None)])
    a.handle("GetItem", "OK", 20)
    clock.now_s += 2
    await scraper.scrape([pod_a, pod_b])
    assert scraper.rates == {"pod-a": PodRates(10.0, 0.0)}  # pod-b: its first scrape

    b.handle("GetItem", "ABORTED", 4)
    clock.now_s += 2
    await scraper.scrape([pod_b])
    assert scraper.rates == {"pod-b": PodRates(2.0, 2.0)}


async def test_it_gives_a_failing_pod_no_figure_and_says_so_once(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dashboard.collector.scrape")
    a = WorkloadMetrics()
    pod_a = facts("pod-a", await serve(a))
    clock = Clock()
    scraper = PodScraper(clock=clock)
    with dead_port() as port:
        gone = facts("pod-dead", f"127.0.0.1:{port}")
        for _ in range(3):
            a.handle("GetItem", "OK", 5)
            clock.now_s += 1
            await scraper.scrape([pod_a, gone])
    assert scraper.rates == {"pod-a": PodRates(5.0, 0.0)}
    failures = [r for r in caplog.records if "pod-dead" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.INFO


async def test_it_takes_a_figure_away_while_the_pod_does_not_answer(serve: Serve) -> None:
    a = WorkloadMetrics()
    pod_a = facts("pod-a", await serve(a))
    clock = Clock()
    scraper = PodScraper(clock=clock)
    for _ in range(2):
        a.handle("GetItem", "OK", 3)
        clock.now_s += 1
        await scraper.scrape([pod_a])
    assert scraper.rates == {"pod-a": PodRates(3.0, 0.0)}
    with dead_port() as port:
        a.handle("GetItem", "OK", 3)
        clock.now_s += 1
        await scraper.scrape([facts("pod-a", f"127.0.0.1:{port}")])
    assert scraper.rates == {}
    # Back: the last good scrape is still the baseline, so it has a figure at once.
    clock.now_s += 1
    await scraper.scrape([pod_a])
    assert scraper.rates == {"pod-a": PodRates(1.5, 0.0)}
