from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from balancer.config import BalancerConfig
from balancer.server import Balancer
from tests.support.backend import Backend, start_backend
from tests.support.inventory import InventoryFleet, InventoryServer
from tests.support.xds import XdsClientProcess, write_bootstrap


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    """A factory of real backends on port 0, all stopped at teardown."""
    started: list[Backend] = []

    async def start(name: str, **kwargs: object) -> Backend:
        backend = await start_backend(name, **kwargs)  # type: ignore[arg-type]
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()


@pytest.fixture
async def balancers() -> AsyncIterator[Callable[..., Awaitable[Balancer]]]:
    """A factory of started in-process balancers, stopped at teardown."""
    started: list[Balancer] = []

    async def start(config: BalancerConfig, **kwargs: object) -> Balancer:
        balancer = Balancer(config, **kwargs)  # type: ignore[arg-type]
        await balancer.start()
        started.append(balancer)
        return balancer

    yield start
    for balancer in started:
        await balancer.stop(grace_s=0)


@pytest.fixture
async def inventories() -> AsyncIterator[Callable[[str], Awaitable[InventoryServer]]]:
    """A factory of in-process demo Inventory servers, stopped at teardown."""
    fleet = InventoryFleet()
    yield fleet.start
    await fleet.stop_all()


@pytest.fixture
def fresh_dashboard_state() -> Iterator[None]:
    """A fresh in-memory channel layer and page history, for a test that runs the
    dashboard's collector in this process (imported here: balancer tests need no Django)."""
    from channels.layers import channel_layers

    from dashboard.app.history import service_history

    channel_layers.backends.clear()
    service_history.cache_clear()
    yield
    channel_layers.backends.clear()
    service_history.cache_clear()


@pytest.fixture
async def xds_clients(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[XdsClientProcess]]]:
    """A factory of real grpcio proxyless clients (`xds:///echo`) of a balancer's xDS
    server, each with its own bootstrap file; closed at teardown."""
    started: list[XdsClientProcess] = []

    async def start(balancer: Balancer, node_id: str = "client-1") -> XdsClientProcess:
        assert balancer.xds_address is not None
        bootstrap = write_bootstrap(tmp_path / f"{node_id}.json", balancer.xds_address, node_id)
        client = await XdsClientProcess.start("xds:///echo", bootstrap)
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()
