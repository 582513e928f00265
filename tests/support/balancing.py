"""Build and run an in-process Balancer in front of test backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from balancer.config import BalancerConfig, config_from_dict
from tests.support.backend import Backend

ADMIN_TOKEN = "test-admin-token-0123456789"


def config(
    backends: Sequence[Backend],
    *,
    cluster: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
    xds: dict[str, Any] | None = None,
    **balancer: Any,
) -> BalancerConfig:
    """A one-cluster (`echo`) config in front of `backends`, named by their pod names."""
    data: dict[str, Any] = {
        "balancer": {"id": "test", **balancer},
        "listeners": [{"address": "127.0.0.1:0"}],
        "clusters": [
            {
                "name": "echo",
                "discovery": {
                    "endpoints": [{"address": b.address, "name": b.name} for b in backends]
                },
                **(cluster or {}),
            }
        ],
    }
    if admin is not None:
        data["admin"] = {"address": "127.0.0.1:0", "token": ADMIN_TOKEN, **admin}
    if xds is not None:
        data["xds"] = xds
    return config_from_dict(data, environ={})
