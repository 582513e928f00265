"""A balancer replica restarted (kill -9, started again on the same ports) while clients
call it: with `[control_plane]` it holds the dashboard's desired state before its first
call, so a drained pod gets none; and the collector sees the replica back within a second.

Real parts: three gRPC pods, the dashboard (uvicorn, its REST API, the collector and the
reconciler) on a free port, and `python -m balancer` as its own process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from django.contrib.auth.models import Group, User
from django.test import override_settings
from knox.models import AuthToken

from balancer.config import config_from_dict
from balancer.server import Balancer
from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.collector.frames import ServiceFrame
from dashboard.collector.runner import (
    DEFAULT_BACKOFF_S,
    JITTER,
    Collector,
    CollectorConfig,
    ReplicaTarget,
    ServiceTarget,
)
from dashboard.control import actions
from dashboard.control.roles import OPERATOR, VIEWER
from dashboard.server import DashboardServer
from tests.control.conftest import http
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.desired_state import BalancerProcess, balancer_toml, free_port
from tests.support.waiting import wait_for

log = logging.getLogger(__name__)

SERVICE = "inventory"
PODS = ("pod-a", "pod-b", "pod-c")
DRAINED = "pod-b"
CLIENTS = 4
CALL_TIMEOUT_S = 10.0
# Clients that come back fast once the balancer does (gRPC's default waits 1 s, then
# longer): the figure is then the balancer's, not the clients' reconnect backoff.
CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
]


# --- the collector alone ------------------------------------------------------------------


def test_a_down_replica_is_tried_at_least_once_a_second() -> None:
    config = CollectorConfig(
        replicas=[ReplicaTarget("b0", "127.0.0.1:1", ADMIN_TOKEN)],
        services={SERVICE: ServiceTarget(SERVICE, SERVICE)},
    )
    assert config.backoff_s == DEFAULT_BACKOFF_S
    for seed in range(20):
        collector = Collector(config, _discard, rng=random.Random(seed))
        delays = [collector.retry_delay_s(attempt) for attempt in range(50)]
        assert max(delays) <= 1.0  # seconds: a replica back is seen within one
        assert min(delays) >= DEFAULT_BACKOFF_S[0] * (1 - JITTER)


def test_a_backoff_over_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 1 s"):
        CollectorConfig(replicas=[], services={}, backoff_s=(0.5, 5.0))


async def _discard(frame: ServiceFrame) -> None:
    pass


class _Slowest(random.Random):
    """Every jitter at its longest: the retry schedule's worst case."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _in_process_config(pods: dict[str, Backend], admin: str) -> Any:
    endpoints = [{"address": b.address, "name": n} for n, b in pods.items()]
    return config_from_dict(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": SERVICE, "discovery": {"endpoints": endpoints}}],
            "admin": {"address": admin, "token": ADMIN_TOKEN},
        },
        environ={},
    )


async def test_the_collector_sees_a_replica_back_within_a_second(
    backends: Callable[..., Awaitable[Backend]],
) -> None:
    pods = {name: await backends(name) for name in PODS}
    first = Balancer(_in_process_config(pods, "127.0.0.1:0"))
    await first.start()
    admin = first.admin_address or ""
    frames: list[ServiceFrame] = []

    async def keep(frame: ServiceFrame) -> None:
        frames.append(frame)

    config = CollectorConfig(
        replicas=[ReplicaTarget("b0", admin, ADMIN_TOKEN)],
        services={SERVICE: ServiceTarget(SERVICE, SERVICE)},
        interval_s=0.25,
    )
    collector = Collector(config, keep, rng=_Slowest())
    await collector.start()
    second: Balancer | None = None
    try:
        up = lambda: bool(frames) and frames[-1]["replicas"][0]["up"]  # noqa: E731
        await wait_for(up, timeout_s=20, what="b0 up")
        await first.stop(grace_s=0)
        await wait_for(lambda: not up(), timeout_s=20, what="b0 down")
        # Down for long enough that the old schedule (0.5, 1, 2, 5, 10 s, +20 %) would next
        # knock ~6 s after the restart; the new one knocks at least once a second.
        await asyncio.sleep(4.5)
        second = Balancer(_in_process_config(pods, admin))
        await second.start()
        await wait_for(up, timeout_s=2.5, what="the collector to see b0 back")
    finally:
        await collector.stop()
        if second is not None:
            await second.stop(grace_s=0)


