"""The dashboard process as `make demo` and `python -m dashboard` run it: uvicorn in the
test's event loop, the collector embedded, a real balancer, real sockets and a real
websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.layers import get_channel_layer
from django.test import override_settings

from balancer.server import Balancer
from dashboard.app.collecting import FrameFollower, collector_config, dashboard_collector
from dashboard.app.history import service_history
from dashboard.app.live import BACKFILL_TYPE, CLOSE_UNAUTHENTICATED, publish_frame
from dashboard.server import DashboardServer, ListenError
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.sockets import taken_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
SERVICE = "inventory"


@pytest.fixture
def fresh_history() -> Any:
    """An empty page history sized for the test's settings."""
    service_history.cache_clear()
    yield
    service_history.cache_clear()


@pytest.fixture
async def dashboard(
    backends: Callable[..., Awaitable[Backend]],
    balancers: Callable[..., Awaitable[Balancer]],
    fresh_history: None,
) -> AsyncIterator[tuple[DashboardServer, Balancer]]:
    """The dashboard on a free port, its collector watching a balancer of two pods that
    takes a steady trickle of calls."""
    pods = [await backends("pod-a"), await backends("pod-b")]
    balancer = await balancers(config(pods, admin={}, cluster={"name": SERVICE}))
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        collector = dashboard_collector(
            collector_config({"b0": balancer.admin_address or ""}, ADMIN_TOKEN)
        )
        server = DashboardServer(port=0, background=collector)
        await server.start()
        traffic = asyncio.create_task(_calls(balancer))
        try:
            yield server, balancer
        finally:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
            await server.stop()


async def _calls(balancer: Balancer) -> None:
    import grpc.aio

    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        while True:
            await channel.unary_unary(be.UNARY)(b"ping", timeout=5)
            await asyncio.sleep(0.005)


def _connect(server: DashboardServer, cookie: bytes | None, path: str = SERVICE) -> Any:
    headers = {"Cookie": cookie.decode()} if cookie else {}
    return websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws/services/{path}/",
        origin=websockets.Origin(f"http://127.0.0.1:{server.port}"),
        additional_headers=headers,
    )


async def test_a_browser_gets_live_frames_with_both_pods_busy(
    dashboard: tuple[DashboardServer, Balancer], session_cookie: bytes
) -> None:
    server, _ = dashboard
    async with _connect(server, session_cookie) as ws:
        assert json.loads(await ws.recv())["type"] == BACKFILL_TYPE
        seen: dict[str, float] = {}
        async with asyncio.timeout(20):
            while not (seen.get("pod-a") and seen.get("pod-b")):
                frame = json.loads(await ws.recv())
                assert frame["service"] == SERVICE
                seen = {p["pod"]: p["rps"] or 0.0 for p in frame["pods"]}
        assert frame["replicas"] == [{"id": "b0", "up": True, "converged": None}]
        assert frame["totals"]["rps"] > 0


async def test_the_page_history_fills_from_the_embedded_collector(
    dashboard: tuple[DashboardServer, Balancer], session_cookie: bytes
) -> None:
    server, _ = dashboard
    await wait_for(lambda: service_history().count(SERVICE) >= 2, what="two frames in history")
    url = f"http://127.0.0.1:{server.port}/services/{SERVICE}/history.json"
    request = urllib.request.Request(url, headers={"Cookie": session_cookie.decode()})
    with await asyncio.to_thread(urllib.request.urlopen, request, timeout=10) as response:
        frames = json.loads(response.read())
    assert len(frames) >= 2
    assert [f["t"] for f in frames] == sorted(f["t"] for f in frames)
    assert all(f["service"] == SERVICE for f in frames)


async def test_an_anonymous_websocket_is_closed_with_4401(
    dashboard: tuple[DashboardServer, Balancer],
) -> None:
    server, _ = dashboard
    async with _connect(server, None) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_UNAUTHENTICATED


async def test_a_foreign_origin_is_refused(dashboard: tuple[DashboardServer, Balancer]) -> None:
    server, _ = dashboard
    url = f"ws://127.0.0.1:{server.port}/ws/services/{SERVICE}/"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=websockets.Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403


async def test_stopping_closes_open_websockets(
    dashboard: tuple[DashboardServer, Balancer], session_cookie: bytes
) -> None:
    server, _ = dashboard
    async with _connect(server, session_cookie) as ws:
        await ws.recv()
        await server.stop()
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()


async def test_a_taken_port_is_a_clear_error() -> None:
    with taken_port() as address:
        port = int(address.rsplit(":", 1)[1])
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: Address"):
            DashboardServer(port=port).bind()


def _dashboard_process(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BALLAST_", "SECRET"))}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    environ.update(BALLAST_DB_PATH=str(tmp_path / "db.sqlite3"), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ,
    )  # fmt: skip


def test_python_m_dashboard_serves_the_login_page_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = _dashboard_process(tmp_path, "--migrate", BALLAST_DEV="1", BALLAST_SERVICES="x")
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        url = next(line.split()[-1] for line in lines if line.startswith("dashboard: http"))
        assert any("BALLAST_BALANCERS is not set" in line for line in lines), lines
        with urllib.request.urlopen(url + "accounts/login/", timeout=10) as response:
            assert response.status == 200
            assert b'name="password"' in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()


def test_python_m_dashboard_without_a_secret_key_says_what_to_set(tmp_path: Path) -> None:
    process = _dashboard_process(tmp_path)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "SECRET_KEY is not set" in output


async def test_without_a_collector_here_the_history_fills_from_the_channel_layer(
    fresh_history: None,
) -> None:
    """A separate `runcollector` publishes; this process keeps the frames for first paint."""
    follower = FrameFollower(["inventory"])
    await follower.start()
    try:
        layer = get_channel_layer()
        t = int(time.time() * 1000)
        frame = {"type": "service.frame", "service": "inventory", "t": t, "pods": []}
        await publish_frame(layer, {**frame, "service": "payments"})  # not followed
        await publish_frame(layer, frame)
        await wait_for(lambda: service_history().count("inventory") == 1, what="the frame")
        assert service_history().count("payments") == 0
        assert json.loads(service_history().latest("inventory", 1)[0]) == frame
    finally:
        await follower.stop()
