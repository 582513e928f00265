"""The data plane: pass any gRPC call through to a picked endpoint as raw bytes.

The wire does not say whether a method is unary or streaming, so the general
path is stream-to-stream, which carries all four kinds. Methods known to be
unary (from the config or the upstream's server reflection) take a faster
unary-to-unary path. Either way the client sees exactly what the endpoint
sent: response headers, messages, trailers, status code and details.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # InternalError: see _raw_sender

from balancer.cluster import Cluster
from balancer.config import Route
from balancer.endpoint import Endpoint
from balancer.limits import InFlightBytes
from balancer.stats import CODE_INDEX

log = logging.getLogger(__name__)

_OK = CODE_INDEX[grpc.StatusCode.OK]
_CANCELLED = CODE_INDEX[grpc.StatusCode.CANCELLED]
_UNAVAILABLE = CODE_INDEX[grpc.StatusCode.UNAVAILABLE]
_DEADLINE_EXCEEDED = CODE_INDEX[grpc.StatusCode.DEADLINE_EXCEEDED]
_RESOURCE_EXHAUSTED = CODE_INDEX[grpc.StatusCode.RESOURCE_EXHAUSTED]
_DEADLINE_SLACK_S = 0.05
# What Core says when a message from the endpoint passes the channel's receive limit.
_TOO_LARGE_FROM_ENDPOINT = re.compile(
    r"CLIENT: Received message larger than max (\(\d+ vs\. \d+\))"
)
# Enough for every method a service has; past it (a client inventing method names) don't cache.
_MAX_CACHED_METHODS = 4096

Clock = Callable[[], float]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Router:
    """Maps a method path to its cluster: the first matching route, else the default."""

    def __init__(
        self, routes: Sequence[Route], clusters: dict[str, Cluster], default: str | None
    ) -> None:
        self._routes = [(r.path_prefix, clusters[r.cluster]) for r in routes]
        if default is None and len(clusters) == 1:
            default = next(iter(clusters))
        self._default = clusters[default] if default is not None else None

    def cluster_for(self, method: str) -> Cluster | None:
        for prefix, cluster in self._routes:
            if method.startswith(prefix):
                return cluster
        return self._default


class ProxyHandler(grpc.GenericRpcHandler):
    """The generic handler the listener's server asks for every incoming call."""

    def __init__(
        self,
        router: Router,
        *,
        clock: Clock,
        record_stats: bool,
        limits: Limits | None = None,
    ) -> None:
        self._router = router
        self._clock = clock
        self._record_stats = record_stats
        self.limits = limits or Limits()
        self._handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._build(method)
            if len(self._handlers) < _MAX_CACHED_METHODS:
                self._handlers[method] = handler
        return handler

    def forget_methods(self) -> None:
        """Drops cached handlers, after a cluster learned which of its methods are unary."""
        self._handlers.clear()

    def _build(self, method: str) -> Handler:
        cluster = self._router.cluster_for(method)
        if cluster is None:
            return grpc.unary_unary_rpc_method_handler(_no_route(method))
        call = _Call(cluster, method, self._clock, self._record_stats, self.limits)
        if method in cluster.unary_methods:
            return grpc.unary_unary_rpc_method_handler(call.unary)
        return grpc.stream_stream_rpc_method_handler(call.stream)


def _no_route(method: str) -> Callable[[bytes, Context], Any]:
    async def reject(request: bytes, context: Context) -> bytes:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"ballast: no route for {method} and no default cluster; add a route for it",
        )
        raise AssertionError("abort raises")

    return reject


class Limits:
    """What one proxy may hold: the message size limit and the in-flight bytes budget."""

    __slots__ = ("budget", "max_message_bytes")

    def __init__(self, max_message_bytes: int = 4 << 20, max_in_flight_bytes: int = 128 << 20):
        self.max_message_bytes = max_message_bytes
        self.budget = InFlightBytes(max_in_flight_bytes)

    def too_large_from(self, ep: Endpoint, err: grpc.aio.AioRpcError) -> str | None:
        """Ballast's message for an endpoint's message over the limit; None for other errors."""
        if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
            return None
        found = _TOO_LARGE_FROM_ENDPOINT.search(err.details() or "")
        if found is None:
            return None
        sizes = found.group(1)
        return (
            f"ballast: endpoint {ep.id} sent a message larger than Ballast's limit toward the"
            f" endpoint {sizes} (balancer.max_message_bytes = {self.max_message_bytes});"
            " raise balancer.max_message_bytes if such messages are expected"
        )


