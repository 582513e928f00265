"""bench/balance_quality.py: its arithmetic on known inputs, and a smoke run end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from balancer.picker import POLICIES

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCENARIOS = ("pinning", "weights", "slow_pod", "drain", "restart", "noise")


def _load(name: str) -> ModuleType:
    """A bench module by path: bench/ is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


measure = _load("balance_measure")


def test_it_counts_idle_pods_in_the_mean_of_max_over_mean():
    assert measure.max_over_mean({"a": 30, "b": 10}, ["a", "b", "c", "d"]) == 3.0
    assert measure.max_over_mean({"a": 5, "b": 5}, ["a", "b"]) == 1.0
    assert measure.max_over_mean({}, ["a", "b"]) is None


def test_it_measures_share_errors_against_weight_over_sum():
    expected = measure.expected_shares({"a": 100, "b": 200, "c": 500})
    assert expected == {"a": 0.125, "b": 0.25, "c": 0.625}
    observed = measure.shares({"a": 150, "b": 250, "c": 600, "other": 7}, ["a", "b", "c"])
    assert observed == {"a": 0.15, "b": 0.25, "c": 0.6}
    assert measure.max_share_error(observed, expected) == pytest.approx(0.025)
    assert measure.binomial_sd(0.625, 2400) == pytest.approx(math.sqrt(0.625 * 0.375 / 2400))


def test_it_judges_each_goal_and_leaves_unmeasured_ones_open():
    report = {
        "pinning": {"balancer_max_mean": 1.2},
        "slow_pod": {"round_robin": {"p99_ms": 60.0}, "peak_ewma": {"p99_ms": 12.0}},
        "drain": {"new_requests_after_drain": 0},
    }
    goals = measure.goals(report)
    assert goals["pinning.balancer_max_mean"]["met"] is False
    assert goals["slow_pod.peak_ewma_p99_vs_round_robin"] == {
        "value": 0.2, "goal": "<= 0.3", "met": True
    }  # fmt: skip
    assert goals["drain.new_requests_after_drain"]["met"] is True
    assert goals["restart.client_errors"] == {"value": None, "goal": "== 0", "met": None}


def _workload_pids() -> set[int]:
    """Pods started from this checkout's Python (other checkouts' test runs may share the
    machine)."""
    bin_dir = os.path.dirname(sys.executable)
    pids = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "demo.workload" in cmdline and os.path.dirname(cmdline[0]) == bin_dir:
            pids.add(process.pid)
    return pids


def _between(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and low <= value <= high


@pytest.mark.timeout(150)
def test_it_runs_every_scenario_and_prints_one_json_report():
    before = _workload_pids()
    done = subprocess.run(
        [sys.executable, str(BENCH / "balance_quality.py"), "--smoke"],
        capture_output=True, text=True, timeout=140, cwd=BENCH.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert set(SCENARIOS) <= set(report)
    pinning, weights, slow = report["pinning"], report["weights"], report["slow_pod"]
    assert _between(pinning["l4_max_mean"], 1.0, 4.0)
    assert _between(pinning["balancer_max_mean"], 1.0, 4.0)
    assert _between(weights["max_share_error"], 0.0, 1.0)
    assert all(_between(weights[policy], 0.0, 1.0) for policy in POLICIES)
    for policy in ("round_robin", "least_request", "peak_ewma"):
        assert _between(slow[policy]["p99_ms"], 1.0, 10_000.0)
        assert _between(slow[policy]["slow_share"], 0.0, 1.0)
    assert _between(report["drain"]["new_requests_after_drain"], 0, 10_000)
    assert _between(report["drain"]["failed_in_flight"], 0, 20)
    assert _between(report["drain"]["drained_after_s"], 0.0, 60.0)
    assert _between(report["restart"]["client_errors"], 0, 10_000)
    assert _between(report["restart"]["restart_s"], 0.0, 60.0)
    assert _between(report["noise"]["noise_max_share_error_pp"], 0.0, 100.0)
    assert all(_between(report["noise"][policy], 0.0, 100.0) for policy in POLICIES)
    assert all(goal["met"] in (True, False) for goal in report["goals"].values())
    assert not [pid for pid in _workload_pids() - before if psutil.pid_exists(pid)]
