"""Engines that carry calls for the cluster state: see `base.py` for the seam."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from balancer.cluster import Clock, Cluster
from balancer.config import BalancerConfig
from balancer.engines.base import Engine, EngineFigures, EngineUnavailable

__all__ = ["Engine", "EngineFigures", "EngineUnavailable", "check_engine", "make_engine"]


def make_engine(
    config: BalancerConfig, clusters: Mapping[str, Cluster], *, clock: Clock = time.monotonic
) -> Engine:
    """The engine `config.engine` names, over `clusters`. Raises EngineUnavailable when it
    cannot run here (the HAProxy binary is missing)."""
    if config.engine == "haproxy":
        # Imported here: the embedded default needs none of it.
        from balancer.engines.haproxy import HaproxyEngine

        return HaproxyEngine(config, clusters, clock=clock)
    from balancer.engines.embedded import EmbeddedEngine

    return EmbeddedEngine(config, clusters, clock=clock)


def check_engine(config: BalancerConfig) -> None:
    """What `make_engine` would refuse, without building anything (for `--check`)."""
    if config.engine == "haproxy":
        from balancer.engines.haproxy.config import unenforced_limits
        from balancer.engines.haproxy.process import find_binary

        find_binary(config.haproxy.binary)
        if warning := unenforced_limits(config):
            logging.getLogger("balancer.engines.haproxy").warning("%s", warning)
