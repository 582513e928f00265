"""`python -m dashboard`: the dashboard process — the web app on uvicorn, with the collector
embedded when ``BALLAST_BALANCERS`` names the balancers to watch (or, on Kubernetes,
``BALLAST_BALANCERS_SERVICE`` their admin Service), on the platform of ``BALLAST_PLATFORM``.

Configured from the environment (see `dashboard/settings.py`). Without an embedded
collector the pages show the frames that a `manage.py runcollector` process sends
through the (Redis) channel layer, and keep them for the pages' first paint.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from dashboard.env import one_line
from dashboard.preflight import Unreachable, channel_layer_redis_url, check_redis
from dashboard.server import Background, DashboardServer, ListenError, migrate, setup_django

log = logging.getLogger("dashboard")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free port)")
    parser.add_argument(
        "--migrate", action="store_true", help="apply database migrations before serving"
    )
    parser.add_argument(
        "--no-collector",
        action="store_true",
        help="do not embed the collector (one runs as `manage.py runcollector`)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    from django.conf import settings

    from dashboard.app.collecting import (
        FrameFollower,
        collects_here,
        control_plane_from_settings,
    )

    redis_url = channel_layer_redis_url()
    if redis_url:
        await check_redis(redis_url)
    background: Background
    if args.no_collector or not collects_here():
        if not args.no_collector:
            log.warning(
                "BALLAST_BALANCERS is not set, so no collector runs here: set it"
                " (id=host:port,...; on Kubernetes BALLAST_BALANCERS_SERVICE) or run"
                " `manage.py runcollector` beside this process"
            )
        background = FrameFollower(settings.BALLAST_SERVICES)
    else:
        background = control_plane_from_settings()
    server = DashboardServer(host=args.host, port=args.port, background=background)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def serving() -> None:
        print(f"dashboard: {server.url}", flush=True)
        await stop.wait()

    await server.serve(serving)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from django.core.exceptions import ImproperlyConfigured

    try:
        setup_django()
        if args.migrate:
            migrate()
        asyncio.run(run(args))
    except (ImproperlyConfigured, ListenError, Unreachable) as err:
        print(f"dashboard: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, ImproperlyConfigured) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
