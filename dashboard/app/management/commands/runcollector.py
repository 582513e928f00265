"""``python manage.py runcollector``: the collector alone, publishing to the channel layer.

For a dashboard of several processes: one collector process sends every service's
frames through the shared (Redis) channel layer to whichever process holds a browser's
websocket. It has no platform object of its own, so its frames carry no pod facts.
Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.app.live import publish_frame
from dashboard.collector.frames import ServiceFrame
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget


class Command(BaseCommand):
    help = "Watch the balancers in BALLAST_BALANCERS and send a frame per service every interval."

    def handle(self, *args: Any, **options: Any) -> None:
        self.configure_logging(options["verbosity"])
        config = self.collector_config()
        self.stdout.write(
            f"collector: {len(config.replicas)} balancer(s), {len(config.services)} service(s),"
            f" a frame every {config.interval_ms} ms"
        )
        asyncio.run(self.run(config))

    def configure_logging(self, verbosity: int) -> None:
        level = logging.WARNING if verbosity == 0 else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def collector_config(self) -> CollectorConfig:
        """The collector's config from the settings; CommandError when they do not fit."""
        try:
            return CollectorConfig(
                replicas=self.replica_targets(),
                services=self.service_targets(),
                interval_s=settings.BALLAST_COLLECTOR_INTERVAL_MS / 1000,
            )
        except ValueError as err:
            raise CommandError(str(err)) from None

    def replica_targets(self) -> list[ReplicaTarget]:
        balancers: dict[str, str] = settings.BALLAST_BALANCERS
        if not balancers:
            raise CommandError("BALLAST_BALANCERS is not set: name the balancers' admin APIs")
        token = settings.BALLAST_ADMIN_TOKEN
        if not token:
            raise CommandError("BALLAST_ADMIN_TOKEN is not set: the admin API needs it")
        return [ReplicaTarget(rid, address, token) for rid, address in balancers.items()]

    def service_targets(self) -> dict[str, ServiceTarget]:
        """Each service is the balancer cluster and the platform deployment of its name."""
        return {name: ServiceTarget(name, name) for name in settings.BALLAST_SERVICES}

    async def publish(self, frame: ServiceFrame) -> None:
        await publish_frame(get_channel_layer(), frame)

    async def run(self, config: CollectorConfig) -> None:
        await Collector(config, self.publish).run(self.shutdown_signal)

    async def shutdown_signal(self) -> None:
        """Returns on the first SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