# --- a real replica process restarted under load ----------------------------------------


@pytest.fixture(autouse=True)
def _fresh(fresh_dashboard_state: None) -> None:
    """Each test starts with a fresh channel layer and page history."""


@dataclass(frozen=True)
class Tokens:
    viewer: str
    operator: str


@pytest.fixture
def tokens(transactional_db: None) -> Tokens:
    """API tokens of a viewer (the balancer's) and an operator (who drains)."""
    keys = {}
    for role in (VIEWER, OPERATOR):
        group, _ = Group.objects.get_or_create(name=role)
        user = User.objects.create_user(role, password="correct horse battery staple")
        user.groups.add(group)
        keys[role] = AuthToken.objects.create(user=user, expiry=None)[1]
    return Tokens(viewer=keys[VIEWER], operator=keys[OPERATOR])


@dataclass
class Clients:
    """`CLIENTS` loops of unary calls through the balancer, each on its own channel, until
    stopped; the codes they got, and how many calls ended after `mark()`."""

    target: str
    codes: Counter[str] = field(default_factory=Counter)
    codes_after_mark: Counter[str] = field(default_factory=Counter)
    marked: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(CLIENTS)]

    def mark(self) -> None:
        self.marked = True

    async def _loop(self) -> None:
        async with grpc.aio.insecure_channel(self.target, options=CLIENT_OPTIONS) as channel:
            unary = channel.unary_unary(be.UNARY)
            while not self._stop.is_set():
                # wait_for_ready: a call made while the replica is away waits for it rather
                # than failing at once (what a client that retries would see).
                try:
                    await unary(b"ping", timeout=CALL_TIMEOUT_S, wait_for_ready=True)
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    code = err.code().name
                self.codes[code] += 1
                if self.marked:
                    self.codes_after_mark[code] += 1
                await asyncio.sleep(0.002)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def errors(self, after_mark: bool = False) -> int:
        codes = self.codes_after_mark if after_mark else self.codes
        return sum(n for code, n in codes.items() if code != "OK")


@dataclass
class Stack:
    dashboard: DashboardServer
    replica: BalancerProcess
    pods: dict[str, Backend]
    tokens: Tokens
    listener: str

    def api(self, method: str, path: str, body: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.dashboard.port}{path}"
        return http(method, url, body, {"Authorization": f"Token {self.tokens.operator}"})

    def frame(self) -> dict[str, Any]:
        return actions.latest_frame(SERVICE) or {}

    def pod_state(self, pod: str) -> str | None:
        return next((p["state"] for p in self.frame().get("pods", []) if p["pod"] == pod), None)

    def replica_up(self) -> bool:
        return any(r["up"] for r in self.frame().get("replicas", []))


@pytest.fixture
async def stack(
    tmp_path: Path, backends: Callable[..., Awaitable[Backend]], tokens: Tokens
) -> AsyncIterator[Callable[[bool], Awaitable[Stack]]]:
    """Pods, the dashboard with its control plane, and a balancer process watched by it —
    with `[control_plane]` pointing at the dashboard, or without."""
    started: list[tuple[DashboardServer, BalancerProcess]] = []

    async def start(with_control_plane: bool) -> Stack:
        pods = {name: await backends(name) for name in PODS}
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        plane = ControlPlane(collector_config({"b0": admin}, ADMIN_TOKEN))
        dashboard = DashboardServer(port=0, background=plane)
        await dashboard.start()
        url = f"http://127.0.0.1:{dashboard.port}"
        control = {"url": url, "initial_fetch_timeout_s": 15} if with_control_plane else None
        toml = balancer_toml(
            [(n, b.address) for n, b in pods.items()], listen=listen, admin=admin,
            control_plane=control,
        )  # fmt: skip
        env = {"BALLAST_ADMIN_TOKEN": ADMIN_TOKEN, "BALLAST_CONTROL_TOKEN": tokens.viewer}
        replica = BalancerProcess(tmp_path, toml, env)
        started.append((dashboard, replica))
        replica.start()
        await replica.wait_ready()
        return Stack(dashboard, replica, pods, tokens, listen)

    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        yield start
        for dashboard, replica in started:
            replica.stop()
            await dashboard.stop()


