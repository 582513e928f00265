"""``python manage.py runcollector``: the collector alone, publishing to the channel layer.

For a dashboard of several processes: one collector process sends every service's
frames through the shared (Redis) channel layer to whichever process holds a browser's
websocket. With ``BALLAST_PLATFORM`` set (``kubernetes``) its frames carry pod facts and it finds
the replicas from ``BALLAST_BALANCERS_SERVICE``; without, its frames carry no pod facts.
Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from balancer.lifecycle import serve_until
from dashboard.app.collecting import ControlPlane, control_plane_from_settings
from dashboard.collector.runner import CollectorConfig
from dashboard.preflight import Unreachable, channel_layer_redis_url, check_redis


class Command(BaseCommand):
    help = (
        "Watch the balancers in BALLAST_BALANCERS (or found from BALLAST_BALANCERS_SERVICE)"
        " and send a frame per service every interval."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.configure_logging(options["verbosity"])
        plane = self.control_plane()
        config = plane.collector.config
        balancers = f"{len(config.replicas)} balancer(s)"
        if plane.follower is not None:
            balancers = f"the balancers of {'/'.join(settings.BALLAST_BALANCERS_SERVICE or ())}"
        self.stdout.write(
            f"collector: {balancers}, {len(config.services)} service(s),"
            f" a frame every {config.interval_ms} ms"
        )
        asyncio.run(self.run(plane))

    def configure_logging(self, verbosity: int) -> None:
        level = logging.WARNING if verbosity == 0 else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def collector_config(self) -> CollectorConfig:
        """The collector's config from the settings; CommandError when they do not fit."""
        return self.control_plane().collector.config

    def control_plane(self) -> ControlPlane:
        """The control plane from the settings; CommandError when they do not fit."""
        try:
            return control_plane_from_settings()
        except ImproperlyConfigured as err:
            raise CommandError(str(err)) from None

    async def run(self, plane: ControlPlane) -> None:
        redis_url = channel_layer_redis_url()
        if redis_url:  # frames would go nowhere: say so once, not a traceback per tick
            try:
                await check_redis(redis_url)
            except Unreachable as err:
                raise CommandError(str(err)) from None
        await serve_until(plane, self.shutdown_signal)

    async def shutdown_signal(self) -> None:
        """Returns on the first SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
