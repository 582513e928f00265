"""The embedded engine: Ballast's own grpc.aio proxy, in the balancer process."""

from __future__ import annotations

from balancer.engines.embedded.engine import EmbeddedEngine

__all__ = ["EmbeddedEngine"]
