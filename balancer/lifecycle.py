"""Services that start, run until told to stop, and stop: the balancer, the workload,
the collector and the dashboard server all take this shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


class OneTask:
    """A part that runs one background task, `_run`: `start()` creates it, `stop()` cancels
    it and returns once it has ended. Subclasses name the task (`task_name`)."""

    task_name = "background"
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def every(
    interval_s: float, one_pass: Callable[[], Awaitable[object]], log: logging.Logger, failed: str
) -> None:
    """Runs `one_pass` every `interval_s` until cancelled. A pass that raises is logged on
    `log` (`failed`, with its traceback) and the next one runs on time: a periodic part
    never dies of one bad pass."""
    while True:
        try:
            await one_pass()
        except Exception:
            log.exception(failed)
        await asyncio.sleep(interval_s)