async def _drain_through_the_api(s: Stack) -> None:
    await wait_for(
        lambda: all(s.pod_state(p) == "READY" for p in PODS), timeout_s=30, what="pods READY"
    )
    reply = await asyncio.to_thread(
        s.api, "POST", f"/api/v1/services/{SERVICE}/pods/{DRAINED}/drain", {}
    )
    assert reply.status == 200, reply.body
    assert reply.body["result"] == "ok", reply.body
    await wait_for(lambda: s.pod_state(DRAINED) == "DRAINED", timeout_s=30, what="drained")


async def _restart_under_load(s: Stack) -> dict[str, Any]:
    """kill -9 and start again on the same ports while clients call; the figures."""
    clients = Clients(s.listener)
    clients.start()
    try:
        await wait_for(lambda: clients.codes["OK"] >= 200, timeout_s=30, what="calls flowing")
        s.replica.kill()
        drained_at_kill = s.pods[DRAINED].calls
        loop = asyncio.get_running_loop()
        s.replica.start()
        await s.replica.wait_ready()
        start_to_ready_s = loop.time() - s.replica.started_at
        clients.mark()
        ok_at_ready = clients.codes["OK"]
        await wait_for(
            lambda: clients.codes["OK"] >= ok_at_ready + 600, timeout_s=60, what="calls after"
        )
    finally:
        await clients.stop()
    figures = {
        "calls_to_drained_pod_after_restart": s.pods[DRAINED].calls - drained_at_kill,
        "client_errors": clients.errors(),
        "client_errors_after_ready": clients.errors(after_mark=True),
        "codes": dict(clients.codes),
        "calls": sum(clients.codes.values()),
        "start_to_ready_s": round(start_to_ready_s, 2),
        # The fetch and apply alone, as the restarted replica logged it (None: no control plane).
        "desired_state_s": _last_fetch_s(s.replica.stderr()),
    }
    log.warning("replica restart figures: %s", json.dumps(figures))
    return figures


def _last_fetch_s(stderr: str) -> float | None:
    times = re.findall(r"desired state from \S+ applied in ([0-9.]+) s", stderr)
    return float(times[-1]) if times else None


@pytest.mark.timeout(240)
async def test_a_restarted_replica_sends_no_call_to_a_drained_pod(
    stack: Callable[[bool], Awaitable[Stack]],
) -> None:
    s = await stack(True)
    await _drain_through_the_api(s)
    figures = await _restart_under_load(s)
    assert figures["calls_to_drained_pod_after_restart"] == 0, figures
    assert figures["desired_state_s"] is not None, s.replica.stderr()
    assert figures["client_errors_after_ready"] == 0, figures
    # Only calls in flight at the kill can fail; the ones made while it was away waited.
    assert figures["client_errors"] <= CLIENTS, figures
    await wait_for(s.replica_up, timeout_s=5, what="the collector to see the replica back")
    await wait_for(
        lambda: s.frame()["replicas"][0]["converged"] is True, timeout_s=10, what="converged"
    )
    replicas = await asyncio.to_thread(s.api, "GET", "/api/v1/replicas/")
    assert [(r["id"], r["up"], r["converged"]) for r in replicas.body] == [("b0", True, True)]


@pytest.mark.timeout(240)
async def test_without_a_control_plane_the_restarted_replica_calls_the_drained_pod(
    stack: Callable[[bool], Awaitable[Stack]],
) -> None:
    """Today's behaviour without `[control_plane]`, for comparison: the replica starts on
    its config file's state and the drained pod takes calls until the reconciler acts."""
    s = await stack(False)
    await _drain_through_the_api(s)
    figures = await _restart_under_load(s)
    assert figures["calls_to_drained_pod_after_restart"] > 0, figures
    await wait_for(lambda: s.pod_state(DRAINED) == "DRAINED", timeout_s=15, what="reconciled")
