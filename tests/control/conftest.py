"""A running control plane for the API tests: three real backends behind a real balancer,
the dashboard on a free port with the collector and reconciler embedded, named users
(a viewer and an operator, each with a session and a token) and real HTTP."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc.aio
import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings
from knox.models import AuthToken

from balancer.config import BalancerConfig, config_from_dict
from balancer.server import Balancer
from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.app.history import service_history
from dashboard.control import actions
from dashboard.control.api.base import DENIALS
from dashboard.control.roles import OPERATOR, VIEWER
from dashboard.server import DashboardServer
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.waiting import wait_for

SERVICE = "inventory"
PODS = ("pod-a", "pod-b", "pod-c")
PASSWORD = "correct horse battery staple"
# Who calls: no credentials, a browser session (with its CSRF token), an API token.
ANONYMOUS, VIEWER_SESSION, OPERATOR_SESSION = "anonymous", "viewer", "operator"
VIEWER_TOKEN, OPERATOR_TOKEN = "viewer-token", "operator-token"
IDENTITIES = (ANONYMOUS, VIEWER_SESSION, OPERATOR_SESSION, OPERATOR_TOKEN, VIEWER_TOKEN)


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_denial_budget() -> None:
    """Each test's actors start with their whole budget of audited denials a minute."""
    DENIALS.reset()


@pytest.fixture
def fresh_history() -> Iterator[None]:
    service_history.cache_clear()
    yield
    service_history.cache_clear()


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Credentials:
    """Per identity: the headers its requests carry."""

    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)


def balancer_config(
    pods: Sequence[Backend], listen: str = "127.0.0.1:0", admin: str = "127.0.0.1:0"
) -> BalancerConfig:
    """The `inventory` cluster in front of `pods`, its admin API on `admin`."""
    endpoints = [{"address": b.address, "name": b.name} for b in pods]
    return config_from_dict(
        {
            "balancer": {"id": "test"},
            "listeners": [{"address": listen}],
            "clusters": [{"name": SERVICE, "discovery": {"endpoints": endpoints}}],
            "admin": {"address": admin, "token": ADMIN_TOKEN},
        },
        environ={},
    )


def _session_headers(user: User) -> dict[str, str]:
    """A logged-in browser: its session cookie, and the CSRF cookie and header it sends
    (the unmasked secret is a valid token)."""
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    csrf = secrets.token_hex(16)
    return {
        "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}",
        "X-CSRFToken": csrf,
    }


@pytest.fixture
def credentials(transactional_db: None, django_user_model: type[User]) -> Credentials:
    """A viewer and an operator, each with a browser session and an API token."""
    creds = Credentials()
    creds.headers[ANONYMOUS] = {}
    for role in (VIEWER, OPERATOR):
        group, _ = Group.objects.get_or_create(name=role)  # a flush drops the migration's
        user = django_user_model.objects.create_user(role, password=PASSWORD)
        user.groups.add(group)
        creds.users[role] = user
        creds.headers[role] = _session_headers(user)
        _, token = AuthToken.objects.create(user=user, expiry=None)
        creds.headers[f"{role}-token"] = {"Authorization": f"Token {token}"}
    return creds


@dataclass
class Api:
    """The running dashboard and what it controls, called over real HTTP."""

    server: DashboardServer
    plane: ControlPlane
    balancer: Balancer
    pods: dict[str, Backend]
    credentials: Credentials

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        who: str = OPERATOR_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {**self.credentials.headers[who], **(headers or {})}
        return await asyncio.to_thread(http, method, self.url(path), body, sent)

    def endpoint(self, pod: str) -> Any:
        return self.balancer.clusters[SERVICE].endpoints[pod]

    def frame(self) -> dict[str, Any]:
        return actions.latest_frame(SERVICE) or {}


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """One request; the JSON answer (or the text when it is not JSON) whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), dict(err.headers)
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Reply(status, parsed, got)


def all_ready(api: Api) -> bool:
    """The newest frame has every pod READY behind an up replica."""
    frame = api.frame()
    states = {p["pod"]: p["state"] for p in frame.get("pods", [])}
    up = [r["up"] for r in frame.get("replicas", [])]
    return bool(up) and all(up) and all(states.get(p) == "READY" for p in PODS)


@pytest.fixture
async def api(
    backends: Callable[..., Awaitable[Backend]],
    balancers: Callable[..., Awaitable[Balancer]],
    credentials: Credentials,
    fresh_history: None,
) -> AsyncIterator[Api]:
    """The dashboard with its control plane over a balancer of three pods, once the
    first frame shows all three READY."""
    pods = {name: await backends(name) for name in PODS}
    balancer = await balancers(balancer_config(list(pods.values())))
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        plane = ControlPlane(collector_config({"b0": balancer.admin_address or ""}, ADMIN_TOKEN))
        server = DashboardServer(port=0, background=plane)
        await server.start()
        running = Api(server, plane, balancer, pods, credentials)
        try:
            await wait_for(lambda: all_ready(running), timeout_s=20, what="every pod READY")
            yield running
        finally:
            await server.stop()


async def calls_per_pod(api: Api, count: int, balancer: Balancer | None = None) -> dict[str, int]:
    """Sends `count` unary calls through the balancer; how many each pod served."""
    target = balancer or api.balancer
    before = {name: pod.calls for name, pod in api.pods.items()}
    async with grpc.aio.insecure_channel(target.listen_addresses[0]) as channel:
        call = channel.unary_unary(be.UNARY)
        for _ in range(count):
            await call(b"ping", timeout=5)
    return {name: pod.calls - before[name] for name, pod in api.pods.items()}
