"""Prometheus metrics of the workload, served over HTTP from a private registry.

The gRPC server metrics have the names, label sets and semantics of go-grpc-prometheus (which
py-grpc-prometheus copies), so stock gRPC dashboards and alerts work unchanged:

- `grpc_server_started_total{grpc_type,grpc_service,grpc_method}` when a call starts;
- `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}` when it ends, with
  the status code the client got (injected failures, CANCELLED and DEADLINE_EXCEEDED included);
- `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`, a histogram of call
  durations with go's default buckets;
- `grpc_server_msg_received_total` / `grpc_server_msg_sent_total`, per message.

`grpc_type` is UNARY, SERVER_STREAM, CLIENT_STREAM or BIDI_STREAM. `grpc_code` is the Python
status name (`OK`, `UNAVAILABLE`), as py-grpc-prometheus and Ballast's own metrics spell it;
go-grpc-prometheus writes `Unavailable`. Workload series: `ballast_demo_leaked_bytes`,
`ballast_demo_knob{knob}` and `ballast_demo_pod_info{pod}`.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf.descriptor import FileDescriptor
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from demo.workload.behaviour import Misbehaviour

# go-grpc-prometheus (prometheus.DefBuckets), so histograms from Go and Python pods aggregate.
HANDLING_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHOD = ("grpc_type", "grpc_service", "grpc_method")
_NUMERIC_KNOBS = ("latency_ms", "jitter_ms", "cpu_ms", "leak_bytes", "error_rate")


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The `grpc_type` label of a method of that shape."""
    if request_streaming:
        return "BIDI_STREAM" if response_streaming else "CLIENT_STREAM"
    return "SERVER_STREAM" if response_streaming else "UNARY"


class ServerMetrics:
    """The go-grpc-prometheus server metric set, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _METHOD,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_METHOD, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _METHOD,
            registry=registry,
            buckets=HANDLING_BUCKETS_S,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _METHOD,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _METHOD,
            registry=registry,
        )

    def initialize(self, file: FileDescriptor) -> None:
        """Creates every series of the file's methods at zero, as go-grpc-prometheus's
        InitializeMetrics does: `rate()` and `increase()` then see the first call."""
        for service in file.services_by_name.values():
            for method in service.methods:
                labels = (grpc_type(method.client_streaming, method.server_streaming),
                          service.full_name, method.name)  # fmt: skip
                for family in (self.started, self.handling, self.received, self.sent):
                    family.labels(*labels)
                for code in grpc.StatusCode:
                    self.handled.labels(*labels, code.name)


class WorkloadCollector:
    """The pod's knobs and leaked bytes, read at scrape time (from the HTTP thread: it only
    reads an immutable Knobs and an int)."""

    def __init__(self, misbehaviour: Misbehaviour) -> None:
        self._mis = misbehaviour

    def collect(self) -> Iterator[Metric]:
        leaked = GaugeMetricFamily(
            "ballast_demo_leaked_bytes", "Memory kept by the leak knob, never freed."
        )
        leaked.add_metric((), self._mis.leaked_bytes)
        knob = GaugeMetricFamily(
            "ballast_demo_knob",
            "The knobs' current values (Knobs.Get has them all).",
            labels=("knob",),
        )
        knobs = self._mis.knobs
        for name in _NUMERIC_KNOBS:
            knob.add_metric((name,), float(getattr(knobs, name)))
        yield leaked
        yield knob


def workload_registry(
    pod: str, misbehaviour: Misbehaviour
) -> tuple[CollectorRegistry, ServerMetrics]:
    """A private registry with the gRPC server metrics and the workload's own series."""
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    registry.register(WorkloadCollector(misbehaviour))
    Info("ballast_demo_pod", "The pod's name, as the workload knows it.", registry=registry).info(
        {"pod": pod}
    )
    return registry, metrics
