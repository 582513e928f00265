"""The compared cases, their alternating order, and running one case on the load generators."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from processes import BenchError, Child, cpu_seconds, machine_busy_seconds, read_json_line

EVENT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Settings:
    """How hard and how long every case runs."""

    rounds: int
    duration_s: float
    warmup_s: float
    concurrency: int
    stream_concurrency: int
    stream_window: int
    message_bytes: int
    channels: int
    loadgen_procs: int
    quick: bool = False

    def __post_init__(self) -> None:
        counts = (self.rounds, self.concurrency, self.stream_concurrency, self.stream_window)
        if min(*counts, self.channels, self.loadgen_procs) < 1:
            raise ValueError("rounds, concurrencies, window, channels and procs must be >= 1")
        if self.duration_s <= 0 or self.warmup_s < 0 or self.message_bytes < 0:
            raise ValueError("duration_s must be > 0, warmup_s and message_bytes >= 0")


@dataclass(frozen=True)
class Topology:
    """Where the servers listen and which processes they are."""

    backend_addresses: tuple[str, ...]
    backend_pids: tuple[int, ...]
    proxy_address: str
    proxy_pid: int
    stats_off_address: str
    stats_off_pid: int
    loadgen_pids: tuple[int, ...]
    # The bare grpc.aio pass-through (bench/passthrough.py) to the first backend.
    passthrough_address: str
    passthrough_pid: int
    # The balancer with engine = "haproxy": its own pid, then its HAProxy child's.
    haproxy_address: str
    haproxy_pids: tuple[int, ...]


@dataclass(frozen=True)
class Case:
    """One measured configuration; ``cpu_pids`` are the processes whose CPU time is sampled."""

    name: str
    mode: str
    targets: tuple[str, ...]
    concurrency: int
    cpu_pids: dict[str, tuple[int, ...]] = field(hash=False)


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    role_cpu_s: dict[str, float]
    machine_busy_s: float


@dataclass(frozen=True)
class Sample:
    """One case's result in one round; CPU figures cover the measurement window only."""

    case: str
    round_index: int
    count: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    window_s: float
    cpu_s: dict[str, float]
    machine_busy_s: float


def case_groups(topology: Topology, settings: Settings) -> list[list[Case]]:
    """Groups of cases compared with each other; a group's cases always run back to back."""
    direct = topology.backend_addresses
    proxy, stats_off = (topology.proxy_address,), (topology.stats_off_address,)
    common = {"loadgen": topology.loadgen_pids, "backends": topology.backend_pids}
    passthrough, haproxy = (topology.passthrough_address,), (topology.haproxy_address,)
    proxied_cpu = {**common, "proxy": (topology.proxy_pid,)}
    stats_off_cpu = {**common, "proxy": (topology.stats_off_pid,)}
    passthrough_cpu = {**common, "proxy": (topology.passthrough_pid,)}
    # HAProxy's processes as the proxy; the balancer process that drives it apart.
    haproxy_cpu = {
        **common,
        "proxy": topology.haproxy_pids[1:],
        "balancer": topology.haproxy_pids[:1],
    }
    unary_c, stream_c = settings.concurrency, settings.stream_concurrency
    return [
        [
            Case("unary_direct", "unary", direct, unary_c, common),
            Case("unary_proxied", "unary", proxy, unary_c, proxied_cpu),
            Case("unary_proxied_stats_off", "unary", stats_off, unary_c, stats_off_cpu),
            Case("unary_passthrough", "unary", passthrough, unary_c, passthrough_cpu),
            Case("unary_haproxy", "unary", haproxy, unary_c, haproxy_cpu),
        ],
        [
            Case("latency_direct", "unary", direct, 1, common),
            Case("latency_proxied", "unary", proxy, 1, proxied_cpu),
            Case("latency_passthrough", "unary", passthrough, 1, passthrough_cpu),
            Case("latency_haproxy", "unary", haproxy, 1, haproxy_cpu),
        ],
        [
            Case("stream_direct", "stream", direct, stream_c, common),
            Case("stream_proxied", "stream", proxy, stream_c, proxied_cpu),
            Case("stream_passthrough", "stream", passthrough, stream_c, passthrough_cpu),
            Case("stream_haproxy", "stream", haproxy, stream_c, haproxy_cpu),
        ],
    ]