class _Held:
    """Bytes taken from the budget for one message, given back once by `release`."""

    __slots__ = ("_budget", "_n_bytes")

    def __init__(self, budget: InFlightBytes, n_bytes: int) -> None:
        self._budget = budget
        self._n_bytes = n_bytes

    def release(self) -> None:
        self._budget.give_back(self._n_bytes)
        self._n_bytes = 0


class _OverBudget(Exception):
    """A message did not fit the in-flight bytes budget; `message` says so to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Call:
    """Proxies calls to one method of one cluster."""

    def __init__(
        self, cluster: Cluster, method: str, clock: Clock, record_stats: bool, limits: Limits
    ) -> None:
        self._cluster = cluster
        self._method = method
        self._clock = clock
        self._record_stats = record_stats
        self._limits = limits

    async def _pick(self, context: Context) -> Endpoint:
        """The endpoint for this call; ends the call with UNAVAILABLE and the reason if none."""
        ep = self._cluster.pick()
        if ep is None:
            reason = self._cluster.no_endpoint_reason()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"ballast: {reason}")
        assert ep is not None and ep.channel is not None
        return ep

    async def unary(self, request: bytes, context: Context) -> bytes:
        budget = self._limits.budget
        if not budget.try_take(len(request)):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, budget.refusal(len(request)))
        held = _Held(budget, len(request))
        try:
            return await self._unary(request, context, held)
        finally:
            held.release()

    async def _unary(self, request: bytes, context: Context, held: _Held) -> bytes:
        ep = await self._pick(context)
        assert ep.channel is not None
        multicallable = ep.unary_callables.get(self._method)
        if multicallable is None:
            multicallable = ep.channel.unary_unary(self._method)
            if len(ep.unary_callables) < _MAX_CACHED_METHODS:
                ep.unary_callables[self._method] = multicallable
        start = self._clock()
        call = multicallable(
            request, metadata=context.invocation_metadata(), timeout=context.time_remaining()
        )
        ep.calls.add(call)
        code, sent = _CANCELLED, 0
        try:
            response: bytes = await call
            held.release()  # the endpoint answered: the request is sent
            if not self._limits.budget.try_take(len(response)):
                raise _OverBudget(self._limits.budget.refusal(len(response)))
            self._limits.budget.give_back(len(response))  # held only until returned to Core
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(initial)
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            code, sent = _OK, len(response)
            return response
        except grpc.aio.AioRpcError as err:
            code = CODE_INDEX[err.code()]
            await self._relay_error(context, ep, err)
        except _OverBudget as over:
            code = _RESOURCE_EXHAUSTED
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, over.message)
        except asyncio.CancelledError:
            code = _cancelled_code(context)
            if not _cancelled_by_drain(ep):
                raise
            code = _UNAVAILABLE
            await _abort_drained(context, ep)
        finally:
            self._finish(ep, call, code, start, len(request), sent)
        raise AssertionError("unreachable: every path returns or raises")

    async def _stream(self, context: Context) -> None:
        ep = await self._pick(context)
        assert ep.channel is not None
        start = self._clock()
        call: grpc.aio.StreamStreamCall[bytes, bytes] = ep.channel.stream_stream(self._method)(
            metadata=context.invocation_metadata(), timeout=context.time_remaining()
        )
        ep.calls.add(call)
        counts = _Counts()
        budget = self._limits.budget
        pump = asyncio.get_running_loop().create_task(_pump_requests(context, call, counts, budget))
        code = _CANCELLED
        try:
            code = await _relay_responses(context, call, counts, budget)
        except grpc.aio.AioRpcError as err:
            if counts.refusal is not None:  # the pump cancelled the call: a request over budget
                raise _OverBudget(counts.refusal) from None
            code = CODE_INDEX[err.code()]
            await self._relay_error(context, ep, err, headers_sent=counts.headers_sent)
        except asyncio.CancelledError:
            if counts.refusal is not None:  # reading a call the pump cancelled raises this too
                raise _OverBudget(counts.refusal) from None
            code = _cancelled_code(context)
            if not _cancelled_by_drain(ep):
                raise
            code = _UNAVAILABLE
            await _abort_drained(context, ep)
        finally:
            pump.cancel()
            call.cancel()
            if counts.refusal is not None:
                code = _RESOURCE_EXHAUSTED
            self._finish(ep, call, code, start, counts.received, counts.sent)

    async def stream(self, requests: object, context: Context) -> None:
        try:
            await self._stream(context)
        except _OverBudget as over:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, over.message)

    async def _relay_error(
        self,
        context: Context,
        ep: Endpoint,
        err: grpc.aio.AioRpcError,
        *,
        headers_sent: bool = False,
    ) -> None:
        """Relays the endpoint's error; Ballast's own limit is named as Ballast's."""
        too_large = self._limits.too_large_from(ep, err)
        if too_large is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, too_large)
        await _relay_error(context, err, headers_sent=headers_sent)

    def _finish(
        self, ep: Endpoint, call: grpc.aio.Call, code: int, start: float, received: int, sent: int
    ) -> None:
        now = self._clock()
        latency = now - start
        if self._record_stats:
            ep.stats.record(code, latency, received, sent)
        self._cluster.record_result(ep, code, latency, now)
        ep.finish(call, now)


