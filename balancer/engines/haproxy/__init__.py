"""The HAProxy engine: a supervised HAProxy child driven over its runtime API."""

from __future__ import annotations

from balancer.engines.haproxy.engine import HaproxyEngine

__all__ = ["HaproxyEngine"]
