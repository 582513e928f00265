"""`LoadGenerator`: long-lived client services calling at a target rate, open loop.

Each client is one service with one gRPC channel (its own TCP connection, as a
real service has) and a fixed schedule: a call every 1/rate seconds, issued on
time whether or not earlier calls have answered (open loop, so a slow pod
shows up as latency and in-flight calls, not as a lower offered rate). A
client whose schedule fell behind (a busy event loop) issues the overdue calls
at once: the offered load over a window stays what was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from demo.loadgen.calls import Calls
from demo.loadgen.spec import ClientSpec, Method
from demo.loadgen.stats import ClientCounters, ClientStats, LoadStats

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Channels to one target share a connection unless each has its own pool;
    # separate services do not share connections.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class _Client:
    """One client service: its channel, schedule, calls in flight and counters."""

    def __init__(self, spec: ClientSpec, rng: random.Random) -> None:
        self.spec = spec
        self.counters = ClientCounters()
        self._rng = rng
        self._methods: list[Method] = list(spec.mix)
        self._weights = [spec.mix[m] for m in self._methods]
        self._channel: grpc.aio.Channel | None = None
        self._call_fns: dict[Method, Callable[[str], Awaitable[str | None]]] = {}
        self._pacer: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sequence = 0

    def start(self, duration_s: float | None, options: Sequence[tuple[str, Any]]) -> None:
        """Opens the channel and starts the schedule (for `duration_s`, or until stop)."""
        self._channel = grpc.aio.insecure_channel(self.spec.target, options=options)
        self._call_fns = Calls(self._channel, self.spec).by_method()
        self._pacer = asyncio.create_task(self._pace(duration_s), name=f"pace {self.spec.name}")

    def snapshot(self) -> ClientStats:
        return self.counters.snapshot(self.spec.name, self.spec.target, len(self._in_flight))

    async def wait(self) -> None:
        """Returns once the schedule is over and every call it sent has ended."""
        if self._pacer is not None:
            # A pacer cancelled by stop() is a schedule that is over, too.
            await asyncio.gather(self._pacer, return_exceptions=True)
        while self._in_flight:
            await asyncio.wait(list(self._in_flight))

    async def stop(self, grace_s: float) -> None:
        """Ends the schedule, gives calls in flight `grace_s` to end, cancels the rest."""
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace_s)
        leftovers = list(self._in_flight)
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _pace(self, duration_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        interval_s = 1 / self.spec.rate_per_s
        start_s = loop.time()
        end_s = math.inf if duration_s is None else start_s + duration_s
        # A random phase, so clients started together do not call in lockstep.
        due_s = start_s + self._rng.random() * interval_s
        while due_s < end_s:
            # sleep(0) when behind: a rate beyond what the loop can issue must
            # still let the calls run, not spin here forever.
            await asyncio.sleep(max(due_s - loop.time(), 0))
            self._tick()
            due_s += interval_s

    def _tick(self) -> None:
        # The method is drawn even for a skipped tick, so the sequence of draws
        # (hence the mix under a seed) does not depend on how fast the target is.
        method = self._rng.choices(self._methods, self._weights)[0]
        self.counters.attempted += 1
        if len(self._in_flight) >= self.spec.max_in_flight:
            self.counters.skipped += 1
            return
        self.counters.methods[method] += 1
        task = asyncio.create_task(self._call(method))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _call(self, method: Method) -> None:
        self._sequence += 1
        call_id = f"{self.spec.name}-{self._sequence}"
        started_s = time.perf_counter()
        try:
            pod = await self._call_fns[method](call_id)
        except grpc.aio.AioRpcError as error:
            self._record(error.code().name, None, started_s)
        except asyncio.CancelledError:
            self._record("CANCELLED", None, started_s)
            raise
        except Exception:  # a malformed answer: count it, keep the load going
            log.exception("client %s: %s call failed", self.spec.name, method)
            self._record("UNKNOWN", None, started_s)
        else:
            self._record("OK", pod, started_s)

    def _record(self, code: str, pod: str | None, started_s: float) -> None:
        # `self.counters` at the end of the call: after a reset, the new window's.
        self.counters.record(code, pod, time.perf_counter() - started_s)


class LoadGenerator:
    """Client services calling their targets at their rates. Embeddable.

    `start(duration_s)` then `wait()` for a fixed run, or `start()` then
    `stop()`; `run()` does the former and returns the stats. `stats()` reads
    the counters any time; `reset()` starts a new window (e.g. "after the
    rollout"). `rng` seeds each client's phase and method draws.
    """

    def __init__(
        self,
        clients: Sequence[ClientSpec],
        *,
        rng: random.Random | None = None,
        channel_options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
    ) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        rng = rng or random.Random()
        # One generator per client, seeded from `rng`: a client's draws do not
        # depend on how the others' calls interleave with it.
        self._clients = [_Client(spec, random.Random(rng.getrandbits(64))) for spec in clients]
        self._options = tuple(channel_options)
        self._started = False
        self._stopping = asyncio.Event()
        self._window_start_s: float | None = None
        self._stopped_s: float | None = None

    async def start(self, duration_s: float | None = None) -> None:
        """Opens every client's channel and starts calling; for `duration_s`, or until stop()."""
        if self._started:
            raise RuntimeError("a LoadGenerator starts once")
        self._started = True
        self._window_start_s = time.monotonic()
        for client in self._clients:
            client.start(duration_s, self._options)

    async def wait(self) -> None:
        """Returns once every schedule is over (start had a duration) and its calls ended."""
        await asyncio.gather(*(c.wait() for c in self._clients))
        self._stopped_s = self._stopped_s or time.monotonic()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops calling; calls in flight get `grace_s` to end, then are cancelled."""
        self._stopping.set()
        self._stopped_s = self._stopped_s or time.monotonic()
        await asyncio.gather(*(c.stop(grace_s) for c in self._clients))

    async def run(self, duration_s: float, *, warmup_s: float = 0.0) -> LoadStats:
        """Calls for `warmup_s + duration_s`; returns the stats of the last `duration_s`."""
        await self.start(warmup_s + duration_s)
        try:
            if warmup_s > 0 and not await self._stopped_within(warmup_s):
                self.reset()
            await self.wait()
        finally:
            await self.stop(grace_s=0)
        return self.stats()

    async def _stopped_within(self, timeout_s: float) -> bool:
        """True as soon as stop() is called; False once `timeout_s` has passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout_s)
        return self._stopping.is_set()

    def reset(self) -> None:
        """Starts a new window: counters from zero (calls in flight end in the new one)."""
        self._window_start_s = time.monotonic()
        if self._stopped_s is not None:  # stopped: the new window is empty, and stays so
            self._stopped_s = self._window_start_s
        for client in self._clients:
            client.counters = ClientCounters()

    def stats(self) -> LoadStats:
        """Every client's counts since start() or the last reset()."""
        end_s = self._stopped_s or time.monotonic()
        elapsed_s = end_s - self._window_start_s if self._window_start_s is not None else 0.0
        return LoadStats(elapsed_s=elapsed_s, clients=tuple(c.snapshot() for c in self._clients))
