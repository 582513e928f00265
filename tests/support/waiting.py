"""Poll for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(
    predicate: Callable[[], object], timeout_s: float = 10.0, what: str = ""
) -> None:
    """Returns once `predicate()` is truthy; fails the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)
