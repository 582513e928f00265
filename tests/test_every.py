"""balancer.lifecycle.every: a periodic part survives a pass that raises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from balancer.lifecycle import every

log = logging.getLogger("tests.every")


async def test_a_pass_that_raises_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    passes: list[int] = []
    third = asyncio.Event()

    async def one_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("boom")
        if len(passes) == 3:
            third.set()

    task = asyncio.create_task(every(0.01, one_pass, log, "the pass failed; trying again"))
    await asyncio.wait_for(third.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failures = [r for r in caplog.records if r.name == "tests.every"]
    assert [r.getMessage() for r in failures] == ["the pass failed; trying again"]
    assert failures[0].exc_info is not None and "boom" in str(failures[0].exc_info[1])