def round_order(groups: list[list[Case]], round_index: int) -> list[Case]:
    """Each group back to back, rotated by the round so no case always runs first."""
    order: list[Case] = []
    for group in groups:
        shift = round_index % len(group)
        order += group[shift:] + group[:shift]
    return order


def split_concurrency(concurrency: int, procs: int) -> list[int]:
    """Splits workers over at most ``procs`` load generators, none of them idle."""
    used = min(concurrency, procs)
    return [concurrency // used + (1 if i < concurrency % used else 0) for i in range(used)]


def load_spec(case: Case, settings: Settings, concurrency: int) -> dict[str, Any]:
    return {
        "targets": list(case.targets),
        "mode": case.mode,
        "concurrency": concurrency,
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "message_bytes": settings.message_bytes,
        "channels": settings.channels,
        "stream_window": settings.stream_window,
    }


async def send_spec(loadgen: Child, spec: dict[str, Any]) -> None:
    assert loadgen.process.stdin is not None
    loadgen.process.stdin.write(json.dumps(spec).encode() + b"\n")
    await loadgen.process.stdin.drain()


async def expect_event(loadgens: list[Child], event: str, timeout_s: float) -> list[dict[str, Any]]:
    """Reads the next line of every load generator; each must be ``event``."""
    lines = [await read_json_line(loadgen, timeout_s) for loadgen in loadgens]
    for loadgen, line in zip(loadgens, lines, strict=True):
        if line.get("event") != event:
            raise BenchError(f"{loadgen.name}: expected {event!r}, got {line}")
    return lines


def snapshot(case: Case) -> CpuSnapshot:
    role_cpu_s = {role: cpu_seconds(list(pids)) for role, pids in case.cpu_pids.items()}
    return CpuSnapshot(time.perf_counter(), role_cpu_s, machine_busy_seconds())


def worst(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def make_sample(
    case: Case,
    round_index: int,
    results: list[dict[str, Any]],
    before: CpuSnapshot,
    after: CpuSnapshot,
) -> Sample:
    """Merges the load generators' results: counts add up, percentiles are the worst one's."""
    count = sum(int(result["count"]) for result in results)
    errors = sum(int(result["errors"]) for result in results)
    if count == 0:
        raise BenchError(f"{case.name}: no call completed ({errors} errors) on {case.targets}")
    return Sample(
        case=case.name,
        round_index=round_index,
        count=count,
        errors=errors,
        rps=sum(float(result["rps"]) for result in results),
        p50_ms=worst([result["p50_ms"] for result in results]),
        p99_ms=worst([result["p99_ms"] for result in results]),
        window_s=after.wall_s - before.wall_s,
        cpu_s={role: after.role_cpu_s[role] - before.role_cpu_s[role] for role in after.role_cpu_s},
        machine_busy_s=after.machine_busy_s - before.machine_busy_s,
    )


async def run_case(
    case: Case, round_index: int, settings: Settings, loadgens: list[Child]
) -> Sample:
    """Runs ``case`` once, sampling CPU time between the loadgens' window events."""
    concurrencies = split_concurrency(case.concurrency, len(loadgens))
    active = loadgens[: len(concurrencies)]
    for loadgen, concurrency in zip(active, concurrencies, strict=True):
        await send_spec(loadgen, load_spec(case, settings, concurrency))
    await expect_event(active, "measuring", settings.warmup_s + EVENT_TIMEOUT_S)
    before = snapshot(case)
    await expect_event(active, "stopped", settings.duration_s + EVENT_TIMEOUT_S)
    after = snapshot(case)
    results = await expect_event(active, "result", EVENT_TIMEOUT_S)
    return make_sample(case, round_index, results, before, after)
