"""The engines in the benchmarks: proxy_overhead's pass-through and HAProxy cases, and
balance_quality --engine haproxy. Arithmetic on known inputs, and short runs end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # bench/ is a folder of scripts importing each other by name

import balance_measure  # noqa: E402
import balance_scenarios  # noqa: E402
import summary  # noqa: E402
from cases import Sample  # noqa: E402

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="no haproxy")
NEW_KEYS = (
    "haproxy_throughput_ratio",
    "haproxy_added_p50_ms",
    "haproxy_cpu_vs_embedded",
    "passthrough_throughput_ratio",
    "embedded_cpu_vs_passthrough",
)


def _sample(case: str, rps: float, proxy_cpu_s: float = 0.0, p50_ms: float = 1.0) -> Sample:
    """One second of `case`: `rps` calls, `proxy_cpu_s` of proxy CPU."""
    return Sample(
        case=case, round_index=0, count=int(rps), errors=0, rps=rps, p50_ms=p50_ms,
        p99_ms=p50_ms * 2, window_s=1.0,
        cpu_s={"loadgen": 0.5, "backends": 0.5, "proxy": proxy_cpu_s}, machine_busy_s=1.5,
    )  # fmt: skip


def test_it_compares_haproxy_and_the_pass_through_with_direct_and_embedded():
    samples = [
        _sample("unary_direct", 5000), _sample("unary_proxied", 2000, proxy_cpu_s=0.8),
        _sample("unary_proxied_stats_off", 2000, proxy_cpu_s=0.8),
        _sample("unary_passthrough", 2500, proxy_cpu_s=0.8),
        _sample("unary_haproxy", 4000, proxy_cpu_s=0.16),
        _sample("latency_direct", 1000, p50_ms=0.5), _sample("latency_proxied", 500, p50_ms=1.2),
        _sample("latency_passthrough", 600, p50_ms=1.1),
        _sample("latency_haproxy", 800, p50_ms=0.75),
        _sample("stream_direct", 10000), _sample("stream_proxied", 5000, proxy_cpu_s=0.8),
        _sample("stream_passthrough", 6000, proxy_cpu_s=0.8),
        _sample("stream_haproxy", 9000, proxy_cpu_s=0.2),
    ]  # fmt: skip
    report = summary.summarize(samples, {})

    assert report["haproxy_throughput_ratio"] == 0.8
    assert report["haproxy_added_p50_ms"] == 0.25
    # 0.16 s / 4000 calls = 40 µs per call; embedded 0.8 s / 2000 = 400 µs.
    assert report["haproxy_cpu_vs_embedded"] == 0.1
    assert report["passthrough_throughput_ratio"] == 0.5
    # Embedded 400 µs per call, pass-through 0.8 s / 2500 = 320 µs.
    assert report["embedded_cpu_vs_passthrough"] == 1.25
    assert report["goals"]["haproxy_throughput_ratio"]["met"] is True
    assert report["goals"]["haproxy_cpu_vs_embedded"]["met"] is True
    assert report["goals"]["embedded_cpu_vs_passthrough"]["met"] is False
    # Every process's CPU per call: direct 1 s / 5000 = 200 µs, HAProxy 1.16 s / 4000 = 290 µs.
    assert report["haproxy_cpu_bound_ratio"] == 0.6897
    # The backends: 0.5 s / 4000 = 125 µs behind HAProxy, 0.5 s / 5000 = 100 µs direct.
    assert report["haproxy_backend_cpu_vs_direct"] == 1.25


def test_it_breaks_each_call_s_cpu_down_by_process_with_haproxy_s_balancer_apart():
    haproxy = Sample(
        case="unary_haproxy", round_index=0, count=4000, errors=0, rps=4000, p50_ms=1.0,
        p99_ms=2.0, window_s=1.0, machine_busy_s=1.5,
        cpu_s={"loadgen": 0.5, "backends": 0.8, "proxy": 0.16, "balancer": 0.04},
    )  # fmt: skip
    breakdown = summary.cpu_breakdown(haproxy)
    assert breakdown == {
        "loadgen_us_per_req": 125.0, "backends_us_per_req": 200.0, "proxy_us_per_req": 40.0,
        "balancer_us_per_req": 10.0, "total_us_per_req": 375.0,
    }  # fmt: skip
    # The engine's CPU per call is HAProxy's and its balancer's together.
    assert summary.engine_cpu_us_per_req(haproxy) == 50.0


def test_it_judges_haproxy_slow_pods_by_least_request_below_its_equal_share():
    report = {
        "slow_pod": {
            "round_robin": {"p99_ms": 60.0, "slow_share": 0.25},
            "least_request": {"p99_ms": 59.0, "slow_share": 0.14},
            "peak_ewma": {"p99_ms": 50.0, "slow_share": 0.2},
        }
    }
    goals = balance_measure.goals(report, "haproxy")

    assert goals["slow_pod.least_request.slow_share_below_equal"]["met"] is True
    # Reported under the latency-aware goal's bounds, not judged.
    assert goals["slow_pod.least_request.slow_share"] | {"applies": ""} == {
        "value": 0.14, "goal": "<= 0.125", "met": None, "applies": ""}  # fmt: skip
    assert goals["slow_pod.least_request_p99_vs_round_robin"]["value"] == 0.9833
    assert goals["slow_pod.peak_ewma.slow_share"]["met"] is None
    assert "random(2)" in goals["slow_pod.peak_ewma.slow_share"]["applies"]
    assert "slow_pod.least_request.slow_share_below_equal" not in balance_measure.goals(report)
    report["slow_pod"]["least_request"]["slow_share"] = 0.25
    assert balance_measure.goals(report, "haproxy")[
        "slow_pod.least_request.slow_share_below_equal"]["met"] is False  # fmt: skip


def test_it_gives_each_policy_its_own_scene_under_haproxy_and_switches_live_embedded():
    policies = ("round_robin", "least_request")
    assert balance_scenarios.policy_runs(policies, "haproxy") == [
        ("round_robin",),
        ("least_request",),
    ]
    assert balance_scenarios.policy_runs(policies, "embedded") == [policies]
    options = balance_scenarios.SceneOptions(engine="haproxy")
    assert balance_scenarios.scene_options(options, ("random",)).policy == "random"


def _orphan_haproxy_pids() -> set[int]:
    """HAProxy processes no balancer owns any more (other checkouts' tests may run theirs)."""
    orphans = set()
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info["name"] != "haproxy":
            continue
        try:
            parent = psutil.Process(process.info["ppid"]).name()
        except psutil.NoSuchProcess:
            parent = ""
        if not parent.startswith("python"):
            orphans.add(process.pid)
    return orphans


def _run(script: str, *args: str, timeout_s: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=BENCH.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@needs_haproxy
@pytest.mark.timeout(150)
def test_it_measures_every_proxy_side_by_side_and_prints_the_new_keys():
    before = _orphan_haproxy_pids()
    report = _run(
        "proxy_overhead.py", "--rounds", "1", "--duration-s", "0.3", "--warmup-s", "0.1",
        timeout_s=140,
    )  # fmt: skip

    assert report["errors"] == 0
    for key in NEW_KEYS:
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["haproxy_cpu_us_per_req"] > 0
    assert set(report["goals"]) == {"haproxy_throughput_ratio", "haproxy_cpu_vs_embedded",
                                    "embedded_cpu_vs_passthrough"}  # fmt: skip
    assert not [pid for pid in _orphan_haproxy_pids() - before if psutil.pid_exists(pid)]


@needs_haproxy
@pytest.mark.timeout(120)
def test_it_drains_through_haproxy_and_counts_haproxy_s_own_picks():
    report = _run(
        "balance_quality.py", "--smoke", "--engine", "haproxy", "--only", "drain",
        timeout_s=110,
    )  # fmt: skip

    drain = report["drain"]
    assert report["engine"] == "haproxy" and drain["load"]["engine"] == "haproxy"
    assert drain["new_requests_counted_by"] == "haproxy show stat stot"
    assert drain["state"] == "DRAINED"
    assert isinstance(drain["new_requests_after_drain"], int)
    assert drain["failed_in_flight"] == 0
    # The drain's runtime-API command reached HAProxy; calls it sent before then are named.
    assert drain["drain_reached_haproxy_s"] > 0
    assert 0 <= drain["sent_before_haproxy_held_drain"] <= drain["new_requests_after_drain"]


@needs_haproxy
@pytest.mark.timeout(150)
def test_it_measures_every_policy_s_weights_through_one_haproxy_process():
    report = _run(
        "balance_quality.py", "--smoke", "--engine", "haproxy", "--only", "weights",
        timeout_s=140,
    )  # fmt: skip

    policies = report["weights"]["policies"]
    assert set(policies) == {"round_robin", "least_request", "peak_ewma", "random"}
    assert [p["haproxy_processes"] for p in policies.values()] == [1, 1, 1, 1]
    assert all(p["errors"] == {} and p["n"] > 0 for p in policies.values())
    assert report["stray_haproxy_processes"] == 0
    assert report["weights"]["load"]["haproxy_balance"]["peak_ewma"] == "random(2)"
    assert report["weights"]["load"]["haproxy_balance"]["least_request"] == "random(2)"
