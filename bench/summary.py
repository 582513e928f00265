"""Turns per-round samples into the benchmark's JSON report.

Every figure is first computed per round from cases that ran back to back, then the
median over rounds is reported; ratios are medians of per-round ratios, so slow drift on
a shared machine cancels within each pair.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from cases import Sample

Metrics = dict[str, float | None]

# Rounding per key suffix keeps the one-line JSON readable.
DIGITS = {"_rps": 1, "_mps": 1, "_ms": 3, "_us_per_req": 1, "_cores": 2}
RATIO_DIGITS = 4
PER_ROUND_KEYS = (
    "throughput_ratio",
    "stream_throughput_ratio",
    "added_p50_ms",
    "added_p99_ms",
    "proxy_cpu_vs_backend",
    "stats_overhead",
    "stats_cpu_ratio",
    "passthrough_throughput_ratio",
    "embedded_cpu_vs_passthrough",
    "haproxy_throughput_ratio",
    "haproxy_added_p50_ms",
    "haproxy_cpu_vs_embedded",
    "haproxy_cpu_bound_ratio",
    "haproxy_backend_cpu_vs_direct",
)
# The goals for the engines: key, comparison, bound.
GOALS = (
    ("haproxy_throughput_ratio", ">=", 0.8),
    ("haproxy_cpu_vs_embedded", "<=", 0.15),
    ("embedded_cpu_vs_passthrough", "<=", 1.15),
)
# The other proxies measured beside the embedded engine: report prefix → case suffix.
OTHER_PROXIES = {"passthrough": "passthrough", "haproxy": "haproxy"}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def difference(minuend: float | None, subtrahend: float | None) -> float | None:
    if minuend is None or subtrahend is None:
        return None
    return minuend - subtrahend


def cpu_us_per_req(sample: Sample, role: str) -> float:
    return sample.cpu_s[role] / sample.count * 1e6


def engine_cpu_us_per_req(sample: Sample) -> float:
    """The proxy's CPU per call, with the balancer process that drives it when apart
    (HAProxy's engine is both)."""
    return sum(
        cpu_us_per_req(sample, role) for role in ("proxy", "balancer") if role in sample.cpu_s
    )


def throughput_metrics(cases: dict[str, Sample]) -> Metrics:
    direct, proxied = cases["unary_direct"], cases["unary_proxied"]
    stats_off = cases["unary_proxied_stats_off"]
    stream_direct, stream_proxied = cases["stream_direct"], cases["stream_proxied"]
    return {
        "direct_rps": direct.rps,
        "proxied_rps": proxied.rps,
        "throughput_ratio": ratio(proxied.rps, direct.rps),
        "direct_stream_mps": stream_direct.rps,
        "proxied_stream_mps": stream_proxied.rps,
        "stream_throughput_ratio": ratio(stream_proxied.rps, stream_direct.rps),
        "proxied_stats_off_rps": stats_off.rps,
        "stats_overhead": ratio(proxied.rps, stats_off.rps),
    }


def latency_metrics(cases: dict[str, Sample]) -> Metrics:
    direct, proxied = cases["latency_direct"], cases["latency_proxied"]
    return {
        "direct_p50_ms": direct.p50_ms,
        "proxied_p50_ms": proxied.p50_ms,
        "added_p50_ms": difference(proxied.p50_ms, direct.p50_ms),
        "direct_p99_ms": direct.p99_ms,
        "proxied_p99_ms": proxied.p99_ms,
        "added_p99_ms": difference(proxied.p99_ms, direct.p99_ms),
    }


def cpu_metrics(cases: dict[str, Sample]) -> Metrics:
    proxy = cpu_us_per_req(cases["unary_proxied"], "proxy")
    backend = cpu_us_per_req(cases["unary_direct"], "backends")
    stats_off = cpu_us_per_req(cases["unary_proxied_stats_off"], "proxy")
    return {
        "proxy_cpu_us_per_req": proxy,
        "backend_cpu_us_per_req": backend,
        "proxy_cpu_vs_backend": ratio(proxy, backend),
        "proxy_stats_off_cpu_us_per_req": stats_off,
        "stats_cpu_ratio": ratio(proxy, stats_off),
    }


def other_proxy_metrics(cases: dict[str, Sample], prefix: str) -> Metrics:
    """Throughput, latency and CPU per call of ``unary_<prefix>`` & co. next to direct's."""
    unary, stream = cases[f"unary_{prefix}"], cases[f"stream_{prefix}"]
    latency, direct_latency = cases[f"latency_{prefix}"], cases["latency_direct"]
    return {
        f"{prefix}_rps": unary.rps,
        f"{prefix}_throughput_ratio": ratio(unary.rps, cases["unary_direct"].rps),
        f"{prefix}_stream_mps": stream.rps,
        f"{prefix}_stream_throughput_ratio": ratio(stream.rps, cases["stream_direct"].rps),
        f"{prefix}_p50_ms": latency.p50_ms,
        f"{prefix}_added_p50_ms": difference(latency.p50_ms, direct_latency.p50_ms),
        f"{prefix}_p99_ms": latency.p99_ms,
        f"{prefix}_added_p99_ms": difference(latency.p99_ms, direct_latency.p99_ms),
        f"{prefix}_cpu_us_per_req": engine_cpu_us_per_req(unary),
    }


def engine_metrics(cases: dict[str, Sample]) -> Metrics:
    """The pass-through and HAProxy cases, and the CPU per call ratios between the proxies
    (HAProxy's CPU includes its balancer process: the engine is both)."""
    metrics: Metrics = {}
    for prefix in OTHER_PROXIES:
        metrics |= other_proxy_metrics(cases, prefix)
    embedded = cpu_us_per_req(cases["unary_proxied"], "proxy")
    metrics["embedded_cpu_vs_passthrough"] = ratio(embedded, metrics["passthrough_cpu_us_per_req"])
    metrics["haproxy_cpu_vs_embedded"] = ratio(metrics["haproxy_cpu_us_per_req"], embedded)
    return metrics | cpu_bound_metrics(cases["unary_direct"], cases["unary_haproxy"])


def cpu_bound_metrics(direct: Sample, haproxy: Sample) -> Metrics:
    """What limits HAProxy's throughput ratio when the load generator, the backends and the
    proxy share the machine's cores and keep them busy: `haproxy_cpu_bound_ratio` is the
    CPU per call of every measured process, direct's ÷ HAProxy's (the ratio a CPU-bound
    machine allows, whatever else runs on it); `haproxy_backend_cpu_vs_direct` the backends'
    CPU per call behind HAProxy ÷ direct."""
    direct_us = sum(cpu_us_per_req(direct, role) for role in direct.cpu_s)
    haproxy_us = sum(cpu_us_per_req(haproxy, role) for role in haproxy.cpu_s)
    backends_us = cpu_us_per_req(haproxy, "backends")
    return {
        "haproxy_cpu_bound_ratio": ratio(direct_us, haproxy_us),
        "haproxy_backend_cpu_vs_direct": ratio(backends_us, cpu_us_per_req(direct, "backends")),
    }


def cpu_breakdown(sample: Sample) -> Metrics:
    """CPU per call of each measured process group (`loadgen`: the client; `proxy`;
    `balancer`: the balancer process driving HAProxy) and their total."""
    parts: Metrics = {f"{role}_us_per_req": cpu_us_per_req(sample, role) for role in sample.cpu_s}
    parts["total_us_per_req"] = sum(cpu_us_per_req(sample, role) for role in sample.cpu_s)
    return parts


def goals(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each engine goal with its measured median and whether it is met (None: not measured)."""
    section = {}
    for key, op, bound in GOALS:
        value = report.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        section[key] = {"value": value, "goal": f"{op} {bound}", "met": met}
    return section


def cores_used(sample: Sample) -> Metrics:
    """Cores each role kept busy during the window; ``other`` is the rest of the machine."""
    cores: Metrics = {
        f"{role}_cores": cpu_s / sample.window_s for role, cpu_s in sample.cpu_s.items()
    }
    ours_s = sum(sample.cpu_s.values())
    cores["other_cores"] = (sample.machine_busy_s - ours_s) / sample.window_s
    return cores


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def rounded(key: str, value: float | None) -> float | None:
    if value is None:
        return None
    digits = next((d for suffix, d in DIGITS.items() if key.endswith(suffix)), RATIO_DIGITS)
    return round(value, digits)


def medians(per_round: list[Metrics]) -> dict[str, float | None]:
    keys = per_round[0].keys()
    return {key: rounded(key, median([metrics[key] for metrics in per_round])) for key in keys}


def by_round(samples: list[Sample]) -> list[dict[str, Sample]]:
    rounds: dict[int, dict[str, Sample]] = defaultdict(dict)
    for sample in samples:
        rounds[sample.round_index][sample.case] = sample
    return [rounds[index] for index in sorted(rounds)]


def summarize(samples: list[Sample], context: dict[str, Any]) -> dict[str, Any]:
    """The report: medians of per-round metrics, per-round ratios, cores used, context."""
    rounds = by_round(samples)
    per_round = [
        {
            **throughput_metrics(cases),
            **latency_metrics(cases),
            **cpu_metrics(cases),
            **engine_metrics(cases),
        }
        for cases in rounds
    ]
    report: dict[str, Any] = medians(per_round)
    report["goals"] = goals(report)
    report["per_round"] = {
        key: [rounded(key, metrics[key]) for metrics in per_round] for key in PER_ROUND_KEYS
    }
    report["cores_used"] = {
        case: medians([cores_used(cases[case]) for cases in rounds])
        for case in (
            "unary_direct",
            "unary_proxied",
            "unary_passthrough",
            "unary_haproxy",
            "stream_direct",
            "stream_proxied",
            "stream_passthrough",
            "stream_haproxy",
        )
    }
    report["cpu_per_call"] = {
        case: medians([cpu_breakdown(cases[case]) for cases in rounds])
        for case in ("unary_direct", "unary_proxied", "unary_passthrough", "unary_haproxy")
    }
    report["errors"] = sum(sample.errors for sample in samples)
    report.update(context)
    return report