class _Counts:
    __slots__ = ("headers_sent", "received", "refusal", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.headers_sent = False
        # Set when a request or a response did not fit the in-flight bytes budget.
        self.refusal: str | None = None


def _cancelled_code(context: Context) -> int:
    """DEADLINE_EXCEEDED when the call was cancelled because its deadline passed.

    Core's deadline timer and Python's wall clock disagree by a few ms (measured: 9
    of 20 late calls cancelled with time left), hence the slack.
    """
    remaining = context.time_remaining()
    return (
        _DEADLINE_EXCEEDED
        if remaining is not None and remaining <= _DEADLINE_SLACK_S
        else _CANCELLED
    )


async def _pump_requests(
    context: Context, call: grpc.aio.StreamStreamCall[Any, Any],
    counts: _Counts, budget: InFlightBytes,
) -> None:  # fmt: skip
    """Client → endpoint: every request message, then the half-close.

    Stops quietly once the endpoint has ended the call: its status, not a
    failed write, is what goes back to the client.
    """
    send = _raw_sender(call)
    try:
        await call.wait_for_connection()  # Core takes messages only after the headers
        while (message := await context.read()) is not grpc.aio.EOF:
            counts.received += len(message)
            if call.done():
                return
            if not budget.try_take(len(message)):
                counts.refusal = budget.refusal(len(message))
                call.cancel()
                return
            try:
                await send(message)
            finally:
                budget.give_back(len(message))
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        pass
    except cygrpc.InternalError:
        pass  # a write or the half-close after the endpoint's status: the status stands


def _raw_sender(call: grpc.aio.StreamStreamCall[Any, Any]) -> Callable[[bytes], Awaitable[None]]:
    """Sends one raw message on `call` without overwriting the endpoint's status.

    grpc.aio's `write` turns a write that fails because the endpoint already
    ended the call (an unknown method answers at once, trailers only) into
    INTERNAL "Internal error from Core", overwriting the endpoint's status in
    about half the tries (grpc/grpc#36066, fix proposed in grpc/grpc#43486).
    Core's own send leaves the status alone: the call's status operation then
    delivers the endpoint's code, details and trailers. Falls back to `write`
    where that internal API is missing (a grpcio with the fix may drop it).
    """
    cython_call = getattr(call, "_cython_call", None)
    send = getattr(cython_call, "send_serialized_message", None)
    return send if send is not None else call.write


async def _relay_responses(
    context: Context, call: grpc.aio.StreamStreamCall[Any, Any],
    counts: _Counts, budget: InFlightBytes,
) -> int:  # fmt: skip
    """Endpoint → client: headers, every response message, trailers and status.

    Raises the endpoint's AioRpcError when the call fails, for the caller to relay.
    """
    initial = await call.initial_metadata()
    if initial:
        await context.send_initial_metadata(initial)
    counts.headers_sent = True
    while (message := await call.read()) is not grpc.aio.EOF:
        assert isinstance(message, bytes)
        counts.sent += len(message)
        if not budget.try_take(len(message)):
            counts.refusal = budget.refusal(len(message))
            raise _OverBudget(counts.refusal)
        try:
            await context.write(message)
        finally:
            budget.give_back(len(message))
    code = await call.code()
    trailing = await call.trailing_metadata()
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
    if code is not grpc.StatusCode.OK:
        context.set_code(code)
        context.set_details(await call.details())
    return CODE_INDEX[code]


async def _relay_error(
    context: Context,
    err: grpc.aio.AioRpcError,
    *,
    headers_sent: bool = False,
) -> None:
    """Ends the client's call with the endpoint's error, headers and trailers intact."""
    initial = err.initial_metadata()
    if initial and not headers_sent:
        await context.send_initial_metadata(initial)
    await context.abort(err.code(), err.details() or "", tuple(err.trailing_metadata() or ()))


def _cancelled_by_drain(ep: Endpoint) -> bool:
    """True when the upstream call was cancelled by a drain timeout, not by our client."""
    task = asyncio.current_task()
    return ep.drain_timed_out and task is not None and not task.cancelling()


async def _abort_drained(context: Context, ep: Endpoint) -> None:
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        f"ballast: endpoint {ep.id} was drained and its drain timeout elapsed; retry the call",
    )
