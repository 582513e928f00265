"""The HAProxy engine (being built: refuses to start for now)."""

from __future__ import annotations

from collections.abc import Mapping

from balancer.cluster import Cluster
from balancer.config import BalancerConfig
from balancer.engines.base import EngineUnavailable
from balancer.engines.haproxy.process import find_binary


class HaproxyEngine:
    name = "haproxy"

    def __init__(self, config: BalancerConfig, clusters: Mapping[str, Cluster]) -> None:
        find_binary(config.haproxy.binary)
        raise EngineUnavailable("balancer.engine = 'haproxy' is not implemented yet")
