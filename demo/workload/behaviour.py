"""What the knobs do to a call: wait, burn CPU, keep memory, fail.

Everything random or time based comes in through the constructor (the random generator, the
sleep, the CPU clock) so a test can make it deterministic.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from demo.workload.knobs import Knobs

Sleep = Callable[[float], Awaitable[object]]

# The byte the leak is filled with: non-zero, so every page is written (resident, counted in
# RSS and the working set) and the kernel cannot back it with the shared zero page.
_FILL = b"\xa5"
# Pure-Python work between two reads of the CPU clock, so the burnt time is mostly user time
# spent computing rather than system time spent reading the clock.
_CPU_CHUNK = 2_000


@dataclass(frozen=True)
class Failure:
    """An injected failure: the status a call ends with; `details` say it is on purpose."""

    code: grpc.StatusCode
    details: str


class Misbehaviour:
    """The pod's current knobs and their effects; `knobs` may be replaced at any time.

    Per call, a servicer calls `draw_failure()` once when the call starts, and `work()` once per
    response message (see `service` for why per message). Random draws, in order: one for the
    jitter in each `work()` when `jitter_ms` > 0; one for the failure in `draw_failure()` when
    `error_rate` > 0. Nothing else draws, so a seeded generator replays a run exactly.
    """

    def __init__(
        self,
        knobs: Knobs,
        *,
        rng: random.Random,
        sleep: Sleep = asyncio.sleep,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.knobs = knobs
        self._rng = rng
        self._sleep = sleep
        self._cpu_clock = cpu_clock
        # Never freed while the pod lives: that is the point.
        self._leaked: list[bytearray] = []
        self.leaked_bytes = 0

    def draw_failure(self) -> Failure | None:
        """How this call must fail, or None when it succeeds."""
        knobs = self.knobs
        if knobs.error_rate > 0 and self._rng.random() < knobs.error_rate:
            details = f"injected failure (error_rate={knobs.error_rate:g})"
            return Failure(knobs.status_code, details)
        return None

    async def work(self) -> None:
        """Waits the latency (not blocking the loop), then burns CPU and leaks memory."""
        knobs = self.knobs
        delay_ms = knobs.latency_ms
        if knobs.jitter_ms > 0:
            delay_ms += self._rng.random() * knobs.jitter_ms
        if delay_ms > 0:
            await self._sleep(delay_ms / 1000)
        self.burn_cpu(knobs.cpu_ms)
        self.leak(knobs.leak_bytes)

    def burn_cpu(self, cpu_ms: float) -> None:
        """Computes until the CPU clock advanced `cpu_ms`.

        It blocks the event loop meanwhile, as CPU-bound work does in a real Python service:
        other calls on this pod wait, which is what makes a hot pod slow for everyone.
        """
        if cpu_ms <= 0:
            return
        deadline = self._cpu_clock() + cpu_ms / 1000
        while self._cpu_clock() < deadline:
            sum(range(_CPU_CHUNK))

    def leak(self, size_bytes: int) -> None:
        """Allocates `size_bytes`, writes every byte and keeps the buffer forever."""
        if size_bytes <= 0:
            return
        self._leaked.append(bytearray(_FILL) * size_bytes)
        self.leaked_bytes += size_bytes
