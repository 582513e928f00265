"""The `retries` scenario of balance_quality.py: one of five pods fails 30 % of its calls.

Five demo pods (real processes), the fifth with `--error-rate 0.3` (UNAVAILABLE). Two
balancers in front of the same pods at once, each with its own clients at the same rate:
one without retries (`max_attempts = 1`), one with the default policy and GetItem declared
idempotent. Outlier detection is on in both (the default): it ejects the pod after five
failures in a row, which at 30 % takes a while. Reports the client error rate through each
(`retry_error_rate_without`, `retry_error_rate_with`) and what the second balancer's
snapshot says of its retries and its budget.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from balance_measure import rounded
from balance_scene import say, wait_until

from balancer.admin.snapshot import Reader
from balancer.config import BalancerConfig, config_from_dict
from balancer.endpoint import State
from balancer.server import Balancer
from demo.loadgen import ClientSpec, LoadGenerator, LoadStats
from platforms.local import processes

GET_ITEM = "/ballast.demo.v1.Inventory/GetItem"
PODS = 5
ERROR_RATE = 0.3
CLIENTS = 8
RATE_PER_CLIENT = 25.0
_START_TIMEOUT_S = 60.0


async def _start_pod(name: str, *knobs: str) -> tuple[processes.Process, str]:
    argv = [sys.executable, "-m", "demo.workload", "--name", name, "--port", "0",
            "--metrics-port", "0", "--log-level", "WARNING", "--latency-ms", "2",
            *knobs]  # fmt: skip
    process = await processes.spawn(
        argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), _START_TIMEOUT_S)
    if not line:
        raise OSError(f"pod {name} exited with {await process.wait()} before serving")
    return process, str(json.loads(line)["grpc"])


def _config(pods: Sequence[tuple[str, str]], retry: dict[str, Any]) -> BalancerConfig:
    endpoints = [{"address": address, "name": name} for name, address in pods]
    data = {
        "balancer": {"event_loop": "asyncio"},
        "listeners": [{"address": "127.0.0.1:0"}],
        "clusters": [{"name": "inventory", "discovery": {"endpoints": endpoints},
                      "unary_methods": [GET_ITEM], "retry": retry}],
    }  # fmt: skip
    return config_from_dict(data, environ={})


def _load(name: str, target: str) -> LoadGenerator:
    specs = [ClientSpec(f"{name}-{i}", target, RATE_PER_CLIENT) for i in range(CLIENTS)]
    return LoadGenerator(specs)


def _error_rate(stats: LoadStats) -> float | None:
    return rounded(stats.errors / stats.completed, 5) if stats.completed else None


async def retries(timings: Any, seed: int | None, engine: str = "embedded") -> dict[str, Any]:
    """Client error rates without and with retries, side by side over one window."""
    if engine != "embedded":
        return {"skipped": "retries are the embedded engine's (HAProxy: retry-on conn-failure)"}
    names = [f"pod-{i}" for i in range(PODS)]
    started = [await _start_pod(n, *(["--error-rate", str(ERROR_RATE)] if n == names[-1] else []))
               for n in names]  # fmt: skip
    pods = [(name, address) for name, (_, address) in zip(names, started, strict=True)]
    without = Balancer(_config(pods, {"max_attempts": 1}))
    with_retries = Balancer(_config(pods, {"idempotent_methods": [GET_ITEM]}))
    try:
        await without.start()
        await with_retries.start()
        # Every pod, the failing one above all, READY in both before the window opens: on
        # a busy machine a health check late in one balancer would spare it the failures.
        for balancer in (without, with_retries):
            endpoints = balancer.clusters["inventory"].endpoints
            if not await wait_until(
                lambda e=endpoints: len(e) == PODS and all(
                    ep.state is State.READY for ep in e.values()), _START_TIMEOUT_S):  # fmt: skip
                raise RuntimeError(f"retries: not every pod READY within {_START_TIMEOUT_S:g} s")
        loads = [_load("without", without.listen_addresses[0]),
                 _load("with", with_retries.listen_addresses[0])]  # fmt: skip
        window_s = timings.pinning_window_s
        stats = await asyncio.gather(*(load.run(window_s, warmup_s=timings.warmup_s)
                                       for load in loads))  # fmt: skip
        report = _report(stats[0], stats[1], Reader(with_retries).cluster(
            with_retries.clusters["inventory"]), window_s)  # fmt: skip
        report["ejections_without"] = sum(
            ep.ejections_total for ep in without.clusters["inventory"].endpoints.values()
        )
    finally:
        await without.stop(grace_s=0)
        await with_retries.stop(grace_s=0)
        await asyncio.gather(*(processes.terminate(p, grace_s=2.0) for p, _ in started))
    say(f"retries: {report}")
    return report


def _report(without: LoadStats, with_: LoadStats, cluster: Any, window_s: float) -> dict[str, Any]:
    calls = cluster.requests_total
    return {
        "retry_error_rate_without": _error_rate(without),
        "retry_error_rate_with": _error_rate(with_),
        "calls_without": without.completed,
        "calls_with": with_.completed,
        "codes_without": without.codes,
        "codes_with": with_.codes,
        # Over the balancer's life (warm-up included): retries ÷ its calls, and the budget.
        "retries": cluster.retries.retries,
        "retries_succeeded": cluster.retries.succeeded,
        "retry_budget_exhausted": cluster.retries.budget_exhausted,
        "retries_per_call": rounded(cluster.retries.retries / calls if calls else None),
        "ejections_with": sum(ep.ejections_total for ep in cluster.endpoints),
        "p99_ms_without": without.latency.summary()["p99_ms"],
        "p99_ms_with": with_.latency.summary()["p99_ms"],
        "window_s": window_s,
        "load": {
            "pods": PODS,
            "failing_pod_error_rate": ERROR_RATE,
            "clients_per_balancer": CLIENTS,
            "rate_per_client": RATE_PER_CLIENT,
        },
    }
