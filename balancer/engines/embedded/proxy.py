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
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio

from balancer.cluster import Cluster
from balancer.config import Route
from balancer.endpoint import Endpoint
from balancer.engines.embedded.feed import RequestFeed
from balancer.limits import InFlightBytes
from balancer.retries import Failure, Retrier, RetryBudget, RetryCounts, Verdict
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
        # A route with its own retry policy has its own budget; its counts go to its cluster.
        self._retry = [(r.path_prefix, r.retry) for r in routes if r.retry is not None]
        self._budgets: dict[str, RetryBudget] = {}
        if default is None and len(clusters) == 1:
            default = next(iter(clusters))
        self._default = clusters[default] if default is not None else None

    def cluster_for(self, method: str) -> Cluster | None:
        for prefix, cluster in self._routes:
            if method.startswith(prefix):
                return cluster
        return self._default

    def retrier_for(self, method: str, cluster: Cluster, rng: random.Random) -> Retrier:
        """The retry policy of `method`: its route's when the route has one, else the cluster's."""
        for prefix, policy in self._retry:
            if method.startswith(prefix):
                budget = self._budgets.get(prefix)
                if budget is None:
                    budget = self._budgets[prefix] = RetryBudget(policy, cluster.clock)
                return Retrier(cluster.retries, policy, method, rng, budget=budget)
        return Retrier(cluster.retries, cluster.retries.policy, method, rng)


