"""Services that start, run until told to stop, and stop: the balancer, the workload,
the collector and the dashboard server all take this shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

ShutdownTrigger = Callable[[], Awaitable[object]]


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until(service: Service, shutdown_trigger: ShutdownTrigger) -> None:
    """Starts `service`, waits for `shutdown_trigger()` to return (or this to be
    cancelled), then stops it, also when starting or waiting failed."""
    await service.start()
    try:
        await shutdown_trigger()
    finally:
        await service.stop()
