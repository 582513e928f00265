"""Bearer token authentication for the admin API, as a server interceptor."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeAlias

import grpc
import grpc.aio

from balancer.config import DEFAULT_TOKEN_ENV

# Strings: grpc's RpcMethodHandler is generic only in its type stubs.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

# Probes (a Kubernetes grpc liveness check, grpc_health_probe) carry no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_SCHEME = "bearer "
_HOW = (
    "send the metadata 'authorization: Bearer <token>' with the balancer's admin token"
    f" (admin.token in its config, or ${DEFAULT_TOKEN_ENV} / the variable named by"
    " admin.token_env)"
)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Lets a call through when its `authorization` metadata is `Bearer <token>`.

    Other calls end with UNAUTHENTICATED and a message saying how to pass the
    token; methods under `open_prefixes` (health checks) need none.
    """

    def __init__(self, token: str, *, open_prefixes: tuple[str, ...] = OPEN_PREFIXES) -> None:
        if not token:
            raise ValueError("the admin API needs a non-empty token")
        self._token = token.encode()
        self._open_prefixes = open_prefixes

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(self._open_prefixes):
            return handler
        problem = self.problem(handler_call_details.invocation_metadata)
        if problem is None:
            return handler
        return _rejecting(handler, f"ballast admin: {problem}; {_HOW}")

    def problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why `metadata` does not authenticate, or None when it does."""
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            return "no token"
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        if not value.lower().startswith(_SCHEME):
            return "the authorization metadata is not a Bearer token"
        given = value[len(_SCHEME) :].strip().encode()
        if not hmac.compare_digest(given, self._token):
            return "wrong token"
        return None


def _rejecting(handler: Handler | None, message: str) -> Handler:
    """A handler of the same kind as `handler` that ends the call with UNAUTHENTICATED.

    It takes requests as raw bytes: nothing from an unauthenticated caller is parsed.
    """

    async def reject(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        raise AssertionError("abort raises")

    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(reject)
    if not handler.request_streaming:
        return grpc.unary_stream_rpc_method_handler(reject)
    if not handler.response_streaming:
        return grpc.stream_unary_rpc_method_handler(reject)
    return grpc.stream_stream_rpc_method_handler(reject)