class ProxyHandler(grpc.GenericRpcHandler):
    """The generic handler the listener's server asks for every incoming call."""

    def __init__(
        self,
        router: Router,
        *,
        clock: Clock,
        record_stats: bool,
        limits: Limits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._router = router
        self._clock = clock
        self._record_stats = record_stats
        self.limits = limits or Limits()
        self._rng = rng or random.Random()
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
        retrier = self._router.retrier_for(method, cluster, self._rng)
        call = _Call(cluster, method, self._clock, self._record_stats, self.limits, retrier)
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
    """Proxies calls to one method of one cluster, retrying as its `Retrier` allows."""

    def __init__(
        self,
        cluster: Cluster,
        method: str,
        clock: Clock,
        record_stats: bool,
        limits: Limits,
        retrier: Retrier,
    ) -> None:
        self._cluster = cluster
        self._method = method
        self._clock = clock
        self._record_stats = record_stats
        self._limits = limits
        self._retrier = retrier

    async def _pick(self, context: Context, last: Endpoint | None = None) -> Endpoint:
        """The endpoint for this call (for a retry, not `last` again while another can take it);
        ends the call with UNAVAILABLE and the reason if none."""
        ep = self._cluster.pick() if last is None else self._cluster.pick_other(last)
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
        """Tries endpoints until one answers or no retry is allowed; the request stays held."""
        self._retrier.started()
        tries = _Tries(self._retrier, held=len(request) <= self._retrier.policy.buffer_bytes)
        ep = await self._pick(context)
        while (response := await self._unary_once(ep, request, context, held, tries)) is None:
            await asyncio.sleep(tries.delay_s)
            ep = await self._pick(context, ep)
        tries.succeeded()
        return response

    async def _unary_once(
        self, ep: Endpoint, request: bytes, context: Context, held: _Held, tries: _Tries
    ) -> bytes | None:
        """One try: the response, or None when it failed and is to be retried (nothing of it
        went back to the client)."""
        assert ep.channel is not None
        multicallable = ep.unary_callables.get(self._method)
        if multicallable is None:
            multicallable = ep.channel.unary_unary(self._method)
            if len(ep.unary_callables) < _MAX_CACHED_METHODS:
                ep.unary_callables[self._method] = multicallable
        start = self._clock()
        call = multicallable(
            request, metadata=context.invocation_metadata(), timeout=tries.timeout_s(context)
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
            if tries.again(ep, err, got_headers=bool(err.initial_metadata()), context=context):
                return None
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
        """Tries endpoints until one call is relayed or no retry is allowed."""
        self._retrier.started()
        policy = self._retrier.policy
        retryable = self._retrier.enabled
        feed = RequestFeed(context, self._limits.budget, policy.buffer_bytes, retryable=retryable)
        if not retryable:
            feed.commit()  # nothing to replay: hold no message longer than its send
        tries = _Tries(self._retrier, held=True)
        ep = await self._pick(context)
        try:
            while (code := await self._stream_once(ep, context, feed, tries)) is None:
                await asyncio.sleep(tries.delay_s)
                ep = await self._pick(context, ep)
            if code == _OK:
                tries.succeeded()
        finally:
            feed.close()

    async def _stream_once(
        self, ep: Endpoint, context: Context, feed: RequestFeed, tries: _Tries
    ) -> int | None:
        """One try: its status code once relayed, or None when it failed before anything
        went back to the client and is to be retried."""
        assert ep.channel is not None
        start = self._clock()
        call: grpc.aio.StreamStreamCall[bytes, bytes] = ep.channel.stream_stream(self._method)(
            metadata=context.invocation_metadata(), timeout=tries.timeout_s(context)
        )
        ep.calls.add(call)
        counts = _Counts()
        budget = self._limits.budget
        pump = asyncio.get_running_loop().create_task(feed.pump(call, counts, _raw_sender(call)))
        code = _CANCELLED
        try:
            code = await _relay_responses(context, call, counts, budget, feed.commit)
            return code
        except grpc.aio.AioRpcError as err:
            if counts.refusal is not None:  # the pump cancelled the call: a request over budget
                raise _OverBudget(counts.refusal) from None
            code = CODE_INDEX[err.code()]
            tries.held = feed.held
            if not counts.committed and tries.again(ep, err, counts.got_headers, context):
                pump.cancel()
                await asyncio.wait([pump])  # one pump at a time reads the client's messages
                return None
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
        raise AssertionError("unreachable: every path returns or raises")

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


class _Tries:
    """One client call's tries: which one this is, its timeout, and whether to try again."""

    __slots__ = ("_per_try", "_retrier", "attempt", "delay_s", "failed", "held")

    def __init__(self, retrier: Retrier, *, held: bool) -> None:
        self._retrier = retrier
        self.attempt = 1
        self.held = held  # every request message is still held for a replay
        self.delay_s = 0.0  # the backoff before the next try
        self.failed: list[RetryCounts] = []  # the endpoints whose failures were retried
        self._per_try = False

    def timeout_s(self, context: Context) -> float | None:
        """This try's timeout: the per-try timeout inside what is left of the caller's."""
        timeout, self._per_try = self._retrier.try_timeout_s(context.time_remaining())
        return timeout

    def again(
        self, ep: Endpoint, err: grpc.aio.AioRpcError, got_headers: bool, context: Context
    ) -> bool:
        """True when the failed try on `ep` is to be retried (counted); sets `delay_s`."""
        code = err.code()
        failure = Failure(
            code, err.details() or "", got_headers, self.held,
            per_try_timeout=self._per_try and code is grpc.StatusCode.DEADLINE_EXCEEDED,
        )  # fmt: skip
        verdict, delay_s = self._retrier.decide(
            failure, self.attempt, context.time_remaining(), ep.retries
        )
        if verdict is not Verdict.RETRY:
            return False
        self.attempt += 1
        self.delay_s = delay_s
        self.failed.append(ep.retries)
        return True

    def succeeded(self) -> None:
        if self.failed:
            self._retrier.succeeded(self.failed)


class _Counts:
    __slots__ = ("committed", "got_headers", "headers_sent", "received", "refusal", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.headers_sent = False
        # The endpoint sent response headers; something of its answer went back to the client.
        self.got_headers = False
        self.committed = False
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
    counts: _Counts, budget: InFlightBytes, commit: Callable[[], None],
) -> int:  # fmt: skip
    """Endpoint → client: headers, every response message, trailers and status.

    `commit` is called before the first thing goes back to the client: from then on
    the call cannot be retried. Raises the endpoint's AioRpcError when the call
    fails, for the caller to relay (or retry).
    """
    initial = await call.initial_metadata()
    counts.got_headers = bool(initial)
    if initial:
        _commit(counts, commit)
        await context.send_initial_metadata(initial)
    counts.headers_sent = True
    while (message := await call.read()) is not grpc.aio.EOF:
        assert isinstance(message, bytes)
        _commit(counts, commit)
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


def _commit(counts: _Counts, commit: Callable[[], None]) -> None:
    if not counts.committed:
        counts.committed = True
        commit()


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
